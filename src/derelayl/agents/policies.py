"""Bid policies. The rules only check bids (eligible, covered); what to bid is a choice.

Reference ("taker") strategy of the paper's simulation: a training slot is worth the version
gain it brings, ``b_T = min(balance, V_latest - V_own + 1)`` coins, where ``V_own`` is the
newest version the trainer has *trained* itself (0 if none; a parent it was handed or a copy
it received as commit miner does not count). ``own_version="held"`` values the slot against
the newest version held instead (an earlier derelayl behaviour). Each model owner bids
``min(balance, budget) // k`` per trainer.

The functions broadcast over arrays: one agent's bid and a whole population's bids come from
the same code (``derelayl.agents``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

from derelayl.protocol.state import State
from derelayl.protocol.types import UNIT

__all__ = ["OWN_VERSIONS", "OwnVersion", "mo_bid", "own_version", "taker_bid", "taker_value"]

I64 = NDArray[np.int64]
OwnVersion = Literal["trained", "held"]
OWN_VERSIONS: tuple[OwnVersion, ...] = ("trained", "held")


def own_version(state: State, who: I64 | int, basis: OwnVersion = "trained") -> I64:
    """The newest version each of ``who`` trained (reference) or holds (-1 if none)."""
    versions = state.trained_version if basis == "trained" else state.held_version
    return np.asarray(versions[who], dtype=np.int64)


def taker_value(latest_version: int | I64, own: I64 | int) -> I64:
    """What a training slot is worth to a trainer, in units: the version gain it brings,
    ``V_latest - V_own + 1`` coins (V_own = 0 if it has none)."""
    return (np.asarray(latest_version) - np.maximum(own, 0) + 1) * UNIT


def taker_bid(state: State, who: I64 | int, basis: OwnVersion = "trained") -> I64:
    """The reference trainer bid, in units: min(balance, slot value)."""
    value = taker_value(state.latest_version, own_version(state, who, basis))
    return np.minimum(state.balances[who], value).astype(np.int64)


def mo_bid(state: State, who: I64 | int) -> I64:
    """The reference model-owner bid per trainer: min(balance, budget) // k units."""
    budget = np.minimum(state.balances[who], state.params.mo_budget)
    return (budget // state.params.k).astype(np.int64)
