"""Encrypted re-checks (``RelayBrain.rechecks``): with encrypted scoring, a trainer re-scores
children it does not hold, so a lie that only raises a colluder's child can be challenged.
Real training, real CKKS scoring, the in-memory ledger."""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import pytest

pytest.importorskip("tenseal")

from derelayl.agents.adversaries import behaving
from derelayl.agents.agent import Agent
from derelayl.agents.books import ModelBook
from derelayl.agents.relay import relay_brains, share_cases
from derelayl.errors import ConfigError
from derelayl.experiments.attacks import encrypted_arms
from derelayl.experiments.config import parse_config
from derelayl.experiments.relay import run_derelayl
from derelayl.experiments.runner import build_experiment_setup
from derelayl.fhe.scoring import encrypted_scoring
from derelayl.learning.store import MemoryModelStore
from derelayl.ledger.client import StateClient
from derelayl.protocol import Phase
from derelayl.protocol.genesis import initialize_state
from derelayl.protocol.params import Params, preset
from derelayl.protocol.scores import lower_median
from derelayl.runtime.driver import RoundDriver
from test_attacks import OPTIMISTIC, SMALL

# the small set-up of the attack tests, with the model CKKS scores and encrypted scoring on
QUAD = {
    **SMALL,
    "model": {**SMALL["model"], "activation": "quad"},
    "methods": {**SMALL["methods"], "derelayl": {**SMALL["methods"]["derelayl"], "fhe": True}},
}


@pytest.fixture(scope="module")
def setup():  # type: ignore[no-untyped-def]
    return build_experiment_setup(parse_config(QUAD))


class Network(NamedTuple):
    """An in-process network of real relay agents on the in-memory ledger, scoring encrypted."""

    params: Params
    state: Any
    brains: list[Any]
    agents: list[Agent]
    driver: RoundDriver
    scoring: Any


def _at_a_test_phase(setup: Any) -> Network:
    """Optimistic testing (one tester) on encrypted models, driven to a test phase with two
    children and an honest trainer that holds the bond."""
    params = Params.from_dict(OPTIMISTIC, base=preset("minimal"))
    n = len(setup.split.participants)
    keys = [hashlib.sha256(f"rc{i}".encode()).digest() for i in range(n)]
    client = StateClient(initialize_state(params, b"\x0d" * 32, keys))
    book = ModelBook.of_genesis(MemoryModelStore(), setup.init, {})
    brains = relay_brains(setup, book, 1)
    scoring = encrypted_scoring(setup.spec, book, None)
    for brain in brains:
        brain.fhe = scoring
    share_cases(brains)
    agents = [Agent(client.signer(k), b) for k, b in zip(keys, brains, strict=True)]
    driver = RoundDriver(client, agents)
    state = client.state

    def ready() -> bool:
        if state.phase != Phase.TEST or len(state.commits) < 2:
            return False
        owners = state.commits.owner.tolist()
        return any(int(state.balances[o]) >= 1 and o != int(state.roles.testers[0]) for o in owners[1:])

    while not ready():
        assert state.round < 20
        driver.step()
        book.follow(state)
    return Network(params, state, brains, agents, driver, scoring)


def test_an_inflated_child_is_found_by_an_encrypted_recheck_challenged_and_reversed(setup: Any) -> None:
    # Prepare: a network at a test phase with two children and an honest trainer with the bond
    params, state, brains, agents, driver, scoring = _at_a_test_phase(setup)
    tester = int(state.roles.testers[0])
    friend = int(state.commits.owner[0])
    checker = next(o for o in state.commits.owner.tolist()[1:] if int(state.balances[o]) >= 1 and o != tester)
    agents[tester].brain = behaving(brains[tester], "inflating_liar", frozenset({tester, friend}), 10)
    # Execute: the test block carries the lie (the friend's child gets every case right)
    tested = driver.step()
    assert state.dispute is not None and not state.appeal_open
    published = lower_median(state.dispute.rows)
    assert int(published[0]) == params.test_cases
    # without re-checks the honest trainer sees nothing wrong: its own models are scored right
    own = brains[checker].checkable(state, checker)
    assert 0 not in own and all(int(published[i]) in allowed for i, allowed in own.items())
    # with re-checks it re-scores every child ranked at or above its own, under encryption
    for brain in brains:
        brain.rechecks = len(state.commits)
    moved = brains[checker].traffic.rechecks
    rechecked = brains[checker].checkable(state, checker)
    assert 0 in rechecked and int(published[0]) not in rechecked[0]
    assert brains[checker].traffic.rechecks > moved  # the ciphertexts and the exchange are counted
    calls: list[int] = []
    score = scoring.score

    def counted(who: int, *args: Any) -> Any:
        calls.append(who)
        return score(who, *args)

    scoring.score = counted  # type: ignore[method-assign]
    every = len(state.commits) + 1  # an appellant scores every child and the parent (a re-check: children only)
    settle = driver.step()
    # Assert: someone challenged, the appellants re-scored (under encryption: they too exchange
    # queries and replies with the trainers) and reversed the lie: the liar's held reward is
    # forfeited, and the books balance
    assert driver.challenges == 1
    assert sum(calls.count(who) >= every for who in set(calls)) >= 2
    assert settle.forfeited == tested.held > 0 and settle.appeal_reward >= settle.forfeited
    assert state.escrow == 0 and state.supply == int(state.balances.sum())


