"""Checks shared by several transitions (no state changes here)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from derelayl.errors import (
    BalanceError,
    DuplicateError,
    MalformedError,
    PhaseError,
    RoleError,
    UnknownParticipantError,
    WrongMinerError,
)
from derelayl.protocol.beacon import MAX_RANDOMNESS
from derelayl.protocol.blocks import Bids, Block
from derelayl.protocol.state import KEY_SIZE, State
from derelayl.protocol.types import Phase

__all__ = [
    "DIGEST_SIZE",
    "INT64_MAX",
    "INT64_MIN",
    "in_order_within",
    "phase_timed_out",
    "scores_expected",
    "timed_out",
    "validate_new_keys",
    "verify_bids",
    "verify_committed_cases",
    "verify_header",
    "verify_minimum_bids",
    "verify_report",
]

I64 = NDArray[np.int64]
DIGEST_SIZE = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def validate_new_keys(key_index: dict[bytes, int], keys: Iterable[bytes]) -> None:
    """Registration is permissionless: any well-formed, not yet registered key may join."""
    seen: set[bytes] = set()
    for key in keys:
        # Verify the key is a 32-byte public key
        if not isinstance(key, bytes) or len(key) != KEY_SIZE:
            raise MalformedError(f"registration: public key must be {KEY_SIZE} bytes")
        # Verify it is not registered already
        if key in key_index or key in seen:
            raise DuplicateError(f"registration: key {key.hex()[:16]}… is already registered")
        seen.add(key)


def verify_header(state: State, block: Block, phase: Phase) -> None:
    name = block.kind.name.lower()
    # Verify the block belongs to the current round and phase
    if block.round != state.round:
        raise PhaseError(f"{name} block for round {block.round}, but the chain is in round {state.round}")
    if state.phase != phase:
        raise PhaseError(f"{name} block out of phase: round {state.round} expects a {state.phase.name.lower()} block")
    # Verify the ledger inputs: a time not before the phase began, at most 32 bytes of randomness
    if not isinstance(block.time, int) or isinstance(block.time, bool) or not 0 <= block.time <= INT64_MAX:
        raise MalformedError(f"{name} block: time must be a non-negative integer")
    if block.time < state.phase_start:
        raise PhaseError(f"{name} block at time {block.time}, before its phase began at {state.phase_start}")
    if not isinstance(block.randomness, bytes) or len(block.randomness) > MAX_RANDOMNESS:
        raise MalformedError(f"{name} block: randomness must be at most {MAX_RANDOMNESS} bytes")
    # Verify the block comes from the miner drawn for it, or from any participant once the
    # phase has timed out
    assert state.roles is not None
    expected = state.roles.block_miners[int(phase)]
    if block.miner == expected:
        return
    timeout = state.params.phase_timeout
    if not timed_out(state, block):
        raise WrongMinerError(
            f"{name} block of round {state.round} produced by participant {block.miner}, but participant "
            f"{expected} was drawn"
            + ("" if timeout is None else f" (anyone may produce it from time {state.phase_start + timeout})")
        )
    if not isinstance(block.miner, int) or not 0 <= block.miner < state.n_participants:
        raise UnknownParticipantError(f"{name} block produced by unknown participant {block.miner!r}")


def verify_bids(state: State, bids: Bids, eligible: I64, who: str, per: int) -> None:
    """Bids must come once each from an eligible participant and be covered ``per`` times."""
    # Verify the arrays are well formed integers
    if bids.participant.shape != bids.amount.shape or bids.participant.ndim != 1:
        raise MalformedError(f"{who} bids: participant and amount lists differ in length")
    if bids.participant.dtype != np.int64 or bids.amount.dtype != np.int64:
        raise MalformedError(f"{who} bids: participants and amounts must be integers")
    if bids.participant.size == 0:
        return
    # Verify every bidder is registered
    n = state.n_participants
    unknown = bids.participant[(bids.participant < 0) | (bids.participant >= n)]
    if unknown.size:
        raise UnknownParticipantError(f"{who} bid from unknown participant {int(unknown[0])}")
    # Verify every bidder holds the role this round
    has_role = np.zeros(n, dtype=bool)
    has_role[eligible] = True
    outside = bids.participant[~has_role[bids.participant]]
    if outside.size:
        raise RoleError(f"participant {int(outside[0])} bid as a {who} but is not a {who} in round {state.round}")
    # Verify nobody bids twice
    counts = np.bincount(bids.participant, minlength=n)
    if counts.max() > 1:
        raise DuplicateError(f"participant {int(np.argmax(counts))} bid twice as a {who}")
    # Verify amounts are non-negative and covered by the bidder's balance
    if (bids.amount < 0).any():
        raise BalanceError(f"{who} bid of a negative amount")
    # (amount > balance // per  <=>  amount * per > balance, without overflow)
    short = bids.amount > state.balances[bids.participant] // per
    if short.any():
        i = int(np.flatnonzero(short)[0])
        raise BalanceError(
            f"{who} {int(bids.participant[i])} bid {int(bids.amount[i])} units (x{per}) above "
            f"its balance of {int(state.balances[bids.participant[i]])}"
        )


def verify_minimum_bids(state: State, bids: Bids) -> None:
    """Trainer bids must reach the minimum deposit (``min_trainer_bid``)."""
    low = np.flatnonzero(bids.amount < state.params.min_trainer_bid)
    if low.size:
        i = int(low[0])
        raise BalanceError(
            f"trainer {int(bids.participant[i])} bid {int(bids.amount[i])} units, below the minimum deposit of "
            f"{state.params.min_trainer_bid}"
        )


def timed_out(state: State, block: Block) -> bool:
    return phase_timed_out(state, block.time)


def phase_timed_out(state: State, time: int) -> bool:
    """A block stamped ``time`` comes after the current phase's deadline: anyone may produce
    the phase, and silent co-testers may be left out."""
    timeout = state.params.phase_timeout
    return timeout is not None and time >= state.phase_start + timeout


def in_order_within(given: list[int], expected: list[int]) -> bool:
    """``given`` is ``expected`` with some entries left out, order kept."""
    rest = iter(expected)
    return all(any(g == e for e in rest) for g in given)


def scores_expected(state: State) -> int:
    """How many scores each tester reports this round (``Params.scored_models``)."""
    return state.params.scored_models(len(state.commits), len(state.live))


def verify_report(state: State, digest: bytes, scores: I64, who: str, where: str = "test block") -> None:
    # Verify a digest of the test cases
    if not isinstance(digest, bytes) or len(digest) != DIGEST_SIZE:
        raise MalformedError(f"{where}: {who}'s test_cases_digest must be a {DIGEST_SIZE}-byte digest")
    # Verify exactly one integer score per commitment (and, with the improvement rule, per live model)
    want = scores_expected(state)
    if not isinstance(scores, np.ndarray) or scores.ndim != 1 or scores.size != want:
        size = scores.size if isinstance(scores, np.ndarray) else "no"
        what = f"{len(state.commits)} committed models" + (
            f" and {len(state.live)} live models" if want != len(state.commits) else ""
        )
        raise MalformedError(f"{where}: {who} gave {size} scores for {what}")
    if scores.size and scores.dtype != np.int64:
        raise MalformedError(f"{where}: {who}'s scores must be 64-bit integers")


def verify_committed_cases(state: State, reporter: int, digest: bytes) -> None:
    """With case commitments, a drawn tester's report must name the cases it committed to in
    the deposit block (a producer of a timed-out test block that is no tester committed none)."""
    assert state.roles is not None
    # Verify a tester's cases are the ones it committed to before any model could be seen
    if not state.params.case_commitments or reporter not in state.roles.testers.tolist():
        return
    committed = state.case_digests.get(reporter)
    if committed is None:
        raise MalformedError(
            f"test block: tester {reporter} reports but committed to no test cases in the deposit block"
        )
    if digest != committed:
        raise MalformedError(f"test block: tester {reporter}'s test cases are not the ones it committed to")
