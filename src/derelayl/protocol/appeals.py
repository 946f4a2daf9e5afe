"""Appeals: when a round's pooled test reports disagree, a committee drawn afterwards decides.

With pooled cases every honest tester scores the same models on the same cases, so honest
reports are equal; a disagreement means somebody lied. The median protects the round only
while honest testers hold most seats. With ``appeal_testers = a`` the rules go one step further:

1. the test block (``hold``): every reporting tester's reward is held in escrow instead of
   paid (with ``tester_stake``, its stake from its balance too), and ``a`` appellants are
   drawn from the miners that did not test, on the beacon after the test block (nobody knew
   them when the scores were given);
2. the settle block carries the appellants' reports on the same pool (``verify_appeals``);
   their lower median becomes the round's scores before the ranking (``decide``). A tester
   whose report equals it gets its held reward (and stake) back; one that differs forfeits
   them to the appellants whose reports equal it (each also paid a tester's reward), the
   remainder burned.

Appellants that stay silent may be left out only after the phase timeout, as co-testers may. A
round without appellant reports keeps the test block's medians. The contract does the same in
``TestAndSettle.vy`` (``tests/test_contract_differential.py``).

With ``challenge_bond`` a round in which every tester told the same lie can be appealed too:
every test block holds its testers' rewards (``hold`` with ``open=False`` when they agree),
anyone holding the bond may send a ``Challenge`` straight to the ledger before the settle
block (``process_challenge``: the bond into escrow, the appellants drawn then, on the ledger's
randomness at the challenge), and the settle block of an unchallenged round waits
``challenge_window`` blocks (``verify_appeals``). ``decide`` returns the bond with a share of
the forfeits when the appeal changed the round's scores, and gives it to the appellants when
it did not.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from derelayl.errors import BalanceError, DuplicateError, MalformedError, PhaseError, RoleError, UnknownParticipantError
from derelayl.protocol.accounts import compute_mint_room, pay_miner
from derelayl.protocol.beacon import MAX_RANDOMNESS, compute_mixed_beacon
from derelayl.protocol.blocks import Challenge, SettleBlock, TesterReport
from derelayl.protocol.roles import draw_appellants
from derelayl.protocol.scores import lower_median, set_scores
from derelayl.protocol.state import Dispute, State
from derelayl.protocol.types import Phase
from derelayl.protocol.validate import INT64_MAX, in_order_within, timed_out, verify_report

__all__ = [
    "CHALLENGES_NEED_A_LEDGER",
    "decide",
    "hold",
    "process_challenge",
    "settle_opens_at",
    "verify_appeals",
]


CHALLENGES_NEED_A_LEDGER = (
    "challenge_bond: a challenge goes straight to a ledger that takes it, and an unchallenged round waits a window "
    "of the ledger's blocks: use the contract (derelayl run --ledger evm, derelayl devnet)"
)

I64 = NDArray[np.int64]


def hold(state: State, testers: list[int], rows: I64, amount: int, open_appeal: bool = True) -> int:
    """Test block of a disputed round (``open_appeal``), or of any round with challenges on:
    hold each tester's reward in escrow (minted, as it would have been paid), with its stake,
    and draw the appellants if the appeal is open. Call after the block's randomness is mixed
    in. Returns the units held."""
    held = np.zeros(len(testers), dtype=np.int64)
    staked = np.zeros(len(testers), dtype=np.int64)
    for j, tester in enumerate(testers):
        held[j] = compute_mint_room(state, amount)
        state.minted += int(held[j])
        staked[j] = min(int(state.balances[tester]), state.params.tester_stake)
        state.balances[tester] -= staked[j]
        state.escrow += int(held[j] + staked[j])
    state.dispute = Dispute(
        testers=np.array(testers, dtype=np.int64),
        rows=rows,
        held=held,
        appellants=draw_appellants(state, testers) if open_appeal else np.zeros(0, dtype=np.int64),
        staked=staked,
        open=open_appeal,
    )
    return int(held.sum())


def process_challenge(state: State, challenge: Challenge) -> None:
    """A challenge sent straight to the ledger in the settle phase of a round whose testers
    agreed (``Params.challenge_bond``): the bond goes into escrow, the ledger's randomness at
    the challenge is mixed in, the appellants are drawn (from the miners that neither tested
    nor challenged) and the appeal is open; the phase's
    clock restarts, so the appellants have a full phase to report."""
    params = state.params
    # Verify challenges are on and it is this round's settle phase, with nothing open yet
    if not params.challenge_bond:
        raise MalformedError("a challenge, but the rules take none (challenge_bond is 0)")
    if state.phase != Phase.SETTLE or challenge.round != state.round:
        raise PhaseError(f"a challenge of round {challenge.round} outside that round's settle phase")
    if not isinstance(challenge.time, int) or isinstance(challenge.time, bool) or not 0 <= challenge.time <= INT64_MAX:
        raise MalformedError("a challenge's time must be a non-negative integer")
    if challenge.time < state.phase_start:
        raise PhaseError(f"a challenge at time {challenge.time}, before the settle phase began at {state.phase_start}")
    if not isinstance(challenge.randomness, bytes) or len(challenge.randomness) > MAX_RANDOMNESS:
        raise MalformedError(f"a challenge's randomness must be at most {MAX_RANDOMNESS} bytes")
    who = challenge.challenger
    if not isinstance(who, int) or isinstance(who, bool) or not 0 <= who < state.n_participants:
        raise UnknownParticipantError(f"challenge from unknown participant {who!r}")
    dispute = state.dispute
    assert dispute is not None  # every test block holds with challenges on
    if dispute.open:
        raise DuplicateError(f"round {state.round} is already under appeal: nothing to challenge")
    # Verify the challenger holds the bond
    if int(state.balances[who]) < params.challenge_bond:
        raise BalanceError(
            f"participant {who} holds {int(state.balances[who])} units, less than the challenge bond of "
            f"{params.challenge_bond}"
        )

    state.balances[who] -= params.challenge_bond
    state.escrow += params.challenge_bond
    state.beacon = compute_mixed_beacon(state.beacon, challenge.randomness)
    dispute.appellants = draw_appellants(state, [*dispute.testers.tolist(), who])  # nobody judges itself
    dispute.open = True
    dispute.challenger = who
    dispute.bond = params.challenge_bond
    state.phase_start = challenge.time


def settle_opens_at(state: State) -> int:
    """The earliest ledger time of the current settle block: with challenges on and no appeal
    open, the end of the challenge window; otherwise the phase's start."""
    if state.params.challenge_window and not state.appeal_open:
        return state.phase_start + state.params.challenge_window
    return state.phase_start


