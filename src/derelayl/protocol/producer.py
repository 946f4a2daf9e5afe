"""Helpers for block producers: what a miner may put in a block so that the rules accept it.

Pure functions of the state; they never change it. The rules themselves stay in
``transition``: a block built without these helpers is still checked in full.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from derelayl.protocol.state import State
from derelayl.protocol.transition import DIGEST_SIZE

__all__ = ["compute_includable_commitments"]

I64 = NDArray[np.int64]


def compute_includable_commitments(
    state: State, trainers: I64, commitments: tuple[bytes, ...]
) -> tuple[I64, tuple[bytes, ...]]:
    """What a commit miner may include from the submissions it received: well-formed digests
    from trainers matched this round, the first submission per trainer and per digest.

    The rules reject a whole block that repeats a trainer or a digest, so a miner that filtered
    nothing could be stalled by two trainers submitting the same model (e.g. two free-riders
    resubmitting one parent). Filtering here keeps honest blocks valid."""
    matched = np.zeros(state.n_participants, dtype=bool)
    matched[state.pairs.trainer] = True
    seen_trainers: set[int] = set()
    seen_digests: set[bytes] = set()
    keep_trainers: list[int] = []
    keep_digests: list[bytes] = []
    for trainer, digest in zip(trainers.tolist(), commitments, strict=True):
        ok = 0 <= trainer < state.n_participants and bool(matched[trainer])
        ok = ok and isinstance(digest, bytes) and len(digest) == DIGEST_SIZE
        if ok and trainer not in seen_trainers and digest not in seen_digests:
            keep_trainers.append(trainer)
            keep_digests.append(digest)
        seen_trainers.add(trainer)
        seen_digests.add(digest)
    return np.array(keep_trainers, dtype=np.int64), tuple(keep_digests)
