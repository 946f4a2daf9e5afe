"""Ranking and matching: the auction that pairs model owners with trainers.

Model owners are ranked by the score of the model they hold (best first), trainers by bid
(highest first); ties are broken by the round's randomness. Walking the owner ranking, each
owner takes the next ``k`` trainers. Pure functions of their arguments.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["compute_matching", "compute_ranking"]

I64 = NDArray[np.int64]


def compute_ranking(values: NDArray[np.generic], rng: np.random.Generator) -> I64:
    """Positions sorted by value, highest first; equal values in a random order."""
    tiebreak: NDArray[np.float64] = np.asarray(rng.random(int(values.shape[0])), dtype=np.float64)
    return np.lexsort((tiebreak, -values.astype(np.float64))).astype(np.int64)


def compute_matching(owner_rank: I64, trainer_rank: I64, k: int) -> tuple[I64, I64]:
    """Pair ranked owners (each takes ``k``) with ranked trainers.

    Returns (owner positions, trainer positions) of the pairs, in matching order.
    Unmatched trainers sit the round out.
    """
    n_pairs = min(trainer_rank.size, k * owner_rank.size)
    slots = np.arange(n_pairs, dtype=np.int64)
    return owner_rank[slots // k], trainer_rank[:n_pairs]
