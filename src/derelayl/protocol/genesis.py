"""The state before round 0: a plain function of (parameters, seed, keys)."""

from __future__ import annotations

import numpy as np

from derelayl.errors import ConfigError
from derelayl.protocol.beacon import BEACON_SIZE
from derelayl.protocol.lineage import LineageTree, compute_multipliers
from derelayl.protocol.params import Params
from derelayl.protocol.roles import assign_roles
from derelayl.protocol.state import Models, State
from derelayl.protocol.validate import validate_new_keys

__all__ = ["initialize_state"]


def initialize_state(params: Params, seed: bytes, keys: list[bytes]) -> State:
    """Participants registered, the genesis model (version 0) held by participant 0, all
    balances zero, the beacon set to ``seed`` and round 0's roles drawn from it."""
    # Verify the seed is a beacon-sized byte string
    if not isinstance(seed, bytes) or len(seed) != BEACON_SIZE:
        raise ConfigError(f"the genesis seed must be {BEACON_SIZE} bytes")
    validate_new_keys({}, keys)
    # Verify there is a model owner and at least one miner
    if len(keys) < 2:
        raise ConfigError("a network needs at least 2 participants (a model owner and a miner)")
    n = len(keys)
    multipliers = compute_multipliers(
        params.reward_scheme,
        params.lineage_reward,
        params.royalty_decay.numerator,
        params.royalty_decay.denominator,
    )
    state = State(
        params=params,
        keys=list(keys),
        key_index={key: i for i, key in enumerate(keys)},
        balances=np.zeros(n, dtype=np.int64),
        beacon=bytes(seed),
        held_version=np.full(n, -1, dtype=np.int64),
        trained_version=np.full(n, -1, dtype=np.int64),
        lineage=LineageTree.genesis(0, n, multipliers),
    )
    state.held_version[0] = 0
    state.live = Models(
        model_id=np.array([0], dtype=np.int64),
        owner=np.array([0], dtype=np.int64),
        version=np.array([0], dtype=np.int64),
        score=np.array([0], dtype=np.int64),
    )
    state.roles = assign_roles(state)
    return state
