"""The Python API in a few lines: your arrays, your nn.Module, your optimizer; the relay and
FedAvg trained on the same split from the same initial weights.

    .venv/bin/python examples/python_api.py            # ~10 s
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

from derelayl.baselines import run_fedavg
from derelayl.experiments.relay import run_derelayl
from derelayl.learning.setup import build_setup
from derelayl.learning.torch_models import TrainConfig
from derelayl.protocol.params import preset


def my_data(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four noisy rings in 2-D, lifted to 8 features: any (samples x features, labels) will do."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = 1.0 + y + rng.normal(0, 0.25, n)
    xy = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return np.concatenate([xy, xy**2, np.sin(xy), rng.normal(0, 1, (n, 2))], axis=1).astype(np.float32), y


def my_model(n_features: int, n_classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_features, 32), nn.GELU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, n_classes))


def my_optimizer(parameters, config):  # type: ignore[no-untyped-def]
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=1e-4)


def main(rounds: int = 30) -> dict[str, float]:
    torch.set_num_threads(1)
    setup = build_setup(
        my_data(),
        participants=20,
        partition="dirichlet",
        partition_options={"alpha": 0.5},
        model=my_model,
        train_config=TrainConfig(lr=0.01, optimizer=my_optimizer),
    )
    relay = run_derelayl(setup, preset("reference"), seed=0, rounds=rounds)
    fedavg = run_fedavg(setup, rounds, seed=0, fraction=0.25)
    out = {"derelayl": relay.final.accuracy, "fedavg (C = 0.25)": fedavg.final.accuracy}
    for name, acc in out.items():
        print(f"{name}: test accuracy {acc:.3f} after {rounds} rounds")
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
