"""Any model, any data: a user's own dataset, nn.Module factory and optimizer plug into the
Python API, experiment configs and ``derelayl experiment`` (``derelayl.learning.plugin``), and
bad plugins are one clear error."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from derelayl.baselines import run_fedavg
from derelayl.cli import app
from derelayl.errors import ConfigError
from derelayl.experiments.config import load_config, parse_config
from derelayl.experiments.relay import run_derelayl
from derelayl.experiments.runner import build_experiment_setup
from derelayl.learning.setup import build_setup
from derelayl.learning.torch_models import TrainConfig
from derelayl.protocol.params import preset

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def blobs(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return (rng.normal(0, 1, (n, 5)) + 3 * np.eye(3, 5)[y]).astype(np.float32), y


def tiny_net(n_features: int, n_classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_features, 7), nn.Tanh(), nn.Linear(7, n_classes))


def test_python_api_takes_arrays_a_module_factory_and_an_optimizer() -> None:
    torch.set_num_threads(1)
    calls = []

    def rmsprop(parameters, config):  # type: ignore[no-untyped-def]
        calls.append(config.lr)
        return torch.optim.RMSprop(parameters, lr=config.lr)

    setup = build_setup(blobs(), participants=4, model=tiny_net, train_config=TrainConfig(lr=0.01, optimizer=rmsprop))
    assert setup.spec.to_dict()["factory"].endswith("tiny_net") and setup.dataset.n_classes == 3
    assert set(setup.init) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    fed = run_fedavg(setup, 3, seed=0)
    relay = run_derelayl(setup, preset("minimal"), 0, rounds=3)
    assert fed.final.accuracy > 0.6 and relay.final.round == 3 and calls and set(calls) == {0.01}


def test_adam_is_a_built_in_optimizer_and_an_unknown_one_is_refused() -> None:
    setup = build_setup(blobs(), participants=2, model=tiny_net, train_config=TrainConfig(optimizer="adam"))
    assert run_fedavg(setup, 1, seed=0).final.round == 1
    with pytest.raises(ConfigError, match="sgd, adam or a function"):
        TrainConfig(optimizer="lbfgs").make_optimizer(tiny_net(2, 2).parameters())


PLUGIN = """
import numpy as np
from torch import nn

def load(n=300, shift=3.0):
    rng = np.random.default_rng(1)
    y = np.arange(n) % 2
    return rng.normal(0, 1, (n, 4)).astype(np.float32) + shift * y[:, None], y

def net(n_features, n_classes):
    return nn.Sequential(nn.Linear(n_features, n_classes))

def not_a_module(n_features, n_classes):
    return "a string"

def nan_data():
    return np.full((10, 2), np.nan), np.arange(10) % 2

def negative_labels():
    return np.zeros((10, 2)), -np.ones(10, dtype=int)

def broken():
    raise RuntimeError("disk on fire")
