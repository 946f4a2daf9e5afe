"""``derelayl experiment``: config validation, the results folder, and the DeRelayL arm being
the protocol's own selection."""

from __future__ import annotations

import json
import tempfile
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from derelayl.cli import app
from derelayl.errors import ConfigError
from derelayl.experiments.config import load_config, parse_config
from derelayl.experiments.runner import run_experiment
from derelayl.learning.partition import Split

SMALL = """
name = "small"
seed = 1
[data]
dataset = "digits"
participants = 6
partition = "dirichlet"
alpha = 0.5
[model]
hidden = [16]
[train]
lr = 0.05
[methods.fedavg]
rounds = 3
[methods.centralized]
epochs = 2
[methods.local_only]
rounds = 2
[methods.gossip]
budget = "fedavg"
[methods.derelayl]
preset = "minimal"
budget = "fedavg"
[[variants]]
name = "relay-2epochs"
local_epochs = 2
preset = "minimal"
[[variants]]
name = "fedprox"
method = "fedavg"
prox_mu = 0.1
[[variants]]
name = "relay-soup"
soup = true
preset = "minimal"
"""


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("exp")
    (root / "small.toml").write_text(SMALL)
    result = CliRunner().invoke(app, ["experiment", str(root / "small.toml"), "--out", str(root / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    return root / "out"


def test_results_folder_has_every_method_and_file(small_run: Path) -> None:
    results = json.loads((small_run / "results.json").read_text())
    assert set(results["methods"]) == {
        "fedavg",
        "centralized",
        "local_only",
        "gossip",
        "derelayl",
        "relay-2epochs",
        "fedprox",
        "relay-soup",
    }
    for name in ("split.json", "config.resolved.json", "report.md", "accuracy.png", "rewards.png"):
        assert (small_run / name).exists(), name
    for method in results["methods"].values():
        points = method["rounds"]
        assert all(0 <= p["accuracy"] <= 1 for p in points)
        assert [p["bytes"] for p in points] == sorted(p["bytes"] for p in points)
    # budgeted methods stop at the first round that reaches FedAvg's bytes
    budget = results["fedavg_bytes"]
    for name in ("gossip", "derelayl", "relay-2epochs"):
        rounds = results["methods"][name]["rounds"]
        assert rounds[-1]["bytes"] >= budget > rounds[-2]["bytes"]
    relay = results["methods"]["derelayl"]
    assert {"gini", "within_2pp", "supply_coins"} <= set(relay["rounds"][-1]["extra"])
    assert relay["info"]["shard_reads_by_others"] == 0
    soup = results["methods"]["relay-soup"]  # read as the average of its live models
    assert all("first_ranked" in p["extra"] for p in soup["rounds"][1:])
    assert "soup_readers" in soup["info"]["bytes_breakdown"]
    assert "## Reading" in (small_run / "report.md").read_text()


def test_split_json_round_trips_and_names_the_preprocessing(small_run: Path) -> None:
    split = Split.load(small_run / "split.json")
    split.validate(1797)
    assert split.dataset == "digits" and split.seed == 0 and len(split.participants) == 6
    assert split.preprocessing["kind"] == "standardize" and len(split.preprocessing["mean"]) == 64
    again = small_run / "again.json"
    split.save(again)
    assert Split.load(again) == split


def test_relay_accuracy_is_that_of_the_protocols_first_ranked_model(small_run: Path) -> None:
    relay = json.loads((small_run / "results.json").read_text())["methods"]["derelayl"]
    for point in relay["rounds"][1:]:
        assert point["extra"]["top_model"] > 0
        assert point["accuracy"] <= point["extra"]["best_committed"] + 1e-12


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"colour": "red"}, "unknown key"),
        ({"data": {"participants": 0}}, "participants must be positive"),
        ({"data": {"alpha": "half"}}, "alpha = 'half': expected int or float"),
        ({"train": {"lr": -1}}, "lr must be positive"),
        ({"model": {"hidden": [0]}}, "hidden must list 1..16 layer widths"),
        ({"model": {"hidden": [10**9]}}, "each in 1..65,536"),
        ({"model": {"hidden": [True]}}, "hidden must list"),
        ({"data": {"participants": 10**9}}, "participants = 1000000000: must be in 1..10,000"),
        ({"data": {"options": {"users": 5}}}, "dataset 'digits' takes no options"),
        ({"data": {"dataset": "synthetic", "options": {"users": "many"}}}, "users = 'many': expected int"),
        ({"data": {"dataset": "synthetic", "options": {"users": 10**9}}}, "users = 1000000000: must be in"),
        ({"data": {"dataset": "synthetic", "options": {"colour": 1}}}, "unknown key"),
        ({"data": {"dataset": "synthetic", "options": {"alpha": -1}}}, "alpha = -1.0: must be >= 0"),
        ({"data": {"dataset": "imagenet"}}, "choose from digits"),
        ({"methods": {"fedavg": {"rounds": 10**9}}}, "rounds = 1000000000: must be in"),
        ({"seed": -1}, "seed = -1: must be in"),
        ({"adversaries": {"sleeper": 0.1}}, "unknown key"),
        ({"adversaries": {"free_rider": 1.5}}, "a share of participants, in 0..1"),
        ({"adversaries": {"free_rider": 0.6, "copier": 0.6}}, "shares add up to"),
        (
            {"data": {"participants": 10_000}, "model": {"hidden": [65_536, 65_536]}},
            "GiB .*make it smaller",
        ),
        ({"methods": {"sgd": {}}}, "unknown method"),
        ({"methods": {"fedavg": {"rounds": 2, "fraction": 1.5}}}, "share of clients per round"),
        ({"methods": {"fedavg": {"rounds": 2, "fraction": 0}}}, "fraction must be positive"),
        ({"methods": {"gossip": {}}}, "needs rounds"),
        ({"methods": {"derelayl": {"budget": "lots"}}}, 'expected "fedavg"'),
        (
            {"methods": {"derelayl": {"rounds": 3, "params": {"kk": 2}}}},
            r"params: unknown protocol key\(s\): kk",
        ),
        ({"methods": {"derelayl": {"rounds": 3, "preset": "huge"}}}, "unknown preset"),
        ({"methods": {"derelayl": {"budget": "fedavg"}}}, "needs \\[methods.fedavg\\]"),
        ({"extra": {"x": 1}}, "unknown table"),
        ({"variants": [{"name": "v", "method": "gossip"}]}, "needs \\[methods.gossip\\]"),
        ({"variants": [{"name": "v", "method": "fedavg", "merge_top_k": 2}]}, "apply to derelayl only"),
        ({"variants": [{"merge_top_k": 2}]}, "needs a name"),
        ({"variants": [{"name": "v", "method": "fedavg", "soup": True}]}, "apply to derelayl only"),
        (
            {"methods": {"derelayl": {"rounds": 2}}, "variants": [{"name": "v", "soup": True, "merge_top_k": 2}]},
            "soup merges every live model",
        ),
        ({"variants": [{"name": "v", "soup": "yes"}]}, "soup"),
    ],
)
def test_bad_configs_are_clear_errors(patch: dict[str, object], message: str) -> None:
    raw: dict[str, object] = {"methods": {"fedavg": {"rounds": 2}}}
    for key, value in patch.items():
        raw[key] = value
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_bad_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    result = CliRunner().invoke(app, ["experiment", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not valid TOML" in result.output


def test_reference_config_is_the_issues() -> None:
    cfg = load_config(Path(__file__).parent.parent / "experiments" / "digits_dirichlet.toml")
    assert cfg.data == {
        **cfg.data,
        "dataset": "digits",
        "participants": 20,
        "partition": "dirichlet",
        "alpha": 0.5,
        "test_fraction": 0.2,
        "split_seed": 0,
    }
    assert cfg.model["hidden"] == [64] and cfg.model["activation"] == "relu"
    assert (cfg.train["lr"], cfg.train["batch_size"], cfg.train["local_epochs"]) == (0.05, 32, 1)
    assert cfg.methods["fedavg"]["rounds"] == 30 and cfg.methods["centralized"]["epochs"] == 30
    assert cfg.methods["derelayl"]["budget"] == "fedavg" and cfg.methods["gossip"]["budget"] == "fedavg"


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "experiments").glob("*.toml")), ids=str)
def test_shipped_configs_are_valid(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.methods and cfg.name == path.stem


def test_money_in_experiment_params_is_in_coins_as_in_simulate_configs() -> None:
    from derelayl.experiments.config import relay_params
    from derelayl.protocol.types import UNIT

    params = relay_params("reference", {"lineage_reward": 1, "mo_budget": "0.5", "testers": 3})
    assert params.lineage_reward == UNIT and params.mo_budget == UNIT // 2 and params.testers == 3
    with pytest.raises(ConfigError, match=r"params\.lineage_reward"):
        relay_params("reference", {"lineage_reward": "a lot"})


def test_fedavg_with_client_sampling_from_a_config_moves_what_the_sampled_clients_move() -> None:
    from derelayl.experiments.runner import build_experiment_setup
    from derelayl.learning.serialization import param_bytes

    raw = tomllib.loads(SMALL)
    raw["methods"] = {"fedavg": {"rounds": 3, "fraction": 0.5}, "derelayl": {"preset": "minimal", "budget": "fedavg"}}
    config = parse_config(raw)
    with tempfile.TemporaryDirectory() as out:
        results = run_experiment(config, Path(out))
    size = param_bytes(build_experiment_setup(config).init)
    assert results["summary"]["fedavg"]["bytes"] == 3 * 2 * 3 * size  # 3 rounds x 2 transfers x 3 of 6 clients
    assert results["summary"]["derelayl"]["bytes"] <= results["summary"]["fedavg"]["bytes"]
