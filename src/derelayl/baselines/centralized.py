"""Centralized training: everyone's data pooled on one machine (the upper reference)."""

from __future__ import annotations

from derelayl.baselines.curve import Curve, Point
from derelayl.learning.data import case_bytes
from derelayl.learning.seeds import derive_seed
from derelayl.learning.setup import LearningSetup

__all__ = ["run_centralized"]


def run_centralized(setup: LearningSetup, epochs: int, seed: int) -> Curve:
    """``epochs`` passes over the pooled training data. Bytes: the data itself, sent once."""
    x, y = setup.train_pool()
    trainer, evaluator = setup.trainer(), setup.evaluator()
    moved = case_bytes(x, y)
    curve = Curve("centralized", info={"data_bytes": moved, "train_samples": int(y.size)})
    weights = setup.init
    curve.add(Point(0, setup.test_accuracy(evaluator, weights), moved, 0, 0))
    for epoch in range(1, epochs + 1):
        weights = trainer.train(weights, x, y, seed=derive_seed(seed, "centralized", epoch), epochs=1)
        curve.add(Point(epoch, setup.test_accuracy(evaluator, weights), moved, epoch, epoch * int(y.size)))
    return curve
