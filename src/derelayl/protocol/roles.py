"""Who does what in a round: model owners, trainers, miners, the four block miners, testers.

Drawn from the beacon (``protocol.beacon``) at genesis and at the end of every settlement,
over the participants registered by then. Every step is one the EVM contract repeats:

- model owners hold the live models;
- trainers are the ``m`` other participants with the lowest ``roles`` keys, where
  ``m = min(cap - owners, others - 1)`` (at least one miner is always left);
- miners are everyone else, in index order; block miner ``j`` is
  ``miners[word(miners, j) mod len(miners)]`` (with replacement, as in the reference);
- co-testers (``params.testers - 1``) are distinct miners other than the testing miner, by a
  partial Fisher-Yates shuffle of the rest, in index order, driven by ``word(testers, j)``;
- with ``params.tester_stake``, the testing miner (``word(miners, 2)``) and the co-testers are
  drawn the same way from the miners whose balance is at least the stake, in index order,
  unless fewer than ``params.testers`` miners have it (then from every miner);
- appellants (``params.appeal_testers``, only when a test block's pooled reports disagree) are
  drawn the same way from the miners that did not test, driven by ``word(appeal, j)`` on the
  beacon after the test block.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from derelayl.protocol.beacon import APPEAL, MINERS, ROLES, TESTERS, compute_keys, compute_word
from derelayl.protocol.state import Roles, State

__all__ = ["assign_roles", "draw_appellants"]


def assign_roles(state: State) -> Roles:
    n = state.n_participants
    beacon = state.beacon
    model_owners = np.unique(state.live.owner)
    is_other = np.ones(n, dtype=bool)
    is_other[model_owners] = False
    others = np.flatnonzero(is_other)
    n_trainers = max(0, min(state.params.active_cap(n) - model_owners.size, others.size - 1))
    if n_trainers:
        keys = compute_keys(beacon, ROLES, n)[others]
        trainers = np.sort(others[np.argpartition(keys, n_trainers - 1)[:n_trainers]])
    else:
        trainers = others[:0]
    is_other[trainers] = False
    miners = np.flatnonzero(is_other)
    eligible = _staked(state, miners)
    picks = [int(miners[compute_word(beacon, MINERS, j) % miners.size]) for j in range(4)]
    picks[2] = int(eligible[compute_word(beacon, MINERS, 2) % eligible.size])
    block_miners = (picks[0], picks[1], picks[2], picks[3])
    testers = np.array([block_miners[2]], dtype=np.int64)
    if state.params.testers > 1:
        pool = eligible[eligible != block_miners[2]]
        testers = np.concatenate([testers, _shuffle_take(beacon, TESTERS, pool, state.params.testers - 1)])
    return Roles(
        model_owners=model_owners.astype(np.int64),
        trainers=trainers.astype(np.int64),
        miners=miners.astype(np.int64),
        block_miners=block_miners,
        testers=testers.astype(np.int64),
    )


def _staked(state: State, miners: NDArray[np.int64]) -> NDArray[np.int64]:
    """The miners testers are drawn from: with ``tester_stake``, those whose balance is at least
    the stake, unless fewer than ``testers`` have it (then every miner, as without it)."""
    stake = state.params.tester_stake
    if not stake:
        return miners
    staked = miners[state.balances[miners] >= stake]
    return staked if staked.size >= state.params.testers else miners


def draw_appellants(state: State, testers: list[int]) -> NDArray[np.int64]:
    """Who re-scores a disputed round: ``appeal_testers`` miners not in ``testers`` (those that
    tested, and a challenger), fewer if there are fewer, in draw order; the beacon is the one
    after the test block (or the challenge)."""
    assert state.roles is not None
    pool = state.roles.miners[~np.isin(state.roles.miners, testers)]
    return _shuffle_take(state.beacon, APPEAL, pool, state.params.appeal_testers)


def _shuffle_take(beacon: bytes, purpose: bytes, pool: NDArray[np.int64], count: int) -> NDArray[np.int64]:
    """The first ``count`` of ``pool`` (all if fewer) after a partial Fisher-Yates shuffle
    driven by ``word(purpose, j)``."""
    pool = pool.copy()
    count = min(count, pool.size)
    for j in range(count):
        i = j + compute_word(beacon, purpose, j) % (pool.size - j)
        pool[[j, i]] = pool[[i, j]]
    return pool[:count].astype(np.int64)
