"""Relay-learning benchmarks (issue 4). Prints figures and ratios; asserts nothing.

1. The reference experiment (``experiments/digits_dirichlet.toml``): wall seconds of every
   method, as a ratio to FedAvg's 30 rounds measured in the same process, and the total
   against the issue's 90 s target.
2. ``derelayl run --task digits`` against ``--task latent`` on the same network size, same
   process: what real training, testing and the model store cost on top of the signed chain.

3. ``--sweep``: the reference comparison over 3 split seeds x 3 training/protocol seeds
   (FedAvg 30 rounds vs DeRelayL faithful and 5-epoch at FedAvg's bytes), to see whether
   the single reference run is typical.

Run: python benchmarks/bench_experiment.py [--config experiments/digits_dirichlet.toml] [--rounds 10] [--sweep]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from derelayl.experiments.config import load_config
from derelayl.experiments.runner import run_experiment
from derelayl.runtime.local import RunConfig, run_network
from derelayl.runtime.tasks import make_task


def bench_experiment(config: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        results = run_experiment(load_config(config), Path(tmp))
        total = time.perf_counter() - start
    base = results["summary"]["fedavg"]["wall_seconds"]
    print(f"reference experiment: {total:.1f} s wall in all (target <= 90 s: {total / 90:.2f} of it)")
    print(f"{'method':24s} {'rounds':>6s} {'seconds':>8s} {'x fedavg':>9s} {'accuracy':>9s}")
    for name, row in results["summary"].items():
        print(
            f"{name:24s} {row['rounds']:6d} {row['wall_seconds']:8.2f} {row['wall_seconds'] / base:9.2f} "
            f"{row['accuracy']:9.3f}"
        )


def bench_run(rounds: int) -> None:
    seconds = {}
    for task in ("latent", "digits"):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            run_network(RunConfig(participants=20, rounds=rounds, seed=42, task=task), Path(tmp), make_task)
            seconds[task] = time.perf_counter() - start
    print(
        f"derelayl run, 20 participants, {rounds} rounds: latent {seconds['latent']:.2f} s, digits "
        f"{seconds['digits']:.2f} s ({seconds['digits'] / seconds['latent']:.1f}x; "
        f"{seconds['digits'] / rounds * 1000:.0f} ms per real round)"
    )


def sweep() -> None:
    from derelayl.baselines import run_centralized, run_fedavg
    from derelayl.experiments.relay import run_derelayl
    from derelayl.learning.setup import build_setup
    from derelayl.learning.torch_models import TrainConfig
    from derelayl.protocol import preset

    print("split seed x seed: FedAvg 30 rounds | DeRelayL at FedAvg's bytes | 5 epochs | centralized 30 epochs")
    for split_seed in (0, 1, 2):
        setup = build_setup(split_seed=split_seed, partition_options={"alpha": 0.5})

        central = run_centralized(setup, 30, 0).final.accuracy
        for seed in (0, 1, 2):
            fed = run_fedavg(setup, 30, seed)
            budget = fed.final.bytes
            relay = run_derelayl(setup, preset("reference"), seed, byte_budget=budget).at_bytes(budget)
            five = run_derelayl(
                setup, preset("reference"), seed, byte_budget=budget, train_config=TrainConfig(local_epochs=5)
            ).at_bytes(budget)
            print(
                f"{split_seed} x {seed}: {fed.final.accuracy:.3f} | {relay.accuracy:.3f} | {five.accuracy:.3f} | "
                f"{central:.3f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--config", type=Path, default=Path(__file__).parent.parent / "experiments" / "digits_dirichlet.toml"
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sweep", action="store_true", help="Also run the 3 x 3 seed sweep (about a minute).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.sweep:
        sweep()
    bench_experiment(args.config)
    bench_run(args.rounds)


if __name__ == "__main__":
    main()
