"""Bid policies. The rules only check bids (eligible, covered); what to bid is a choice.

Reference ("taker") strategy of the paper's simulation: a training slot is worth the version
gain it brings, ``b_T = min(balance, V_latest - V_own + 1)`` coins (V_own = 0 if none held);
each model owner bids ``min(balance, budget) / k`` per trainer.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from derelayl.protocol.blocks import Bids
from derelayl.protocol.state import State
from derelayl.protocol.types import UNIT

__all__ = ["reference_bids", "reference_mo_bids", "taker_bids", "taker_value"]

I64 = NDArray[np.int64]


def taker_value(latest_version: int | I64, held_version: I64) -> I64:
    """What a training slot is worth to a trainer, in units: the version gain it brings,
    ``V_latest - V_own + 1`` coins (V_own = 0 if it holds none). Broadcasts over arrays."""
    return (np.asarray(latest_version) - np.maximum(held_version, 0) + 1) * UNIT


def taker_bids(state: State, trainers: I64) -> Bids:
    """The reference trainer bid, in units: min(balance, slot value)."""
    value = taker_value(state.latest_version, state.held_version[trainers])
    return Bids(trainers.astype(np.int64), np.minimum(state.balances[trainers], value).astype(np.int64))


def reference_mo_bids(state: State, model_owners: I64) -> Bids:
    """The reference model-owner bid per trainer: min(balance, budget) // k units."""
    budget = np.minimum(state.balances[model_owners], state.params.mo_budget)
    return Bids(model_owners.astype(np.int64), (budget // state.params.k).astype(np.int64))


def reference_bids(state: State) -> tuple[Bids, Bids]:
    """(trainer bids, model-owner bids) of every participant with a role this round."""
    assert state.roles is not None
    return taker_bids(state, state.roles.trainers), reference_mo_bids(state, state.roles.model_owners)
