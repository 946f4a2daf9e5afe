"""FedAvg, local-only and gossip learning over the participants' private shards.

Each participant's data is read only inside that participant's own step (``shard.read(p)``).
Bytes count model parameters (float32) sent plus received once per transfer:
FedAvg 2 x (sampled) clients x model per round (download + upload), gossip ``fanout`` models
per participant per round, local-only none. Every method stops by a ``Budget``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from derelayl.agents.adversaries import HONEST, poison
from derelayl.agents.kinds import UNTRAINED
from derelayl.baselines.curve import Budget, Curve, Point
from derelayl.learning.seeds import derive_seed
from derelayl.learning.serialization import Weights, param_bytes
from derelayl.learning.setup import LearningSetup
from derelayl.learning.torch_models import average

__all__ = ["clients_per_round", "run_fedavg", "run_gossip", "run_local_only", "sample_clients", "trimmed_mean"]


def _mean_accuracy(setup: LearningSetup, evaluator: object, models: list[Weights]) -> tuple[float, dict[str, float]]:
    accs = np.array([setup.test_accuracy(evaluator, m) for m in models])  # type: ignore[arg-type]
    return float(accs.mean()), {"min": float(accs.min()), "max": float(accs.max())}


def clients_per_round(fraction: float, n: int) -> int:
    """McMahan et al.'s C: ``max(1, round(C * n))`` clients train each round."""
    return max(1, min(n, round(fraction * n)))


def sample_clients(n: int, fraction: float, seed: int, r: int) -> list[int]:
    """The clients of round ``r``: all of them at ``fraction = 1``, else a seeded sample."""
    m = clients_per_round(fraction, n)
    if m == n:
        return list(range(n))
    rng = np.random.default_rng(derive_seed(seed, "clients", r))
    return sorted(int(p) for p in rng.choice(n, size=m, replace=False))


def run_fedavg(
    setup: LearningSetup,
    rounds: int,
    seed: int,
    *,
    kinds: list[str] | None = None,
    trim: float = 0.0,
    measure: Callable[[Weights], dict[str, float]] | None = None,
    fraction: float = 1.0,
    stop: Budget | None = None,
) -> Curve:
    """FedAvg (McMahan et al. 2017): each round a share ``fraction`` of the participants
    (all of them at 1) trains the global model; sample-weighted average, or with ``trim`` > 0
    the coordinate-wise trimmed mean (Yin et al. 2018: drop the ``trim`` share of largest and
    of smallest values of each parameter, average the rest, unweighted), the standard robust
    aggregation. FedProx (Li et al. 2020) is this with ``train_config.prox_mu > 0``.
    ``kinds``: each participant's behaviour (``derelayl.agents.adversaries``); ``measure``:
    extra figures of each round's model. Runs ``rounds`` rounds unless ``stop`` is given."""
    shards, trainer, evaluator = setup.shards(), setup.trainer(), setup.evaluator()
    size = param_bytes(setup.init)
    epochs = setup.train_config.local_epochs
    name = "fedavg" if not trim else "fedavg-trimmed"
    curve = Curve(name, info={"model_bytes": size, "trim": trim, "fraction": fraction})
    weights, moved, done, samples = setup.init, 0, 0, 0
    extra = measure or (lambda _: {})
    budget = stop or Budget(rounds=rounds)
    curve.add(Point(0, setup.test_accuracy(evaluator, weights), 0, 0, 0, extra(weights)))
    r = 0
    while budget.more(curve.final):
        r += 1
        children, counts = [], []
        chosen = sample_clients(len(shards), fraction, seed, r)
        for p in chosen:
            x, y = shards[p].read(p)
            kind = kinds[p] if kinds else HONEST
            if kind in UNTRAINED:  # uploads the global model unchanged
                children.append(weights)
            else:
                x, y = poison(kind, x, y, setup.dataset.n_classes, derive_seed(seed, "poison", p))
                children.append(trainer.train(weights, x, y, seed=derive_seed(seed, "fedavg", r, p)))
                samples += epochs * len(y)
            counts.append(len(y))
        weights = trimmed_mean(children, trim) if trim else average(children, counts)
        moved += 2 * len(chosen) * size
        done += epochs * len(chosen)
        curve.add(Point(r, setup.test_accuracy(evaluator, weights), moved, done, samples, extra(weights)))
    return curve


