"""Helpers for block producers: what a miner may put in a block so that the rules accept it,
in the order the rules require.

Pure functions of the state; they never change it. The rules themselves stay in
``transition``: a block built without these helpers is still checked in full.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from derelayl.protocol.beacon import AUCTION, compute_keys
from derelayl.protocol.blocks import Bids
from derelayl.protocol.state import State
from derelayl.protocol.validate import DIGEST_SIZE

__all__ = ["compute_includable_bids", "compute_includable_commitments", "order_bids"]

I64 = NDArray[np.int64]


def _first_valid(state: State, bids: Bids, eligible: I64, per: int) -> I64:
    """Positions of the bids the rules accept: the first bid of each eligible participant,
    non-negative and covered ``per`` times by its balance."""
    n = state.n_participants
    role = np.zeros(n, dtype=bool)
    role[eligible] = True
    keep: list[int] = []
    seen: set[int] = set()
    for i, (who, amount) in enumerate(zip(bids.participant.tolist(), bids.amount.tolist(), strict=True)):
        ok = 0 <= who < n and bool(role[who]) and who not in seen
        if ok and 0 <= amount <= int(state.balances[who]) // per:
            keep.append(i)
        if 0 <= who < n:
            seen.add(who)
    return np.array(keep, dtype=np.int64)


def order_bids(state: State, trainer_bids: Bids, mo_bids: Bids) -> tuple[Bids, Bids]:
    """Trainer bids highest first (ties by the round's auction key); model-owner bids in the
    order of the live models their bidders hold."""
    keys = compute_keys(state.beacon, AUCTION, state.n_participants)
    t_order = np.lexsort((keys[trainer_bids.participant], -trainer_bids.amount))
    live_pos = np.full(state.n_participants, -1, dtype=np.int64)
    live_pos[state.live.owner] = np.arange(len(state.live), dtype=np.int64)
    m_order = np.argsort(live_pos[mo_bids.participant], kind="stable")
    return (
        Bids(trainer_bids.participant[t_order], trainer_bids.amount[t_order]),
        Bids(mo_bids.participant[m_order], mo_bids.amount[m_order]),
    )


def compute_includable_bids(state: State, trainer_bids: Bids, mo_bids: Bids) -> tuple[Bids, Bids]:
    """The bids a deposit miner may include from those it received, in canonical order."""
    assert state.roles is not None
    t = _first_valid(state, trainer_bids, state.roles.trainers, 1)
    t = t[trainer_bids.amount[t] >= state.params.min_trainer_bid]
    m = _first_valid(state, mo_bids, state.roles.model_owners, state.params.k)
    return order_bids(
        state,
        Bids(trainer_bids.participant[t], trainer_bids.amount[t]),
        Bids(mo_bids.participant[m], mo_bids.amount[m]),
    )


def compute_includable_commitments(
    state: State, trainers: I64, commitments: tuple[bytes, ...]
) -> tuple[I64, tuple[bytes, ...]]:
    """What a commit miner may include from the submissions it received: well-formed digests
    from trainers matched this round, the first submission per trainer and per digest, in the
    order of the pairs.

    The rules reject a whole block that repeats a trainer or a digest, so a miner that filtered
    nothing could be stalled by two trainers submitting the same model (e.g. two free-riders
    resubmitting one parent). Filtering here keeps honest blocks valid."""
    pair_of = np.full(state.n_participants, -1, dtype=np.int64)
    pair_of[state.pairs.trainer] = np.arange(len(state.pairs), dtype=np.int64)
    seen_trainers: set[int] = set()
    seen_digests: set[bytes] = set()
    keep: list[tuple[int, int, bytes]] = []
    for trainer, digest in zip(trainers.tolist(), commitments, strict=True):
        ok = 0 <= trainer < state.n_participants and int(pair_of[trainer]) >= 0
        ok = ok and isinstance(digest, bytes) and len(digest) == DIGEST_SIZE
        if ok and trainer not in seen_trainers and digest not in seen_digests:
            keep.append((int(pair_of[trainer]), trainer, digest))
        seen_trainers.add(trainer)
        seen_digests.add(digest)
    keep.sort()
    return np.array([t for _, t, _ in keep], dtype=np.int64), tuple(d for _, _, d in keep)
