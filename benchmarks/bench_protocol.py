"""Protocol core and ledger benchmarks (issue 2). Prints figures and ratios; asserts nothing.

1. Per-round cost at round ~100 vs round ~5000 (reference preset, 256 participants): the
   depth-independent lineage accounting against a naive ancestor walk measured in the same
   run (the walk the paper's simulation does).
2. ``verify`` throughput: replaying a signed SQLite chain from genesis (blocks/s, deposits/s).

Run: python benchmarks/bench_protocol.py [--rounds 5000] [--verify-rounds 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from derelayl.agents.latent import LatentPopulation
from derelayl.learning.latent import LatentTrainer
from derelayl.ledger import Chain, SQLiteLedger, derive_keys
from derelayl.protocol import CommitReceipt, SettleReceipt, preset, process_block
from derelayl.protocol.genesis import initialize_state


def _window_times(rounds: int, windows: list[int], naive: bool, width: int = 200) -> dict[int, float]:
    """Median seconds per round over the ``width`` rounds ending at each window round."""
    state = initialize_state(preset("reference"), b"\x2a" * 32, [(i + 1).to_bytes(32, "big") for i in range(256)])
    net = LatentPopulation(LatentTrainer(seed=42))
    parent: dict[int, int] = {0: -1}
    owner: dict[int, int] = {0: 0}
    timed = {r for w in windows for r in range(w - width, w)}
    samples: dict[int, list[float]] = {w: [] for w in windows}
    while state.round < rounds:
        r, t0 = state.round, time.perf_counter()
        for _ in range(4):
            receipt = process_block(state, net.next_block(state))
            if naive and isinstance(receipt, CommitReceipt):
                ids, parents, owners = receipt.model_id.tolist(), receipt.parent_model.tolist(), state.commits.owner
                for m, p, o in zip(ids, parents, owners.tolist(), strict=True):
                    parent[m], owner[m] = p, o
            elif naive and isinstance(receipt, SettleReceipt) and r in timed:  # walk only when timed
                paid = np.zeros(state.n_participants, dtype=np.int64)
                for m in receipt.selected_model.tolist():
                    while m >= 0:  # the naive walk: every ancestor of every selected model
                        paid[owner[m]] += 1
                        m = parent[m]
        for w in windows:
            if w - width <= r < w:
                samples[w].append(time.perf_counter() - t0)
    return {w: float(np.median(v)) for w, v in samples.items()}


def bench_flat(rounds: int) -> None:
    windows = [300, rounds]
    ours = _window_times(rounds, windows, naive=False)
    walk = _window_times(rounds, windows, naive=True)
    print("per-round time, reference preset, 256 participants (median of 200 rounds):")
    print(f"  {'':22s}{'rounds 100-300':>16s}{f'rounds {rounds - 200}-{rounds}':>18s}{'late/early':>12s}")
    for name, t in (("derelayl core", ours), ("core + naive walk", walk)):
        print(f"  {name:22s}{t[300] * 1e3:13.3f} ms{t[rounds] * 1e3:15.3f} ms{t[rounds] / t[300]:11.2f}x")
    print(f"  naive walk / derelayl at round {rounds}: {walk[rounds] / ours[rounds]:.1f}x")


def bench_verify(participants: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chain.sqlite"
        keys = derive_keys(1, participants)
        chain = Chain.create(SQLiteLedger(path), preset("reference"), b"\x01" * 32, [k.public for k in keys], keys[0])
        net = LatentPopulation(LatentTrainer(seed=1))
        signers = dict(enumerate(keys))
        deposits = 0
        t0 = time.perf_counter()
        while chain.state.round < rounds:
            receipt = chain.produce(net.next_block(chain.state), signers)
            deposits += len(getattr(receipt, "pairs", ()))
        produce = time.perf_counter() - t0
        chain.ledger.close()
        t0 = time.perf_counter()
        again = Chain.open(SQLiteLedger(path))
        verify = time.perf_counter() - t0
        blocks = again.height
        print(
            f"signed SQLite chain, {participants} participants x {rounds} rounds"
            f" = {blocks} blocks, {deposits} deposits:"
        )
        print(f"  produce (sign + apply + fsync): {produce:.2f} s = {blocks / produce:.0f} blocks/s")
        print(
            f"  verify (replay from genesis):   {verify:.2f} s = {blocks / verify:.0f} blocks/s, "
            f"{deposits / verify:.0f} deposits/s ({verify / produce:.2f}x the time to produce)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--verify-participants", type=int, default=256)
    parser.add_argument("--verify-rounds", type=int, default=60)
    args = parser.parse_args()
    bench_flat(args.rounds)
    bench_verify(args.verify_participants, args.verify_rounds)


if __name__ == "__main__":
    main()