def trimmed_mean(models: list[Weights], trim: float) -> Weights:
    """Coordinate-wise: sort each parameter's values over the models, drop ``floor(trim * n)``
    at each end, average the rest."""
    n = len(models)
    cut = min(int(trim * n), (n - 1) // 2)
    out = {}
    for name in models[0]:
        stacked = torch.stack([m[name] for m in models]).sort(dim=0).values
        out[name] = stacked[cut : n - cut].mean(dim=0)
    return out


def run_local_only(setup: LearningSetup, rounds: int, seed: int) -> Curve:
    """Each participant trains alone; accuracy is the mean over participants (min/max kept)."""
    shards, trainer, evaluator = setup.shards(), setup.trainer(), setup.evaluator()
    epochs = setup.train_config.local_epochs
    models = [setup.init for _ in shards]
    curve = Curve("local_only")
    acc, spread = _mean_accuracy(setup, evaluator, models)
    curve.add(Point(0, acc, 0, 0, 0, spread))
    done = samples = 0
    for r in range(1, rounds + 1):
        for p, shard in enumerate(shards):
            x, y = shard.read(p)
            models[p] = trainer.train(models[p], x, y, seed=derive_seed(seed, "local", r, p))
            samples += epochs * len(y)
        done += epochs * len(shards)
        acc, spread = _mean_accuracy(setup, evaluator, models)
        curve.add(Point(r, acc, 0, done, samples, spread))
    return curve


def run_gossip(
    setup: LearningSetup,
    seed: int,
    rounds: int | None = None,
    byte_budget: int | None = None,
    max_rounds: int = 10_000,
    *,
    fanout: int = 1,
    stop: Budget | None = None,
) -> Curve:
    """Each round every participant sends its model to ``fanout`` peers drawn at random; each
    averages its model with those it received, then trains on its own data. Runs ``rounds``
    rounds, or until ``byte_budget`` is reached (or as ``stop`` says)."""
    shards, trainer, evaluator = setup.shards(), setup.trainer(), setup.evaluator()
    n, size = len(shards), param_bytes(setup.init)
    fanout = max(1, min(fanout, n - 1))
    epochs = setup.train_config.local_epochs
    models = [setup.init for _ in shards]
    curve = Curve("gossip", info={"model_bytes": size, "fanout": fanout})
    acc, spread = _mean_accuracy(setup, evaluator, models)
    curve.add(Point(0, acc, 0, 0, 0, spread))
    moved = done = samples = 0
    rng = np.random.default_rng(derive_seed(seed, "gossip"))
    budget = stop or Budget(rounds=rounds, bytes=byte_budget, max_rounds=max_rounds)
    curve.info["byte_budget"] = budget.bytes
    r = 0
    while budget.more(curve.final):
        r += 1
        inbox: list[list[Weights]] = [[] for _ in range(n)]
        for p in range(n):
            peers = [rng.integers(n - 1)] if fanout == 1 else rng.choice(n - 1, size=fanout, replace=False)
            for peer in peers:
                inbox[int(peer) + (peer >= p)].append(models[p])
        moved += n * fanout * size
        merged = [average([models[p], *inbox[p]]) for p in range(n)]
        for p, shard in enumerate(shards):
            x, y = shard.read(p)
            models[p] = trainer.train(merged[p], x, y, seed=derive_seed(seed, "gossip", r, p))
            samples += epochs * len(y)
        done += epochs * n
        acc, spread = _mean_accuracy(setup, evaluator, models)
        curve.add(Point(r, acc, moved, done, samples, spread))
    return curve
