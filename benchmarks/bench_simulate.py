"""Benchmark of ``derelayl simulate``: every figure is a ratio against a baseline measured in
this same process (or a child of it), so results compare across machines.

    python benchmarks/bench_simulate.py            # ~1 min: reference, flatness, naive walk, scaling
    python benchmarks/bench_simulate.py --full     # + 100,000 participants x 1,000 rounds (~2 min)

Measures
1. reference preset 256 x 5000 (no figures): wall seconds, and the ratio to the authors'
   744 s on this machine (the issue's number, not re-measured here);
2. median per-round time in rounds 100-1000 vs rounds 3900-4800: ~1 means the cost per round
   does not grow with the round number;
3. one round's lineage payout by the naive ancestor walk at the depth reached (what a
   rounds^2 simulator does every round) vs our *whole* round;
4. per-round time and peak memory at 12.5k, 25k, 50k, 100k participants: ratios to the
   smallest size (linear = 2, 4, 8);
5. (--full) 100,000 x 1,000: wall seconds and peak RSS, in a fresh child process.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

from derelayl.protocol.genesis import initialize_state
from derelayl.sim.config import resolve_config
from derelayl.sim.engine import run_one

AUTHORS_SECONDS = 744.0


def timed_run(participants: int, rounds: int) -> tuple[float, list[tuple[int, float]], object]:
    config = resolve_config(flag_values={"participants": participants, "rounds": rounds, "figures": False})
    marks: list[tuple[int, float]] = []
    start = time.perf_counter()
    result = run_one(config, "lineage", 42, on_round=lambda r: marks.append((r, time.perf_counter() - start)))
    return time.perf_counter() - start, marks, result


def per_round(marks: list[tuple[int, float]], lo: int, hi: int) -> float:
    """Median seconds per round over the progress intervals between rounds lo and hi (the
    median shrugs off the other engineers' load spikes)."""
    rounds = np.array([r for r, _ in marks], dtype=np.float64)
    times = np.array([t for _, t in marks])
    rates = np.diff(times) / np.diff(rounds)
    inside = (rounds[1:] > lo) & (rounds[1:] <= hi)
    return float(np.median(rates[inside]))


def naive_walk_seconds(participants: int, rounds: int) -> tuple[float, float, int]:
    """Time the naive lineage payout of the last round: for every selected model walk every
    ancestor to genesis (as a rounds^2 simulator does), vs our mean whole-round time."""
    wall, _, _ = timed_run(participants, rounds)
    # Rebuild the model tree of the same run with the protocol core, keeping parents.
    from derelayl.agents.latent import LatentPopulation
    from derelayl.learning.latent import LatentTrainer
    from derelayl.protocol import preset, process_block
    from derelayl.runtime.local import run_seed
    from derelayl.sim.engine import sim_keys

    state = initialize_state(preset("reference"), run_seed(42), sim_keys(42, 0, participants))
    net = LatentPopulation(LatentTrainer(seed=42))
    parent: dict[int, int] = {}
    owner: dict[int, int] = {}
    last: list[int] = []
    for _ in range(rounds):
        receipts = [process_block(state, net.next_block(state)) for _ in range(4)]
        commit, settle = receipts[1], receipts[3]
        for m, p in zip(commit.model_id, commit.parent_model, strict=True):
            parent[int(m)] = int(p)
        last = [int(m) for m in settle.selected_model]
        for m, o in zip(settle.selected_model, settle.selected_owner, strict=True):
            owner[int(m)] = int(o)
    payout = np.zeros(participants, dtype=np.int64)
    start = time.perf_counter()
    depth = 0
    for m in last:
        d = 0
        while m in parent:
            payout[owner.get(m, 0)] += 1
            m = parent[m]
            d += 1
        depth = max(depth, d)
    naive = time.perf_counter() - start
    return naive, wall / rounds, depth


def plain_core_loop(participants: int, rounds: int) -> float:
    """The protocol core and the same participants in a bare loop: no measures, no traces."""
    from derelayl.agents.latent import LatentPopulation
    from derelayl.learning.latent import LatentTrainer
    from derelayl.protocol import preset, process_block
    from derelayl.runtime.local import run_seed
    from derelayl.sim.engine import sim_keys

    state = initialize_state(preset("reference"), run_seed(42), sim_keys(42, 0, participants))
    net = LatentPopulation(LatentTrainer(seed=42))
    start = time.perf_counter()
    while state.round < rounds:
        process_block(state, net.next_block(state))
    return time.perf_counter() - start


def scaling(sizes: list[int], rounds: int, mem_rounds: int) -> list[dict[str, float]]:
    """Whole-run seconds per round (measures included) and, in a separate shorter run,
    the peak of memory traced by tracemalloc (numpy reports its buffers to it)."""
    rows = []
    for n in sizes:
        wall, _, _ = timed_run(n, rounds)
        tracemalloc.start()
        timed_run(n, mem_rounds)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append({"participants": n, "s_per_round": wall / rounds, "peak_mb": peak / 2**20})
    return rows


def full_child() -> None:
    """Run inside a fresh process: 100k x 1000, print wall and peak RSS as JSON."""
    start = time.perf_counter()
    config = resolve_config(flag_values={"participants": 100_000, "rounds": 1000, "figures": False})
    run_one(config, "lineage", 42)
    wall = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"wall_seconds": wall, "peak_rss_gb": rss}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="also run 100k x 1000 in a child process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        full_child()
        return

    # best of two, interleaved: the machine is shared, the minimum is the least disturbed
    (wall, marks, _), bare = timed_run(256, 5000), plain_core_loop(256, 5000)
    again, bare2 = timed_run(256, 5000), plain_core_loop(256, 5000)
    if again[0] < wall:
        wall, marks = again[0], again[1]
    bare = min(bare, bare2)
    print(
        f"[1] reference 256 x 5000 (best of 2): {wall:.2f} s wall = "
        f"{AUTHORS_SECONDS / wall:.0f}x the authors' {AUTHORS_SECONDS:.0f} s; "
        f"bare protocol-core loop {bare:.2f} s in this run, so simulate costs x{wall / bare:.2f} of the bare core"
    )
    # windows end before round 5000: the last round also measures the last chunk
    early, late = per_round(marks, 100, 1000), per_round(marks, 3900, 4800)
    print(
        f"[2] median per round: {early * 1e3:.3f} ms in rounds 100-1000, {late * 1e3:.3f} ms in rounds 3900-4800; "
        f"ratio late/early = {late / early:.2f} (1 = independent of round number)"
    )

    naive, ours, depth = naive_walk_seconds(256, 2000)
    print(
        f"[3] at round 2000 (lineage depth {depth}): naive ancestor walk for one round's payouts "
        f"{naive * 1e3:.2f} ms vs our whole round {ours * 1e3:.3f} ms: ratio {naive / ours:.1f}x "
        f"(grows linearly with depth; x{5000 / 2000:.1f} more by round 5000)"
    )

    rows = scaling([12_500, 25_000, 50_000, 100_000], 80, 20)
    base = rows[0]
    for row in rows:
        print(
            f"[4] {row['participants']:>7} participants: {row['s_per_round'] * 1e3:7.1f} ms/round over 80 rounds "
            f"(x{row['s_per_round'] / base['s_per_round']:.2f}), peak traced {row['peak_mb']:7.1f} MB in 20 rounds "
            f"(x{row['peak_mb'] / base['peak_mb']:.2f}); size x{row['participants'] / base['participants']:.0f}"
        )

    if args.full:
        out = subprocess.run([sys.executable, __file__, "--child"], capture_output=True, text=True, check=True)
        full = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"[5] 100,000 x 1,000: {full['wall_seconds']:.1f} s wall "
            f"(target 120: {full['wall_seconds'] / 120:.2f} of it), "
            f"peak RSS {full['peak_rss_gb']:.2f} GB (target 4: {full['peak_rss_gb'] / 4:.2f} of it)"
        )


if __name__ == "__main__":
    main()
