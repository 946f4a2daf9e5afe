"""Appeals (``appeal_testers``): a disagreement among pooled testers holds every tester's
reward, a committee drawn after the test block re-scores the pool, and its median decides the
round; testers off it forfeit their held reward to the appellants on it."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from derelayl.agents.latent import LatentPopulation
from derelayl.errors import ConfigError, MalformedError, RoleError
from derelayl.learning.latent import LatentTrainer
from derelayl.protocol import Params, Phase, blocks, initialize_state, process_block
from derelayl.protocol.digest import compute_state_root
from derelayl.protocol.serialize import block_from_dict, block_to_dict, state_from_dict, state_to_dict
from derelayl.protocol.state import State
from derelayl.protocol.transition import total_money

PARAMS = Params(k=2, test_cases=5, testers=5, pooled_cases=True, appeal_testers=3)


def _at_test(params: Params = PARAMS, seed: int = 4) -> tuple[State, blocks.TestBlock, LatentPopulation]:
    """A state at a test phase with committed models (24 participants: enough miners)."""
    keys = [hashlib.sha256(f"a{i}".encode()).digest() for i in range(24)]
    state = initialize_state(params, b"\x07" * 32, keys)
    population = LatentPopulation(LatentTrainer(seed=seed))
    while state.phase != Phase.TEST or len(state.commits) < 2:
        process_block(state, population.next_block(state))
    block = population.next_block(state)
    assert isinstance(block, blocks.TestBlock) and len(block.co_testers) == 4
    return state, block, population


def _lie(block: blocks.TestBlock, liars: int, favour: int) -> blocks.TestBlock:
    """``liars`` co-testers (the last ones) give model ``favour`` the top score, all others 0."""
    lying = np.zeros_like(block.scores)
    lying[favour] = 10**6
    reports = list(block.co_testers)
    for i in range(len(reports) - liars, len(reports)):
        reports[i] = dataclasses.replace(reports[i], scores=lying)
    return dataclasses.replace(block, co_testers=tuple(reports))


def test_a_lie_by_the_majority_of_testers_is_reversed_by_the_appeal() -> None:
    # Prepare: 3 of 5 testers lie for the worst model (their medians would select it); a twin
    # state sees the honest test block instead
    state, honest, population = _at_test()
    n = len(state.commits)
    worst = int(np.argmin(honest.scores[:n]))
    lying = _lie(honest, 3, worst)
    liars = [r.tester for r in lying.co_testers[1:]]
    truthful = [lying.miner, lying.co_testers[0].tester]
    fair, before = state.copy(), state.balances.copy()
    process_block(fair, honest)
    fair_result = process_block(fair, population.next_block(fair))
    # Execute: the test block holds every reward and draws appellants; the settle block decides
    receipt = process_block(state, lying)
    assert receipt.held > 0 and receipt.miner_reward == 0 and state.dispute is not None
    assert int(state.commits.score[worst]) == 10**6  # the liars' median, for now
    appellants = state.dispute.appellants.tolist()
    assert len(appellants) == 3 and not set(appellants) & {lying.miner, *(r.tester for r in lying.co_testers)}
    settle = population.next_block(state)
    assert isinstance(settle, blocks.SettleBlock) and len(settle.appeals) == 3
    result = process_block(state, settle)
    # Assert: the selection is the honest one; truthful testers end as in the honest round,
    # each liar one test reward short, each appellant a test reward + a third of the forfeits up
    assert result.selected_model.tolist() == fair_result.selected_model.tolist()
    assert state.live.score.tolist() == fair.live.score.tolist()
    amount = PARAMS.reward_per_test_case * PARAMS.test_cases + PARAMS.reward_per_tested_model * n
    gained, fair_gained = state.balances - before, fair.balances - before
    assert all(gained[t] == fair_gained[t] for t in truthful)
    assert all(gained[t] == fair_gained[t] - amount for t in liars)
    assert all(gained[a] == fair_gained[a] + amount + amount for a in appellants)  # 3 forfeits / 3
    assert result.forfeited == 3 * amount and result.appeal_reward == 6 * amount
    assert state.dispute is None and state.escrow == 0
    supply, held = total_money(state)
    assert supply == held


def test_a_lying_minority_without_appeal_reports_keeps_the_test_medians() -> None:
    # Prepare: one liar; its reward is held; the settle block comes after the timeout, empty
    params = dataclasses.replace(PARAMS, phase_timeout=5)
    state, honest, population = _at_test(params)
    lying = _lie(honest, 1, 0)
    liar = lying.co_testers[-1].tester
    process_block(state, lying)
    before = state.balances.copy()
    burned = state.burned
    settle = population.next_block(state)
    assert isinstance(settle, blocks.SettleBlock)
    early = dataclasses.replace(settle, appeals=settle.appeals[:1], time=state.phase_start + 1)
    # Execute / Assert: before the timeout every appellant's report is required
    with pytest.raises(RoleError, match="appellants are"):
        process_block(state.copy(), early)
    late = dataclasses.replace(settle, appeals=(), time=state.phase_start + 5)
    process_block(state, late)
    # the honest testers get their held reward, the liar's is burned (no appellant to pay)
    paid = state.balances - before
    assert paid[liar] == 0 and paid[honest.miner] > 0
    assert state.burned > burned


def test_appeal_reports_are_refused_unless_the_round_is_disputed_and_well_formed() -> None:
    state, honest, population = _at_test()
    process_block(state, honest)
    assert state.dispute is None  # honest testers agree: no appeal
    settle = population.next_block(state)
    stray = blocks.TesterReport(1, bytes(32), honest.scores)
    with pytest.raises(MalformedError, match="no appeal is open"):
        process_block(state.copy(), dataclasses.replace(settle, appeals=(stray,)))
    state, honest, population = _at_test()
    process_block(state, _lie(honest, 1, 0))
    settle = population.next_block(state)
    assert isinstance(settle, blocks.SettleBlock)
    short = dataclasses.replace(settle.appeals[0], scores=settle.appeals[0].scores[:1])
    with pytest.raises(MalformedError, match="settle block: appellant"):
        process_block(state.copy(), dataclasses.replace(settle, appeals=(short, *settle.appeals[1:])))
    with pytest.raises(RoleError):
        process_block(state.copy(), dataclasses.replace(settle, appeals=settle.appeals[::-1]))


def test_a_disputed_state_and_its_settle_block_round_trip() -> None:
    state, honest, population = _at_test()
    process_block(state, _lie(honest, 2, 0))
    again = state_from_dict(state_to_dict(state))
    assert compute_state_root(again) == compute_state_root(state)
    settle = population.next_block(state)
    assert isinstance(settle, blocks.SettleBlock) and settle.appeals
    assert block_to_dict(block_from_dict(block_to_dict(settle))) == block_to_dict(settle)


def test_appeals_need_pooled_cases_and_a_bounded_committee() -> None:
    with pytest.raises(ConfigError, match="needs pooled_cases"):
        Params(testers=3, appeal_testers=3)
    with pytest.raises(ConfigError, match="appeal_testers must be between 0 and 16"):
        Params(testers=3, pooled_cases=True, appeal_testers=17)
    assert "appeal_testers" not in Params().to_dict()  # chains without appeals keep their params


def test_in_a_disputed_settle_phase_a_node_lets_the_appellants_fetch_the_models() -> None:
    from derelayl.node.view import make_view

    # Prepare: a disputed round at its settle phase (a node's view of it)
    state, honest, _ = _at_test()
    process_block(state, _lie(honest, 1, 0))
    assert state.dispute is not None
    appellants = set(state.dispute.appellants.tolist())
    # Execute
    view = make_view(state, 0, {}, timed_out=False)
    late = make_view(state, 0, {}, timed_out=True)
    # Assert: every committed model may go to the appellants (to anyone once timed out), to
    # nobody else; an undisputed settle phase lets nobody fetch
    assert all(view.entitled[d] == frozenset(appellants) for d in state.commitments)
    assert all(late.entitled[d] == frozenset(range(state.n_participants)) for d in state.commitments)
    state, honest, _ = _at_test()
    process_block(state, honest)
    assert make_view(state, 0, {}, timed_out=False).entitled == {}
