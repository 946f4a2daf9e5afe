"""The paper's abstract latent-score model behind the ``Trainer``/``Evaluator`` interfaces.

``derelayl.learning.latent.LatentTrainer`` is vectorised over a round's trainers (the
simulator's fast path). These adapters express the same model one trainer at a time, so
that code written against ``Trainer[M]``/``Evaluator[M]`` runs unchanged with the latent
model (``M = float``, the latent score) or with PyTorch (``M = Weights``). The latent model
ignores the data: its quality gain is drawn, ``d ~ Normal(gain_mean, gain_std)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["LatentEvaluator", "LatentModelTrainer"]


@dataclass(frozen=True)
class LatentModelTrainer:
    """Implements ``Trainer[float]``: child z = parent z + d."""

    gain_mean: float = 1.0
    gain_std: float = 1.0

    def train(self, parent: float, x: NDArray[np.float32], y: NDArray[np.int64], seed: int) -> float:
        return float(parent + np.random.default_rng(seed).normal(self.gain_mean, self.gain_std))


@dataclass(frozen=True)
class LatentEvaluator:
    """Implements ``Evaluator[float]``: accuracy-like performance sigmoid(z)."""

    def evaluate(self, model: float, x: NDArray[np.float32], y: NDArray[np.int64]) -> float:
        return float(1.0 / (1.0 + np.exp(-model)))
