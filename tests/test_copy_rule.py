"""How honest testers compare a child with live models case by case (``derelayl.protocol.copies``):
the copy rule (``Params.copy_rule``: a copy of another live model must beat it) and the sign test
(``Params.improvement_z``: a child's lead must be significant)."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from derelayl.agents.relay import scored_digests
from derelayl.cli import app
from derelayl.errors import ConfigError
from derelayl.experiments.config import parse_config
from derelayl.experiments.relay import run_derelayl
from derelayl.experiments.runner import build_experiment_setup
from derelayl.learning.serialization import weights_to_bytes
from derelayl.protocol.copies import apply_copy_rule, apply_improvement_z, nearest_live, significant
from derelayl.protocol.params import Params, preset
from test_attacks import SMALL_TOML as SMALL
from test_attacks import network_at_test_phase


@pytest.fixture(scope="module")
def setup():  # type: ignore[no-untyped-def]
    return build_experiment_setup(parse_config(tomllib.loads(SMALL)))


def rule(copy_rule: bool = True) -> Params:
    """Two live models a round (4 trainers per owner, half selected), 50 test cases."""
    values = {"k": 4, "test_cases": 50, "min_improvement": 1, "copy_rule": copy_rule}
    return Params.from_dict(values, base=preset("minimal"))


def test_the_nearest_live_model_is_the_one_predicting_most_alike_and_the_parent_wins_ties() -> None:
    live = np.array([[0, 1, 2, 3], [0, 1, 2, 0], [1, 1, 1, 1]], dtype=np.int64)
    assert nearest_live(np.array([0, 1, 2, 0]), live, parent=0) == 1  # 0 cases differ from model 1
    assert nearest_live(np.array([0, 1, 2, 2]), live, parent=1) == 1  # tie between 0 and 1: the parent
    assert nearest_live(np.array([0, 1, 2, 2]), live, parent=2) == 0  # tie, parent not in it: rank order


def test_a_copy_must_beat_the_model_it_copies_and_an_honest_child_only_its_parent() -> None:
    live_preds = np.array([[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]], dtype=np.int64)
    live_scores = np.array([5, 1], dtype=np.int64)
    children = np.array([[0, 1, 2, 3, 4], [4, 3, 2, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
    # child 0: parent 1 but a copy of live 0 (score 5 < 5 + 1): 0
    # child 1: parent 1 and nearest to it: the improvement rule alone judges it (kept)
    # child 2: parent 0, nearest to its parent: kept
    scores = np.array([5, 2, 5], dtype=np.int64)
    out, nearest = apply_copy_rule(scores, live_scores, children, live_preds, np.array([1, 1, 0]), margin=1)
    assert out.tolist() == [0, 2, 5] and nearest.tolist() == [0, 1, 0]
    # a child nearest to another live model that beats that model by the margin is kept
    better = apply_copy_rule(np.array([5]), np.array([4, 1]), children[:1], live_preds, np.array([1]), margin=1)[0]
    assert better.tolist() == [5]
    assert scores.tolist() == [5, 2, 5]  # the input is not changed


def test_honest_testers_score_an_exact_copy_of_another_live_model_zero(setup) -> None:  # type: ignore[no-untyped-def]
    # Prepare: a network driven to a test phase with at least two live models and commitments
    state, brains, book = network_at_test_phase(
        setup, rule(), "cr", b"\x03" * 32, ready=lambda s: len(s.live) >= 2, max_rounds=30
    )
    tester = int(state.roles.testers[0])
    _, honest = brains[tester].score(state, tester)
    # Execute: replace the first child's bytes by a copy of the best live model that is not its parent
    position = dict(zip(state.pairs.trainer.tolist(), state.pairs.live_pos.tolist(), strict=True))
    parent = position[int(state.commits.owner[0])]
    source = next(j for j in range(len(state.live)) if j != parent)
    copy = weights_to_bytes(book.weights(int(state.live.model_id[source])), {"copied": True})
    state.commitments[0] = book.store.put(copy)  # the same weights under another digest
    _, scored = brains[tester].score(state, tester)
    # Assert: the copy scores 0 unless it beats its source; the others are unchanged
    n_commits = len(state.commits)
    source_score = int(scored[n_commits + source])
    assert scored[0] == 0 or scored[0] >= source_score + 1
    assert scored[1:].tolist() == honest[1:].tolist()


def test_the_copy_rule_turns_every_copier_away(setup) -> None:  # type: ignore[no-untyped-def]
    plain = run_derelayl(setup, rule(copy_rule=False), 3, rounds=10, adversaries={"copier": 0.4})
    guarded = run_derelayl(setup, rule(), 3, rounds=10, adversaries={"copier": 0.4})
    # the improvement rule alone lets copies of better live models through; the copy rule none
    assert plain.info["groups"]["copier"]["models_selected"] > 0
    assert guarded.info["groups"]["copier"]["models_committed"] > 0
    assert guarded.info["groups"]["copier"]["models_selected"] == 0
    assert guarded.info["groups"]["honest"]["models_selected"] > 0


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"copy_rule": True}, "copy_rule needs min_improvement"),
        ({"copy_rule": 1, "min_improvement": 1}, "copy_rule must be true or false"),
        ({"improvement_z": 100}, "improvement_z needs min_improvement"),
        ({"improvement_z": -1, "min_improvement": 1}, "improvement_z must be in 0..10000"),
        ({"improvement_z": 10_001, "min_improvement": 1}, "improvement_z must be in 0..10000"),
        ({"improvement_z": 1.5, "min_improvement": 1}, "improvement_z must be an integer"),
        ({"improvement_z": True, "min_improvement": 1}, "improvement_z must be an integer"),
    ],
)
def test_bad_scoring_rule_params_are_refused(values: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Params.from_dict(values, base=preset("reference"))
    # chains without them keep their params
    assert not {"copy_rule", "improvement_z"} & set(preset("reference").to_dict())


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "--task", "latent", "--min-improvement", "1", "--copy-rule"], "need real models"),
        (["run", "--task", "digits", "--copy-rule"], "copy_rule needs min_improvement"),
        (["run", "--task", "digits", "--min-improvement", "1", "--copy-rule", "--fhe", "on"], "encrypted scoring"),
        (["devnet", "--min-improvement", "1", "--copy-rule", "--fhe", "on"], "encrypted scoring"),
        (["attacks", "--testers", "1"], "--testers must be in 2..16"),
        (["run", "--task", "latent", "--min-improvement", "1", "--improvement-z", "100"], "need real models"),
        (["run", "--task", "digits", "--improvement-z", "100"], "improvement_z needs min_improvement"),
        (["run", "--task", "digits", "--min-improvement", "1", "--improvement-z", "-3"], "improvement_z must be"),
        (["run", "--task", "digits", "--min-improvement", "1", "--improvement-z", "100", "--fhe", "on"], "encrypted"),
        (["devnet", "--min-improvement", "1", "--improvement-z", "100", "--fhe", "on"], "encrypted scoring"),
        (["devnet", "--improvement-z", "20000", "--min-improvement", "1"], "improvement_z must be"),
    ],
)
def test_bad_scoring_rule_options_are_one_error_line(tmp_path: Path, args: list[str], words: str) -> None:
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.output.startswith("error:") and words in result.output, result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("rule", ["copy_rule = true", "improvement_z = 100"])
def test_configs_refuse_the_scoring_rules_where_they_cannot_run(tmp_path: Path, rule: str) -> None:
    fhe = SMALL.replace("[model]\n", '[model]\nactivation = "quad"\n') + "fhe = true\n"
    fhe += f"params = {{ min_improvement = 1, {rule} }}\n"
    with pytest.raises(ConfigError, match="encrypted scoring"):
        parse_config(tomllib.loads(fhe))
    (tmp_path / "s.toml").write_text(f"[protocol]\nmin_improvement = 1\n{rule}\n")
    result = CliRunner().invoke(app, ["simulate", "--config", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "latent models have none" in result.output, result.output
    assert not (tmp_path / "o").exists()


# The sign test (``Params.improvement_z``): a child's lead over the model it is compared with
# must be significant on the cases the two split.


@pytest.mark.parametrize(
    ("b", "c", "z", "passes"),
    [
        (1, 0, 100, True),  # lead 1 = 1 sd of 1 split case
        (4, 0, 200, True),  # lead 4 = 2 sd of 4 split cases, exactly on the threshold
        (4, 1, 200, False),  # lead 3 < 2 sd of 5 (4.47)
        (30, 20, 100, True),  # lead 10 >= 1 sd of 50 (7.07)
        (30, 20, 150, False),  # lead 10 < 1.5 sd of 50 (10.6)
        (5, 5, 0, False),  # no lead never passes
        (0, 0, 100, False),  # a child predicting exactly as the model it is compared with
    ],
)
def test_the_sign_test_is_exact_at_its_threshold(b: int, c: int, z: int, passes: bool) -> None:
    assert significant(b, c, z) is passes


def test_the_sign_test_agrees_with_its_real_formula_away_from_the_threshold() -> None:
    rng = np.random.default_rng(7)
    for b, c, z in rng.integers(0, 400, size=(2000, 3)).tolist():
        lhs, rhs = 100 * (b - c), z * math.sqrt(b + c)
        if b > c and abs(lhs - rhs) > 1e-6:
            assert significant(b, c, z) is (lhs >= rhs), (b, c, z)


def test_a_child_whose_lead_is_noise_scores_zero_and_a_clear_winner_keeps_its_score() -> None:
    # live model 0 is right on cases 0..9; child 0 wins 6 cases and loses 4 (lead 2 of 10
    # split: 0.63 sd); child 1 wins 6 and loses 0 (2.4 sd); child 2 is compared with live 1
    live = np.zeros((2, 20), dtype=bool)
    live[0, :10] = True
    children = np.zeros((3, 20), dtype=bool)
    children[0, 4:16] = True
    children[1, :16] = True
    children[2, :1] = True
    scores = children.sum(axis=1)
    out = apply_improvement_z(scores, children, live, np.array([0, 0, 1]), 100)
    assert out.tolist() == [0, 16, 1]
    assert apply_improvement_z(scores, children, live, np.array([0, 0, 1]), 50).tolist() == [12, 16, 1]


def test_honest_testers_apply_the_sign_test_to_the_model_each_child_is_compared_with(setup) -> None:  # type: ignore[no-untyped-def]
    # Prepare: one network at a test phase, scored without and with the sign test
    plain = rule(copy_rule=False)
    signed = dataclasses.replace(plain, improvement_z=50)
    state, brains, _ = network_at_test_phase(setup, plain, "z", b"\x05" * 32, ready=lambda s: len(s.live) >= 2)
    tester = int(state.roles.testers[0])
    _, counts = brains[tester].score(state, tester)
    x, y = brains[tester].own_cases(state, tester)
    evaluator, book = brains[tester].evaluator, brains[tester].models
    # Execute
    state.params = signed
    _, scored = brains[tester].score(state, tester)
    # Assert: live models keep their counts; each child keeps its count exactly when its lead
    # over its parent passes the test at half a standard deviation, else 0
    n = len(state.commits)
    assert scored[n:].tolist() == counts[n:].tolist()
    position = dict(zip(state.pairs.trainer.tolist(), state.pairs.live_pos.tolist(), strict=True))
    right = [evaluator.predict(book.load(d), x) == y for d in scored_digests(state, book)]
    for i, owner in enumerate(state.commits.owner.tolist()):
        parent = n + position[owner]
        b, c = int((right[i] & ~right[parent]).sum()), int((right[parent] & ~right[i]).sum())
        assert scored[i] == (counts[i] if significant(b, c, 50) else 0)
    kept = scored[:n] == counts[:n]
    assert kept.any() and not kept.all()  # this round has children on both sides


def test_the_sign_test_turns_away_more_label_flippers_than_the_improvement_rule_alone(setup) -> None:  # type: ignore[no-untyped-def]
    plain = rule(copy_rule=False)
    signed = dataclasses.replace(plain, improvement_z=100)
    flips = {"label_flip": 0.4}
    selected = [
        run_derelayl(setup, p, 3, rounds=12, adversaries=flips).info["groups"]["label_flip"]["models_selected"]
        for p in (plain, signed)
    ]
    assert selected[1] < selected[0], selected
