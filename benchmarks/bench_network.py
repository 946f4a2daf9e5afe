"""A network of node processes on this machine (issue 8). Prints figures; asserts nothing.

Per-round wall time of ``derelayl devnet`` at 4, 8, 16 and 32 nodes on anvil, measured by the
devnet from its own replay of the chain, median over the rounds after the first:

- with ``--local-epochs 0`` (a trainer passes its parent on): the protocol alone — the four
  phase transactions, each message posted to the phase's miner and its three volunteers,
  parents fetched by trainers, committed models fetched by testers, the scoring, the chain replays;
- with one local epoch (the reference): the same plus real training.

The difference is the training's share. The last column: median seconds between one block and
the next, by the block that ends the gap (protocol only). Run: python benchmarks/bench_network.py
[--nodes 4,8,16,32] [--rounds 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from derelayl.node.devnet import DevnetConfig, run_devnet


def measure(nodes: int, rounds: int, epochs: int, port: int) -> tuple[float, float, int, str]:
    with tempfile.TemporaryDirectory() as tmp:
        config = DevnetConfig(nodes=nodes, rounds=rounds, base_port=port, local_epochs=epochs)
        summary = run_devnet(config, Path(tmp) / "devnet")
    seconds = [t for r, t in summary["round_seconds"].items() if int(r) > 1]
    phases = " ".join(
        f"{kind} {statistics.median(times[1:]):.2f}" for kind, times in summary["phase_seconds"].items() if times[1:]
    )
    return statistics.median(seconds), max(seconds), len(summary["takeovers"]), phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="4,8,16,32")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    print("nodes  protocol only (median, max s/round)   with 1 epoch of training   takeovers   protocol-only phases")
    port = 9000
    for n in [int(x) for x in args.nodes.split(",")]:
        bare = measure(n, args.rounds, 0, port)
        port += n + 5
        full = measure(n, args.rounds, 1, port)
        port += n + 5
        print(
            f"{n:5d}  {bare[0]:8.2f} {bare[1]:6.2f}                    {full[0]:8.2f} {full[1]:6.2f}"
            f"                {bare[2]}/{full[2]}       {bare[3]}",
            flush=True,
        )


if __name__ == "__main__":
    main()
