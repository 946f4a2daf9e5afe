"""SCAFFOLD (Karimireddy et al. 2020), the federated baseline built for client drift under
non-IID data: server and clients keep control variates that correct each local gradient.

Option II of the paper: client ``i`` trains from the global model ``x`` with every gradient
corrected by ``c - c_i``, then sets ``c_i <- c_i - c + (x - y_i) / (K * lr)`` (``K`` local
steps); the server adds the mean model change to ``x`` (global step 1) and ``|S| / N`` times
the mean control change to ``c``. Each sampled client downloads ``x`` and ``c`` and uploads
both changes: 4 model-sized transfers per client per round, counted as such.
"""

from __future__ import annotations

import torch

from derelayl.baselines.curve import Budget, Curve, Point
from derelayl.baselines.federated import sample_clients
from derelayl.learning.seeds import derive_seed
from derelayl.learning.serialization import Weights, param_bytes
from derelayl.learning.setup import LearningSetup

__all__ = ["run_scaffold"]


def run_scaffold(setup: LearningSetup, seed: int, stop: Budget, *, fraction: float = 1.0) -> Curve:
    shards, trainer, evaluator = setup.shards(), setup.trainer(), setup.evaluator()
    cfg = setup.train_config
    size = param_bytes(setup.init)
    names = trainer.parameter_names()
    zeros = {k: torch.zeros_like(setup.init[k]) for k in names}
    server_c = dict(zeros)
    client_c = [dict(zeros) for _ in shards]
    x: Weights = setup.init
    curve = Curve("scaffold", info={"model_bytes": size, "fraction": fraction})
    curve.add(Point(0, setup.test_accuracy(evaluator, x), 0, 0, 0))
    moved = done = samples = 0
    r = 0
    while stop.more(curve.final):
        r += 1
        chosen = sample_clients(len(shards), fraction, seed, r)
        dx = {k: torch.zeros_like(v) for k, v in x.items()}
        dc = dict(zeros)
        for p in chosen:
            xs, ys = shards[p].read(p)
            if not len(ys):  # nothing to train on: uploads no change
                continue
            correction = {k: server_c[k] - client_c[p][k] for k in names}
            y = trainer.train(x, xs, ys, seed=derive_seed(seed, "scaffold", r, p), correction=correction)
            steps = trainer.steps(len(ys))
            new_c = {k: client_c[p][k] - server_c[k] + (x[k] - y[k]) / (steps * cfg.lr) for k in names}
            for k in x:
                dx[k] = dx[k] + (y[k] - x[k]) / len(chosen)
            for k in names:
                dc[k] = dc[k] + (new_c[k] - client_c[p][k]) / len(chosen)
            client_c[p] = new_c
            samples += cfg.local_epochs * len(ys)
        x = {k: x[k] + dx[k] for k in x}
        share = len(chosen) / len(shards)
        server_c = {k: server_c[k] + share * dc[k] for k in names}
        moved += 4 * len(chosen) * size
        done += cfg.local_epochs * len(chosen)
        curve.add(Point(r, setup.test_accuracy(evaluator, x), moved, done, samples))
    return curve