def test_appellants_confirm_a_tested_score_their_own_encrypted_scoring_allows(setup: Any) -> None:
    # Prepare: an honest test block, then appellants drawn as a challenge would draw them
    net = _at_a_test_phase(setup)
    state = net.state
    net.driver.step()
    assert state.dispute is not None and not state.appeal_open
    published = lower_median(state.dispute.rows)
    appellant = next(p for p in range(len(net.brains)) if p not in state.roles.testers.tolist())
    brain = net.brains[appellant]
    # Execute / Assert: an honest appellant agrees with an honest tester exactly
    _, report = brain.appeal(state, appellant)
    assert report.tolist() == published.tolist()
    # a tested score one above its own count: counted as a lie when no case may go either way,
    # confirmed when near ties allow it (here: every case, so that the test does not wait for
    # CKKS noise to tip one)
    state.dispute.rows[:, 0] = published[0] + 1
    net.scoring.near_tie = 0.0
    assert int(brain.appeal(state, appellant)[1][0]) == int(published[0])
    assert brain.ties_confirmed == 0
    net.scoring.near_tie = 1e9
    assert int(brain.appeal(state, appellant)[1][0]) == int(published[0]) + 1
    assert brain.ties_confirmed == 1  # its own count differed: counted


def test_a_vexatious_challenge_of_an_honest_encrypted_test_block_costs_the_challenger_its_bond(setup: Any) -> None:
    # Prepare: an honest tester; a trainer holding the bond challenges whatever the scores
    params, state, brains, agents, driver, _ = _at_a_test_phase(setup)
    tester = int(state.roles.testers[0])
    vexer = next(o for o in state.commits.owner.tolist() if int(state.balances[o]) >= 1 and o != tester)
    agents[vexer].brain = behaving(brains[vexer], "vexatious_challenger", frozenset({vexer}), 10)
    tested = driver.step()
    # Execute: the settle phase, with its challenge and the appeal under encryption
    settle = driver.step()
    # Assert: the appellants upheld the tester's scores, so the bond is all that was forfeited
    # (an upheld challenge forfeits the tester's held reward, which is far larger)
    assert driver.challenges == 1
    assert settle.forfeited == params.challenge_bond < tested.held
    assert state.escrow == 0 and state.supply == int(state.balances.sum())


def test_confirmed_keeps_an_allowed_score_and_moves_any_other_to_the_nearest_allowed() -> None:
    import numpy as np

    from derelayl.agents.relay import confirmed

    tested = np.array([5, 9, 3, 0], dtype=np.int64)
    assert confirmed(tested, [(4, 5, 6), (6, 7), (3,), (2, 3)]).tolist() == [5, 7, 3, 2]


def test_rechecks_need_encrypted_scoring_and_challenges(setup: Any) -> None:
    plain = Params.from_dict({"testers": 1}, base=preset("minimal"))
    with pytest.raises(ConfigError, match="rechecks need encrypted scoring"):
        run_derelayl(setup, plain, 1, rounds=1, fhe=True, rechecks=1)
    with pytest.raises(ConfigError, match="rechecks need encrypted scoring"):
        run_derelayl(setup, Params.from_dict(OPTIMISTIC, base=preset("minimal")), 1, rounds=1, rechecks=1)


def test_the_encrypted_arms_drop_the_clear_only_rules_and_add_rechecks() -> None:
    plain, checked = encrypted_arms(rechecks=2).values()
    assert "copy_rule" not in plain and "improvement_z" not in plain and plain["testers"] == 1
    assert checked == {**plain, "rechecks": 2}


def test_attacks_refuses_a_bad_rechecks_count_before_writing(tmp_path: Any) -> None:
    from pathlib import Path

    from typer.testing import CliRunner

    from derelayl.cli import app

    config = Path(__file__).resolve().parent.parent / "experiments" / "digits_fhe.toml"
    out = tmp_path / "att"
    result = CliRunner().invoke(app, ["attacks", str(config), "--out", str(out), "--rechecks", "0"])
    assert result.exit_code != 0 and "error:" in result.output and "--rechecks" in result.output
    assert not out.exists()


def test_honest_counts_allow_exactly_the_near_tied_cases_to_go_either_way() -> None:
    import numpy as np

    from derelayl.fhe.scoring import NEAR_TIE, honest_counts

    logits = np.array(
        [
            [0.0, 1.0, 0.0],  # right, clear
            [0.0, 0.5, 0.5 - NEAR_TIE / 2],  # right (label 1), near-tied with 2: may be lost
            [0.3, 0.3 + NEAR_TIE / 2, 0.0],  # wrong (label 0 is the runner-up, near-tied): may be won
            [0.0, 0.2, 0.2 + NEAR_TIE / 2],  # wrong, and the label 0 is not among the tied two
            [2.0, 0.0, 0.0],  # wrong, clear
        ]
    )
    y = np.array([1, 1, 0, 0, 1])
    assert honest_counts(logits, y) == (1, 2, 3)
    assert honest_counts(logits, y, near=0.0) == (2,)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--rechecks", "2"], "--rechecks needs --fhe on and --challenge-bond"),
        (["--rechecks", "2", "--task", "digits", "--fhe", "on"], "--rechecks needs --fhe on and --challenge-bond"),
        (["--rechecks", "17", "--task", "digits", "--fhe", "on"], "--rechecks must be in 0..16"),
    ],
)
def test_run_refuses_rechecks_without_encryption_and_challenges_before_writing(
    tmp_path: Any, options: list[str], message: str
) -> None:
    from typer.testing import CliRunner

    from derelayl.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--out", str(out), "--rounds", "1", *options])
    assert result.exit_code != 0 and f"error: {message}" in result.output
    assert not out.exists()
