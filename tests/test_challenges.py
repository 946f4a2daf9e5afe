"""Challenges (``challenge_bond``, ``challenge_window``): every test block holds its testers'
rewards until the settlement; a participant holding the bond may challenge a round whose
testers agreed, which opens the appeal with appellants drawn at the challenge; a round nobody
challenges settles only after the window."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from derelayl.agents.latent import LatentPopulation
from derelayl.cli import app
from derelayl.errors import BalanceError, ConfigError, DuplicateError, MalformedError, PhaseError, ProtocolError
from derelayl.protocol import Params, blocks, process_block, process_operation
from derelayl.protocol.digest import compute_state_root
from derelayl.protocol.serialize import state_from_dict, state_to_dict
from derelayl.protocol.state import State
from derelayl.protocol.transition import total_money
from test_tester_stake import _at_test as stake_at_test

BOND = 2_000_000
WINDOW = 3
APPEALS = Params(k=2, test_cases=5, testers=5, pooled_cases=True, appeal_testers=3)
PARAMS = dataclasses.replace(APPEALS, challenge_bond=BOND, challenge_window=WINDOW)


def _apply(state: State, block: blocks.Block) -> object:
    """Apply ``block`` at the earliest time the rules take (the window after a test block)."""
    wait = state.params.challenge_window if isinstance(block, blocks.SettleBlock) and not state.appeal_open else 0
    return process_block(state, dataclasses.replace(block, time=state.phase_start + wait))


def _at_test(params: Params = PARAMS) -> tuple[State, blocks.TestBlock, LatentPopulation]:
    """A state at a test phase with committed models; every participant holds 5 bonds."""
    return stake_at_test(params, apply=_apply)


def _unanimous_lie(block: blocks.TestBlock, favour: int) -> blocks.TestBlock:
    """Every tester gives model ``favour`` the top score and every other model 0: they agree."""
    lying = np.zeros_like(block.scores)
    lying[favour] = 10**6
    co = tuple(dataclasses.replace(r, scores=lying) for r in block.co_testers)
    return dataclasses.replace(block, scores=lying, co_testers=co)


def _outsider(state: State) -> int:
    """A participant with no role this round but miner (it neither trains, tests nor produces
    a block): the challenge is the only thing it gains or loses by."""
    assert state.roles is not None
    roles = state.roles
    busy = {*roles.testers.tolist(), *roles.block_miners, *roles.trainers.tolist(), *roles.model_owners.tolist()}
    return next(i for i in range(state.n_participants) if i not in busy)


def _challenge(state: State, who: int) -> blocks.Challenge:
    return blocks.Challenge(state.round, who, time=state.phase_start + 1, randomness=b"\x09" * 32)


def test_challenges_need_appeals_and_a_window() -> None:
    with pytest.raises(ConfigError, match="challenge_bond needs appeal_testers"):
        Params(testers=3, pooled_cases=True, challenge_bond=1, challenge_window=1)
    with pytest.raises(ConfigError, match="go together"):
        dataclasses.replace(APPEALS, challenge_bond=1)
    with pytest.raises(ConfigError, match="go together"):
        dataclasses.replace(APPEALS, challenge_window=1)
    for bad in (-1, 1.5, True, 2**63):
        with pytest.raises(ConfigError, match="challenge_bond must be an integer of units"):
            dataclasses.replace(PARAMS, challenge_bond=bad)
    with pytest.raises(ConfigError, match="challenge_window must be"):
        dataclasses.replace(PARAMS, challenge_window=10**7)
    assert "challenge_bond" not in APPEALS.to_dict()  # chains without challenges keep their params
    assert Params.from_dict(PARAMS.to_dict()) == PARAMS


def test_an_unchallenged_round_settles_after_the_window_as_it_would_without_challenges() -> None:
    # Prepare: the same honest round with and without challenges
    state, honest, population = _at_test()
    plain, plain_block, _ = _at_test(APPEALS)
    assert np.array_equal(plain_block.scores, honest.scores) and np.array_equal(plain.balances, state.balances)
    # Execute: the test block holds the rewards; no appeal is open
    receipt = _apply(state, honest)
    assert receipt.held > 0 and receipt.miner_reward == 0
    assert state.dispute is not None and not state.appeal_open and state.dispute.appellants.size == 0
    _apply(plain, plain_block)
    settle = population.next_block(state)
    assert isinstance(settle, blocks.SettleBlock) and settle.appeals == ()
    # Assert: inside the window the settle block is refused, state untouched
    before = compute_state_root(state)
    with pytest.raises(PhaseError, match="inside the challenge window"):
        process_block(state, dataclasses.replace(settle, time=state.phase_start + WINDOW - 1))
    assert compute_state_root(state) == before
    result = _apply(state, settle)
    plain_result = _apply(plain, settle)
    # the testers get their rewards at the settlement: every balance ends as without challenges
    assert result.selected_model.tolist() == plain_result.selected_model.tolist()
    assert np.array_equal(state.balances, plain.balances) and state.escrow == 0 == plain.escrow
    assert result.appeal_reward == 0 and result.forfeited == 0
    assert total_money(state)[0] == total_money(state)[1]


def test_a_lie_every_tester_tells_is_reversed_when_challenged() -> None:
    # Prepare: all five testers agree on a lie for the worst model; a twin sees the honest block
    state, honest, population = _at_test()
    n = len(state.commits)
    worst = int(np.argmin(honest.scores[:n]))
    fair = state.copy()
    _apply(fair, honest)
    fair_result = _apply(fair, population.next_block(fair))
    lying = _unanimous_lie(honest, worst)
    testers = [lying.miner, *(r.tester for r in lying.co_testers)]
    _apply(state, lying)
    assert not state.appeal_open  # they agree: without a challenge the lie would stand
    challenger = _outsider(state)
    before = state.balances.copy()
    # Execute: a challenge opens the appeal; the appellants (drawn now) re-score honestly
    assert process_operation(state, _challenge(state, challenger)) is None
    assert state.appeal_open and state.dispute is not None
    appellants = state.dispute.appellants.tolist()
    assert len(appellants) == 3 and not set(appellants) & set(testers)
    assert state.balances[challenger] == before[challenger] - BOND
    assert total_money(state)[0] == total_money(state)[1]
    settle = population.next_block(state)
    assert isinstance(settle, blocks.SettleBlock) and len(settle.appeals) == 3
    result = _apply(state, settle)
    # Assert: the honest selection; every liar forfeits its reward, shared by the three
    # appellants and the challenger, who also gets its bond back
    assert result.selected_model.tolist() == fair_result.selected_model.tolist()
    amount = PARAMS.reward_per_test_case * PARAMS.test_cases + PARAMS.reward_per_tested_model * n
    gained = state.balances - before
    assert all(gained[t] == 0 for t in testers if t not in settle_miners(state, settle))
    share = 5 * amount // 4
    assert gained[challenger] == share  # (``before`` is before the bond went in: it came back)
    assert all(gained[a] >= amount + share for a in appellants)
    assert result.forfeited == 5 * amount and result.appeal_reward == 3 * amount + 4 * share
    assert state.escrow == 0 and total_money(state)[0] == total_money(state)[1]


def settle_miners(state: State, settle: blocks.SettleBlock) -> set[int]:
    """Who else is paid in the settle block (its miner, and the lineage payees): left out of
    the per-tester checks above."""
    return {settle.miner, *np.flatnonzero(state.balances > 3 * BOND).tolist()}


def test_a_wrong_challenge_costs_the_bond_which_pays_the_appellants() -> None:
    state, honest, population = _at_test()
    n = len(state.commits)
    _apply(state, honest)
    challenger = _outsider(state)
    before = state.balances.copy()
    process_operation(state, _challenge(state, challenger))
    assert state.dispute is not None
    appellants = state.dispute.appellants.tolist()
    settle = population.next_block(state)
    result = _apply(state, settle)
    amount = PARAMS.reward_per_test_case * PARAMS.test_cases + PARAMS.reward_per_tested_model * n
    gained = state.balances - before
    assert gained[challenger] == -BOND  # (an outsider: nothing else to earn in the round)
    assert result.forfeited == BOND
    assert all(gained[a] >= amount + BOND // 3 for a in appellants)
    assert result.appeal_reward == 3 * amount + 3 * (BOND // 3)
    assert state.escrow == 0 and total_money(state)[0] == total_money(state)[1]


def test_a_challenge_the_appellants_never_answer_returns_the_bond() -> None:
    params = dataclasses.replace(PARAMS, phase_timeout=5)
    state, honest, population = _at_test(params)
    _apply(state, honest)
    challenger = _outsider(state)
    process_operation(state, _challenge(state, challenger))
    before = state.balances.copy()
    settle = population.next_block(state)
    assert isinstance(settle, blocks.SettleBlock)
    # the challenge restarted the phase: the appellants have a full timeout from it
    with pytest.raises(ProtocolError, match="appellants are"):
        process_block(state.copy(), dataclasses.replace(settle, appeals=(), time=state.phase_start + 4))
    process_block(state, dataclasses.replace(settle, appeals=(), time=state.phase_start + 5))
    assert state.balances[challenger] - before[challenger] == BOND
    assert total_money(state)[0] == total_money(state)[1]


def test_challenges_are_refused_when_they_cannot_be_taken_and_change_nothing() -> None:
    state, honest, _ = _at_test()
    who = _outsider(state)
    cases: list[tuple[State, blocks.Challenge, type[Exception], str]] = []
    cases.append((state.copy(), _challenge(state, who), PhaseError, "outside that round's settle phase"))
    process_block(state, dataclasses.replace(honest, time=state.phase_start + 2))
    cases += [
        (state, dataclasses.replace(_challenge(state, who), round=state.round + 1), PhaseError, "settle phase"),
        (state, dataclasses.replace(_challenge(state, who), time=state.phase_start - 1), PhaseError, "before"),
        (state, dataclasses.replace(_challenge(state, who), time=-1), MalformedError, "non-negative"),
        (state, dataclasses.replace(_challenge(state, who), randomness=bytes(33)), MalformedError, "randomness"),
        (state, _challenge(state, 10**6), ProtocolError, "unknown participant"),
        (state, _challenge(state, -1), ProtocolError, "unknown participant"),
    ]
    poor = state.copy()
    poor.minted -= int(poor.balances[who]) - (BOND - 1)  # (the books stay balanced)
    poor.balances[who] = BOND - 1
    cases.append((poor, _challenge(poor, who), BalanceError, "less than the challenge bond"))
    opened = state.copy()
    process_operation(opened, _challenge(opened, who))
    cases.append((opened, _challenge(opened, who + 1), DuplicateError, "already under appeal"))
    off, off_block, _ = _at_test(APPEALS)
    _apply(off, off_block)
    cases.append((off, _challenge(off, who), MalformedError, "challenge_bond is 0"))
    for target, challenge, error, message in cases:
        root = compute_state_root(target)
        with pytest.raises(error, match=message):
            process_operation(target, challenge)
        assert compute_state_root(target) == root


def test_a_challenged_round_survives_a_state_round_trip() -> None:
    state, honest, _ = _at_test()
    _apply(state, honest)
    unopened = state_from_dict(state_to_dict(state))
    assert compute_state_root(unopened) == compute_state_root(state) and not unopened.appeal_open
    process_operation(state, _challenge(state, _outsider(state)))
    again = state_from_dict(state_to_dict(state))
    assert compute_state_root(again) == compute_state_root(state)
    assert again.dispute is not None and again.dispute.challenger == _outsider(state) and again.dispute.bond == BOND


def test_the_simulator_refuses_challenges_it_has_no_ledger_for(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(
        "[protocol]\ntesters = 3\npooled_cases = true\nappeal_testers = 3\nchallenge_bond = 1\nchallenge_window = 2\n"
    )
    result = CliRunner().invoke(app, ["simulate", "--config", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.output.startswith("error:"), result.output
    assert "a challenge goes straight to a ledger" in result.output
    assert not (tmp_path / "o").exists()


def test_a_run_on_the_contract_waits_each_window_and_verifies(tmp_path: Path) -> None:
    args = ["run", "--ledger", "evm", "--task", "latent", "--participants", "16", "--rounds", "3"]
    args += ["--testers", "3", "--pooled-cases", "--appeal-testers", "3", "--challenge-bond", "0.001", "--quiet"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["rounds"] == 3 and summary["params"]["challenge_window"] == 5
    assert summary["ledger"]["verified"] is True
