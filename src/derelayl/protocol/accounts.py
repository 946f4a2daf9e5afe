"""Money and membership outside the round's blocks: registration, transfers, minting.

``process_join`` and ``process_transfer`` verify, then mutate, like every ``process_*``.
Minting helpers apply the ``capped`` scheme's supply limit.
"""

from __future__ import annotations

import numpy as np

from derelayl.errors import BalanceError, MalformedError, UnknownParticipantError
from derelayl.protocol.blocks import Join, Transfer
from derelayl.protocol.state import State
from derelayl.protocol.validate import INT64_MAX, validate_new_keys

__all__ = ["compute_mint_room", "pay_miner", "process_join", "process_transfer", "register"]


def register(state: State, keys: tuple[bytes, ...]) -> None:
    """Add already validated keys; they enter the next role draw."""
    if not keys:
        return
    start = state.n_participants
    for offset, key in enumerate(keys):
        state.keys.append(key)
        state.key_index[key] = start + offset
    extra = len(keys)
    state.balances = np.concatenate([state.balances, np.zeros(extra, dtype=np.int64)])
    state.held_version = np.concatenate([state.held_version, np.full(extra, -1, dtype=np.int64)])
    state.trained_version = np.concatenate([state.trained_version, np.full(extra, -1, dtype=np.int64)])
    state.lineage.grow(state.n_participants)


def process_join(state: State, join: Join) -> int:
    """Register one key (permissionless). Returns its participant index."""
    validate_new_keys(state.key_index, (join.key,))
    register(state, (join.key,))
    return state.n_participants - 1


def process_transfer(state: State, transfer: Transfer) -> None:
    """Move coins between registered participants (any phase)."""
    n = state.n_participants
    # Verify both ends are registered participants
    for who, what in ((transfer.sender, "sender"), (transfer.recipient, "recipient")):
        if not isinstance(who, int) or isinstance(who, bool) or not 0 <= who < n:
            raise UnknownParticipantError(f"transfer {what} {who!r} is not a registered participant")
    # Verify the amount is a non-negative integer the sender holds
    amount = transfer.amount
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 <= amount <= INT64_MAX:
        raise MalformedError(f"transfer amount must be a non-negative integer of units, got {amount!r}")
    # Verify the sender is not a tester of the round (with tester_stake: its stake is frozen)
    if state.params.tester_stake and state.roles is not None and transfer.sender in state.roles.testers:
        raise BalanceError(
            f"participant {transfer.sender} tests this round: with tester_stake its coins stay put until the settlement"
        )
    if amount > state.balances[transfer.sender]:
        raise BalanceError(
            f"transfer of {amount} units above participant {transfer.sender}'s balance of "
            f"{int(state.balances[transfer.sender])}"
        )
    state.balances[transfer.sender] -= amount
    state.balances[transfer.recipient] += amount


def compute_mint_room(state: State, amount: int) -> int:
    """How much of ``amount`` may be minted now (``capped`` limits circulating supply)."""
    p = state.params
    if p.reward_scheme == "capped" and p.supply_cap is not None:
        return max(0, min(amount, p.supply_cap - state.supply))
    return amount


def pay_miner(state: State, miner: int, amount: int) -> int:
    amount = compute_mint_room(state, amount)
    state.balances[miner] += amount
    state.minted += amount
    return amount
