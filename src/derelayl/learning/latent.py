"""The paper's abstract model quality: each model has a latent score ``z``.

Genesis ``z = 0``; a child has ``z = z_parent + d`` with ``d ~ Normal(1, 1)``; its
accuracy-like performance is ``sigmoid(z)``. A trainer succeeds with probability 0.9
(reference). Draws are keyed by (seed, round, trainer) so that a resumed run trains the
same children it would have trained without the crash.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["LatentTrainer", "sigmoid"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


def sigmoid(z: F64) -> F64:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class LatentTrainer:
    """Vectorised abstract training: parent scores in, (success mask, child scores) out."""

    seed: int
    success_rate: float = 0.9
    gain_mean: float = 1.0
    gain_std: float = 1.0

    def _rng(self, round_index: int) -> np.random.Generator:
        digest = hashlib.sha256(f"latent/{self.seed}/{round_index}".encode()).digest()
        return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "big")))

    def train(
        self, round_index: int, trainers: I64, parent_z: F64, n_participants: int
    ) -> tuple[NDArray[np.bool_], F64]:
        """Each trainer's draw comes from its own slot of per-round arrays, so the result for
        one trainer does not depend on who else trained this round."""
        rng = self._rng(round_index)
        succeed = rng.random(n_participants) < self.success_rate
        gains = rng.normal(self.gain_mean, self.gain_std, n_participants)
        return succeed[trainers], parent_z + gains[trainers]

    @staticmethod
    def commitment(model_id_hint: int, round_index: int, trainer: int, z: float) -> bytes:
        """Digest of an abstract model (what a trainer commits to)."""
        return hashlib.sha256(f"latent-model/{round_index}/{trainer}/{model_id_hint}/{z!r}".encode()).digest()
