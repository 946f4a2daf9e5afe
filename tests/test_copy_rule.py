"""The copy rule (``derelayl.protocol.copies``, ``Params.copy_rule``): testers compare each child
with the live model it predicts most like, and a copy of another live model must beat it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from derelayl.cli import app
from derelayl.errors import ConfigError
from derelayl.experiments.config import parse_config
from derelayl.experiments.relay import run_derelayl
from derelayl.experiments.runner import build_experiment_setup
from derelayl.learning.serialization import weights_to_bytes
from derelayl.protocol.copies import apply_copy_rule, nearest_live
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
    ],
)
def test_bad_copy_rule_params_are_refused(values: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Params.from_dict(values, base=preset("reference"))
    assert "copy_rule" not in preset("reference").to_dict()  # chains without it keep their params


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "--task", "latent", "--min-improvement", "1", "--copy-rule"], "needs real models"),
        (["run", "--task", "digits", "--copy-rule"], "copy_rule needs min_improvement"),
        (["run", "--task", "digits", "--min-improvement", "1", "--copy-rule", "--fhe", "on"], "encrypted scoring"),
        (["devnet", "--min-improvement", "1", "--copy-rule", "--fhe", "on"], "encrypted scoring"),
        (["attacks", "--testers", "1"], "--testers must be in 2..16"),
    ],
)
def test_bad_copy_rule_options_are_one_error_line(tmp_path: Path, args: list[str], words: str) -> None:
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.output.startswith("error:") and words in result.output, result.output
    assert not (tmp_path / "o").exists()


def test_configs_refuse_the_copy_rule_where_it_cannot_run(tmp_path: Path) -> None:
    fhe = SMALL.replace("[model]\n", '[model]\nactivation = "quad"\n') + "fhe = true\n"
    fhe += "params = { min_improvement = 1, copy_rule = true }\n"
    with pytest.raises(ConfigError, match="encrypted scoring"):
        parse_config(tomllib.loads(fhe))
    (tmp_path / "s.toml").write_text("[protocol]\nmin_improvement = 1\ncopy_rule = true\n")
    result = CliRunner().invoke(app, ["simulate", "--config", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "latent models have none" in result.output, result.output
    assert not (tmp_path / "o").exists()
