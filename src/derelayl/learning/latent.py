"""The paper's abstract model quality: each model has a latent score ``z``.

Genesis ``z = 0``; a child has ``z = z_parent + d`` with ``d ~ Normal(1, 1)``; its
accuracy-like performance is ``sigmoid(z)``. A trainer succeeds with probability 0.9
(reference). Scores on the ledger are integers, so a latent model *is* its integer score
``round(z * SCALE)``: a child's score is its parent's plus ``round(d * SCALE)``, exactly, in
every backend. Draws are keyed by (seed, round), one slot per participant, so a resumed run
trains the same children, and one trainer's draw does not depend on who else trained.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

__all__ = ["SCALE", "LatentTrainer", "latent_commitments", "latent_scores", "sigmoid"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
SCALE = 10**9
"""Integer score units per unit of latent quality z."""
_TAG = np.frombuffer(b"latent02", dtype=np.uint8)


def sigmoid(z: F64) -> F64:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class LatentTrainer:
    """Abstract training, vectorised over a round's trainers: parent scores in, (success
    mask, child scores) out. One trainer alone gets exactly its slot of the same draw."""

    seed: int
    success_rate: float = 0.9
    gain_mean: float = 1.0
    gain_std: float = 1.0

    def train(
        self, round_index: int, trainers: I64, parent_score: I64, n_participants: int
    ) -> tuple[NDArray[np.bool_], I64]:
        succeed, gains = _draws(self, round_index, n_participants)
        return succeed[trainers], parent_score + gains[trainers]


@lru_cache(maxsize=8)
def _draws(trainer: LatentTrainer, round_index: int, n_participants: int) -> tuple[NDArray[np.bool_], I64]:
    digest = hashlib.sha256(f"latent/{trainer.seed}/{round_index}".encode()).digest()
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "big")))
    succeed = rng.random(n_participants) < trainer.success_rate
    gains = np.rint(rng.normal(trainer.gain_mean, trainer.gain_std, n_participants) * SCALE).astype(np.int64)
    succeed.flags.writeable = False
    gains.flags.writeable = False
    return succeed, gains


def latent_commitments(round_index: int, trainers: I64, scores: I64) -> tuple[bytes, ...]:
    """An abstract model *is* (round, trainer, score): its 32-byte encoding binds it, and a
    tester reads the score back from it (``latent_scores``)."""
    n = trainers.size
    raw = np.zeros((n, 32), dtype=np.uint8)
    raw[:, :8] = _TAG
    raw[:, 8:16] = np.frombuffer(np.int64(round_index).byteswap().tobytes(), dtype=np.uint8)
    raw[:, 16:24] = trainers.astype(">i8").view(np.uint8).reshape(n, 8)
    raw[:, 24:32] = scores.astype(">i8").view(np.uint8).reshape(n, 8)
    flat = raw.tobytes()
    return tuple(flat[i : i + 32] for i in range(0, 32 * n, 32))


def latent_scores(commitments: list[bytes] | tuple[bytes, ...]) -> I64:
    """What a tester measures of abstract models: the score each commitment encodes."""
    if not commitments:
        return np.zeros(0, dtype=np.int64)
    raw = np.frombuffer(b"".join(commitments), dtype=np.uint8).reshape(-1, 32)
    return raw[:, 24:32].copy().view(">i8").reshape(-1).astype(np.int64)
