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
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from derelayl.errors import MalformedError, RoleError
from derelayl.protocol.accounts import compute_mint_room, pay_miner
from derelayl.protocol.blocks import SettleBlock, TesterReport
from derelayl.protocol.roles import draw_appellants
from derelayl.protocol.scores import lower_median, set_scores
from derelayl.protocol.state import Dispute, State
from derelayl.protocol.validate import in_order_within, timed_out, verify_report

__all__ = ["APPEALS_NOT_ENCRYPTED", "decide", "hold", "verify_appeals"]

APPEALS_NOT_ENCRYPTED = "appeal_testers re-scores the pooled cases in the clear: it cannot run with encrypted scoring"

I64 = NDArray[np.int64]


def hold(state: State, testers: list[int], rows: I64, amount: int) -> int:
    """Test block of a disputed round: hold each tester's reward in escrow (minted, as it would
    have been paid) and draw the appellants. Call after the block's randomness is mixed in.
    Returns the units held."""
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
        appellants=draw_appellants(state, testers),
        staked=staked,
    )
    return int(held.sum())


def verify_appeals(state: State, block: SettleBlock) -> None:
    """Verify the settle block's appeal reports: none unless the round is disputed; then one
    from each appellant in draw order (after the timeout, silent ones may be missing)."""
    dispute = state.dispute
    if dispute is None:
        if block.appeals:
            raise MalformedError("settle block carries appeal reports, but the round's testers agreed")
        return
    expected = dispute.appellants.tolist()
    given = [report.tester for report in block.appeals]
    if given != expected and not (timed_out(state, block) and in_order_within(given, expected)):
        raise RoleError(f"settle block: appeal reports from {given}, but the round's appellants are {expected}")
    for report in block.appeals:
        verify_report(state, report.test_cases_digest, report.scores, f"appellant {report.tester}", "settle block")


def decide(state: State, appeals: tuple[TesterReport, ...]) -> tuple[int, int]:
    """Settle block of a disputed round (verified): set the round's scores from the appeal,
    return or forfeit the held rewards, pay the appellants. Returns (paid to appellants,
    forfeited)."""
    dispute = state.dispute
    assert dispute is not None
    params = state.params
    n = len(state.commits)
    if appeals:
        final = lower_median(np.stack([r.scores.astype(np.int64) for r in appeals]))
        set_scores(state, final)
    else:
        final = lower_median(dispute.rows)
    # held rewards and stakes: back to the testers on the final medians, forfeited by the others
    at_stake = dispute.held + dispute.staked
    state.escrow -= int(at_stake.sum())
    on_final = [bool((row == final).all()) for row in dispute.rows]
    forfeited = int(at_stake[[not ok for ok in on_final]].sum())
    for tester, returned, ok in zip(dispute.testers.tolist(), at_stake.tolist(), on_final, strict=True):
        if ok:
            state.balances[tester] += returned
    # appellants on their median: a tester's reward each, and the forfeits shared
    agree = [r.tester for r in appeals if bool((r.scores == final).all())]
    amount = params.reward_per_test_case * params.test_cases + params.reward_per_tested_model * n
    paid = sum(pay_miner(state, a, amount) for a in agree)
    share = forfeited // len(agree) if agree else 0
    for a in agree:
        state.balances[a] += share
    state.burned += forfeited - share * len(agree)
    state.dispute = None
    return paid + share * len(agree), forfeited