def verify_appeals(state: State, block: SettleBlock) -> None:
    """Verify the settle block's appeal reports: none unless an appeal is open; then one from
    each appellant in draw order (after the timeout, silent ones may be missing). With
    challenges on, an unchallenged round settles only once its challenge window has passed."""
    dispute = state.dispute
    if dispute is None or not dispute.open:
        if block.appeals:
            raise MalformedError("settle block carries appeal reports, but no appeal is open in this round")
        opens = settle_opens_at(state)
        if block.time < opens:
            raise PhaseError(
                f"settle block at time {block.time}, inside the challenge window (the round may be challenged "
                f"until time {opens})"
            )
        return
    expected = dispute.appellants.tolist()
    given = [report.tester for report in block.appeals]
    if given != expected and not (timed_out(state, block) and in_order_within(given, expected)):
        raise RoleError(f"settle block: appeal reports from {given}, but the round's appellants are {expected}")
    for report in block.appeals:
        verify_report(state, report.test_cases_digest, report.scores, f"appellant {report.tester}", "settle block")


def decide(state: State, appeals: tuple[TesterReport, ...]) -> tuple[int, int]:
    """Settle block of a round with held test rewards (verified): set the round's scores from
    an open appeal, return or forfeit the held rewards and the challenge bond, pay the
    appellants. Returns (paid to appellants and the challenger, forfeited)."""
    dispute = state.dispute
    assert dispute is not None
    params = state.params
    n = len(state.commits)
    tested = lower_median(dispute.rows)
    final = tested
    if appeals:
        final = lower_median(np.stack([r.scores.astype(np.int64) for r in appeals]))
        set_scores(state, final)
    # held rewards and stakes: back to the testers on the final medians, forfeited by the others
    at_stake = dispute.held + dispute.staked
    state.escrow -= int(at_stake.sum()) + dispute.bond
    on_final = [bool((row == final).all()) for row in dispute.rows]
    forfeited = int(at_stake[[not ok for ok in on_final]].sum())
    for tester, returned, ok in zip(dispute.testers.tolist(), at_stake.tolist(), on_final, strict=True):
        if ok:
            state.balances[tester] += returned
    # appellants on their median: a tester's reward each, and the forfeits shared
    agree = [r.tester for r in appeals if bool((r.scores == final).all())]
    payees = list(agree)
    if dispute.challenger >= 0:
        upheld = not bool((final == tested).all())
        if upheld or not appeals:  # right (or undecided): the bond back; right: a share too
            state.balances[dispute.challenger] += dispute.bond
            payees += [dispute.challenger] if upheld else []
        else:  # the appeal found the test block's scores right: the bond pays the appellants
            forfeited += dispute.bond
    amount = params.reward_per_test_case * params.test_cases + params.reward_per_tested_model * n
    paid = sum(pay_miner(state, a, amount) for a in agree)
    share = forfeited // len(payees) if payees else 0
    for payee in payees:
        state.balances[payee] += share
    state.burned += forfeited - share * len(payees)
    state.dispute = None
    return paid + share * len(payees), forfeited
