"""Ranking and matching: the auction that pairs model owners with trainers.

Orders are canonical, never the block producer's choice:

- model owners in the order of the live models they hold (the settlement's ranking, best
  first);
- trainers by bid, highest first, equal bids by the round's ``auction`` key (a random
  order drawn from the beacon, ``protocol.beacon``).

A deposit block lists its bids in exactly these orders, and the rules *verify* the order
(one comparison per neighbouring pair) instead of sorting: that is O(n) on any backend, and
it is what the EVM contract does. Walking the owners in order, each takes the next ``k``
trainers; unmatched trainers sit the round out. The settlement ranks committed models by
score, highest first, equal scores by the ``settle`` key.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["compute_matching", "compute_ranking", "is_canonical_bid_order"]

I64 = NDArray[np.int64]
U64 = NDArray[np.uint64]


def is_canonical_bid_order(amounts: I64, keys: U64) -> bool:
    """Amounts non-increasing; equal amounts in strictly increasing key order."""
    if amounts.size < 2:
        return True
    before, after = amounts[:-1], amounts[1:]
    ok = (before > after) | ((before == after) & (keys[:-1] < keys[1:]))
    return bool(ok.all())


def compute_matching(n_trainer_bids: int, n_owner_bids: int, k: int) -> tuple[I64, I64]:
    """(owner bid positions, trainer bid positions) of the pairs, in matching order: trainer
    bid ``i`` goes to owner bid ``i // k``, for as many trainers as the owners can take."""
    n_pairs = min(n_trainer_bids, k * n_owner_bids)
    slots = np.arange(n_pairs, dtype=np.int64)
    return slots // k, slots


def compute_ranking(scores: I64, keys: U64) -> I64:
    """Positions sorted by score, highest first; equal scores by ascending key."""
    # ~score reverses the order of int64 without overflow (-score overflows at the minimum)
    return np.lexsort((keys, ~scores.astype(np.int64))).astype(np.int64)