"""

CONFIG = """
name = "plugged"
[data]
dataset = "plug.py:{data}"
preprocess = "none"
participants = 3
[data.options]
{options}
[model]
factory = "plug.py:{model}"
[methods.fedavg]
rounds = 2
[methods.derelayl]
preset = "minimal"
rounds = 2
"""


def _config(folder: Path, data: str = "load", model: str = "net", options: str = "n = 200") -> Path:
    (folder / "plug.py").write_text(PLUGIN)
    path = folder / "exp.toml"
    path.write_text(CONFIG.format(data=data, model=model, options=options))
    return path


def test_config_names_plugins_relative_to_its_folder_and_resolves_them_absolute(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path))
    assert config.data["dataset"] == f"{tmp_path.resolve() / 'plug.py'}:load"
    assert config.model["factory"] == f"{tmp_path.resolve() / 'plug.py'}:net"
    setup = build_experiment_setup(config)
    assert len(setup.dataset) == 200 and setup.spec.to_dict()["factory"] == config.model["factory"]
    # the resolved config, parsed anywhere, names the same code
    again = parse_config(json.loads(json.dumps(config.resolved())))
    assert again.data["dataset"] == config.data["dataset"]


def test_experiment_cli_runs_a_plugin_config(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["experiment", str(_config(tmp_path)), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert summary["fedavg"]["accuracy"] > 0.6 and summary["derelayl"]["rounds"] == 2


@pytest.mark.parametrize(
    ("data", "model", "options", "message"),
    [
        ("nowhere", "net", "", "has no function nowhere"),
        ("load", "not_a_module", "", "returned str, not a torch.nn.Module"),
        ("nan_data", "net", "", "NaN or infinite"),
        ("negative_labels", "net", "", "integer class labels"),
        ("broken", "net", "", "the function failed: RuntimeError: disk on fire"),
        ("load", "net", "colour = [1, 2]", "must be numbers, strings or booleans"),
        ("load", "net", "wrong_option = 1", "the function failed: TypeError"),
    ],
)
def test_a_bad_plugin_is_one_error_line_and_writes_nothing(
    tmp_path: Path, data: str, model: str, options: str, message: str
) -> None:
    out = tmp_path / "out"
    path = _config(tmp_path, data, model, options)
    result = CliRunner().invoke(app, ["experiment", str(path), "--out", str(out), "--quiet"])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('[model]\nfactory = "no-colon"', "expected module:function or file.py:function"),
        ('[model]\nfactory = "x.py:1st"', "expected module:function"),
        ('[model]\nfactory = "m:f"\nhidden = [3]', "give factory or hidden, not both"),
        ('[train]\noptimizer = "lbfgs"', "expected sgd, adam or module:function"),
        ('[data]\ndataset = "a:b:c"', "expected module:function"),
    ],
)
def test_plugin_names_are_checked_when_the_config_is_read(section: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(tomllib.loads(section + "\n[methods.fedavg]\nrounds = 1\n"))


def test_a_missing_plugin_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "exp.toml"
    path.write_text('[data]\ndataset = "gone.py:load"\n[methods.fedavg]\nrounds = 1\n')
    with pytest.raises(ConfigError, match="no file"):
        build_experiment_setup(load_config(path))


def test_the_cnn_example_trains_on_its_generated_images(tmp_path: Path) -> None:
    config = tomllib.loads((EXAMPLES / "cnn_rendered_digits.toml").read_text())
    config["data"].update(participants=4, options={"samples": 300, "seed": 0})
    config["methods"] = {"fedavg": {"rounds": 2}, "derelayl": {"preset": "minimal", "rounds": 2}}
    setup = build_experiment_setup(parse_config(config, base=EXAMPLES))
    assert setup.dataset.n_features == 256 and setup.spec.build().__class__.__name__ == "SmallCNN"
    assert run_fedavg(setup, 2, seed=0).final.accuracy > 0.1


def _head(out: Path) -> str:
    return json.loads((out / "summary.json").read_text())["head_hash"]


def test_run_relay_trains_a_plugin_config_resumes_it_and_refuses_another(tmp_path: Path) -> None:
    path = _config(tmp_path)
    base = ["run", "--task", str(path), "--preset", "minimal", "--seed", "5", "--quiet"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert CliRunner().invoke(app, [*base, "--rounds", "3", "--out", str(one)]).exit_code == 0
    result = CliRunner().invoke(app, [*base, "--rounds", "2", "--out", str(two)])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(app, [*base, "--rounds", "3", "--out", str(two)]).exit_code == 0  # resumes
    assert _head(one) == _head(two)
    summary = json.loads((one / "summary.json").read_text())
    assert summary["config"]["participants"] == 3 and (one / "plugged.png").exists()
    task = json.loads((one / "task.json").read_text())
    assert task["model"]["factory"].endswith("plug.py:net") and task["data"]["split_seed"] == 5
    # another task config in the same folder: refused, nothing changed
    other = tmp_path / "other.toml"
    other.write_text(path.read_text().replace("n = 200", "n = 240"))
    before = {f.name: f.stat().st_mtime_ns for f in one.iterdir() if f.name != ".lock"}
    result = CliRunner().invoke(
        app, ["run", "--task", str(other), "--preset", "minimal", "--seed", "5", "--out", str(one)]
    )
    assert result.exit_code != 0 and "holds a run of another task" in result.output
    assert {f.name: f.stat().st_mtime_ns for f in one.iterdir() if f.name != ".lock"} == before


def test_run_refuses_a_bad_task_config_before_any_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nfactory = "no-colon"\n[methods.fedavg]\nrounds = 1\n')
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "--task", str(bad), "--out", str(out)])
    assert result.exit_code != 0 and "expected module:function" in result.output and not out.exists()


def test_the_python_api_example_runs() -> None:
    import runpy

    example = runpy.run_path(str(EXAMPLES / "python_api.py"))
    results = example["main"](3)
    assert set(results) == {"derelayl", "fedavg (C = 0.25)"} and all(0 <= a <= 1 for a in results.values())


def test_a_node_given_a_task_config_starts_from_the_genesis_run_makes(tmp_path: Path) -> None:
    from derelayl.node.runner import DataSpec, genesis_digest

    path = _config(tmp_path)
    out = tmp_path / "run"
    args = ["run", "--task", str(path), "--preset", "minimal", "--seed", "5", "--rounds", "1", "--out", str(out)]
    assert CliRunner().invoke(app, [*args, "--quiet"]).exit_code == 0
    spec = DataSpec.parse(f"{path}:2/3", split_seed=5, alpha=0.5)
    assert spec.task == str(path.resolve()) and spec.shard == 2
    assert (out / "models" / f"{genesis_digest(spec).hex()}.safetensors").exists()
    setup, meta = spec.learning()
    assert meta["task"] == "plugged" and len(setup.split.participants) == 3
    with pytest.raises(ConfigError, match=r"FILE\.toml:I/N"):
        DataSpec.parse("cifar:0/3", 5, 0.5)
    with pytest.raises(ConfigError, match="cannot read config"):
        DataSpec.parse(f"{tmp_path / 'nope.toml'}:0/3", 5, 0.5)
