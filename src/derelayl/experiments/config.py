"""Experiment configs (TOML), validated in one place: unknown keys and bad values are
``ConfigError``s that name the key. ``ExperimentConfig.resolved()`` is what gets written
beside the results.

Layout (see ``experiments/digits_dirichlet.toml``)::

    name, seed
    [data]       dataset (a built-in name or a plugin: module:function, file.py:function),
                 preprocess, test_fraction, split_seed, participants, partition,
                 alpha, shards_per_participant, min_size, [data.options] (dataset generator)
    [model]      hidden, activation, init_seed; or factory (a plugin) and init_seed
    [train]      lr, batch_size, local_epochs, momentum, weight_decay, optimizer (sgd, adam, a plugin)
    [methods.fedavg] rounds, fraction (clients per round, 1 = all)   [methods.local_only] rounds
    [methods.centralized] epochs     [methods.gossip] rounds | budget
    [methods.derelayl] preset, rounds | budget, max_rounds, fhe (encrypted scoring; model
                 activation "quad"), [methods.derelayl.params]
    [[variants]] name, method (derelayl | fedavg | gossip), prox_mu, local_epochs, lr, momentum;
                 DeRelayL only: merge_top_k, soup (every trainer starts from the average of
                 all live models; the variant is read as that average), preset, [params]
    [adversaries] share of participants of each dishonest kind (free_rider, copier, label_flip,
                 backdoor, lying_tester): they act so in DeRelayL and FedAvg runs

``budget = "fedavg"`` runs a method until it has moved as many bytes as FedAvg in total.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from derelayl.agents.kinds import KINDS
from derelayl.errors import ConfigError
from derelayl.protocol.copies import PREDICTIONS_NOT_ENCRYPTED
from derelayl.protocol.params import Params, preset
from derelayl.sim.config import usable_memory

__all__ = ["ExperimentConfig", "VariantConfig", "load_config", "memory_estimate", "parse_config", "relay_params"]


Spec = dict[str, tuple[Any, Any]]
"""Key -> (allowed type or types, default)."""


def _take(section: dict[str, Any], where: str, spec: Spec) -> dict[str, Any]:
    """Check keys and types of one TOML table against ``spec`` (name -> (type, default))."""
    if not isinstance(section, dict):
        raise ConfigError(f"[{where}] must be a table of key = value, got {type(section).__name__}")
    unknown = sorted(str(k) for k in set(section) - set(spec))
    if unknown:
        raise ConfigError(f"[{where}]: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(spec))}")
    out: dict[str, Any] = {}
    for key, (kind, default) in spec.items():
        value = section.get(key)
        value = default if value is None else value  # TOML has no null: None means "not given"
        if (value is not None and not isinstance(value, kind)) or (isinstance(value, bool) and kind is not bool):
            raise ConfigError(f"[{where}] {key} = {value!r}: expected {_name(kind)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"[{where}] {key} = {value!r}: must be a finite number")
        if isinstance(value, int) and abs(value) > 2**63:
            raise ConfigError(f"[{where}] {key} = {value!r}: out of range")
        out[key] = float(value) if kind == (int, float) and value is not None else value
    return out


def _name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def _positive(where: str, **values: Any) -> None:
    for key, value in values.items():
        if value is not None and value <= 0:
            raise ConfigError(f"[{where}] {key} must be positive, got {value!r}")


NUM = (int, float)

MAX_PARTICIPANTS = 10_000
MAX_ROUNDS = 1_000_000
MAX_WIDTH, MAX_LAYERS = 65_536, 16
_OPTIONS: dict[str, Spec] = {
    "digits": {},
    "breast_cancer": {},
    "synthetic": {
        "alpha": (NUM, 1.0),
        "beta": (NUM, 1.0),
        "users": (int, 20),
        "features": (int, 60),
        "classes": (int, 10),
        "seed": (int, 0),
    },
}
_OPTION_RANGES = {"users": (1, 100_000), "features": (1, 100_000), "classes": (2, 10_000), "seed": (0, 2**32 - 1)}
"""Inclusive bounds of the synthetic generator's integer options (``alpha``, ``beta``: >= 0)."""
_SAMPLES = {"digits": (1797, 64, 10), "breast_cancer": (569, 30, 2)}
"""Samples, features and classes of the bundled datasets (for the memory estimate)."""


def _in_range(where: str, key: str, value: Any, low: int, high: int) -> None:
    if value is not None and not low <= value <= high:
        raise ConfigError(f"[{where}] {key} = {value!r}: must be in {low:,}..{high:,}")


def _options(data: dict[str, Any]) -> dict[str, Any]:
    """The dataset generator's options, checked against what that dataset takes (a plugin's
    must be TOML scalars: the function checks them)."""
    name = data["dataset"]
    if _is_plugin(name):
        raw = data["options"] or {}
        bad = sorted(str(k) for k, v in raw.items() if not isinstance(v, (str, int, float, bool)))
        if bad:
            raise ConfigError(f"[data.options]: {', '.join(bad)} must be numbers, strings or booleans for a plugin")
        return dict(raw)
    if name not in _OPTIONS:
        raise ConfigError(f"[data] dataset = {name!r}: choose from {', '.join(_OPTIONS)}")
    raw = data["options"] or {}
    if raw and not _OPTIONS[name]:
        raise ConfigError(f"[data.options]: dataset {name!r} takes no options, got {', '.join(sorted(raw))}")
    options = _take(raw, "data.options", _OPTIONS[name])
    for key, (low, high) in _OPTION_RANGES.items():
        if key in options:
            _in_range("data.options", key, options[key], low, high)
    for key in ("alpha", "beta"):
        if key in options and options[key] < 0:
            raise ConfigError(f"[data.options] {key} = {options[key]!r}: must be >= 0")
    return {k: v for k, v in options.items() if k in raw and v is not None}


def memory_estimate(config: ExperimentConfig) -> int:
    """Bytes an experiment needs at its peak, from its sizes (an upper estimate): ~550 MB of
    interpreter, PyTorch and scikit-learn; the dataset (float64 while preprocessed, float32
    copies for the split and the shards); and, per model a method keeps (gossip keeps one per
    participant, the relay one per live model and trainer, FedAvg two per
    participant at most) 8 bytes per parameter (weights and a flat copy), and 16 for the few being
    trained at once (weights, gradient, optimizer state, update). Measured: 20 x MLP 64-64-10 peaked
    at 534 MiB (estimate 555), 60 x MLP 64-1024-1024-10 at 1,478 MiB (estimate 1,790)."""
    data = config.data
    if _is_plugin(data["dataset"]) or config.model.get("factory"):
        return 550 * 2**20  # a plugin's sizes are known only once it has run
    samples, features, classes = config.sizes()
    widths = [features, *(config.model["hidden"] or []), classes]
    parameters = sum(a * b + b for a, b in itertools.pairwise(widths))
    models = 2 * data["participants"] + 16
    return 550 * 2**20 + 24 * samples * features + 8 * parameters * models + 16 * parameters * 4


@dataclass(frozen=True)
class VariantConfig:
    name: str
    method: str = "derelayl"
    merge_top_k: int = 1
    soup: bool = False
    prox_mu: float = 0.0
    local_epochs: int | None = None
    lr: float | None = None
    momentum: float | None = None
    preset: str = "reference"
    params: dict[str, Any] = field(default_factory=dict)

    def protocol_params(self) -> Params:
        return relay_params(self.preset, self.params)


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    seed: int
    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    methods: dict[str, dict[str, Any]]
    variants: tuple[VariantConfig, ...]
    adversaries: dict[str, float] = field(default_factory=dict)

    def sizes(self) -> tuple[int, int, int]:
        """Samples (at most), features and classes of the configured dataset."""
        if self.data["dataset"] in _SAMPLES:
            return _SAMPLES[self.data["dataset"]]
        o = {**{k: d for k, (_, d) in _OPTIONS["synthetic"].items()}, **(self.data["options"] or {})}
        return o["users"] * 440, o["features"], o["classes"]

    def with_seed(self, seed: int) -> ExperimentConfig:
        """This config with ``seed`` as both the split seed and the training seed."""
        return dataclasses.replace(self, seed=seed, data={**self.data, "split_seed": seed})

    def resolved(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "data": self.data,
            "model": self.model,
            "train": self.train,
            "methods": self.methods,
            "variants": [asdict(v) for v in self.variants],
            "adversaries": self.adversaries,
        }


_DATA: Spec = {
    "dataset": (str, "digits"),
    "preprocess": (str, "standardize"),
    "test_fraction": (NUM, 0.2),
    "split_seed": (int, 0),
    "participants": (int, 20),
    "partition": (str, "dirichlet"),
    "alpha": (NUM, None),
    "shards_per_participant": (int, None),
    "min_size": (int, None),
    "options": (dict, None),
}
_MODEL: Spec = {
    "hidden": (list, [64]),
    "activation": (str, "relu"),
    "init_seed": (int, 0),
    "factory": (str, None),
}
_TRAIN: Spec = {
    "lr": (NUM, 0.05),
    "batch_size": (int, 32),
    "local_epochs": (int, 1),
    "momentum": (NUM, 0.0),
    "weight_decay": (NUM, 0.0),
    "optimizer": (str, "sgd"),
}
_METHODS: dict[str, Spec] = {
    "fedavg": {"rounds": (int, 30), "fraction": (NUM, 1.0)},
    "local_only": {"rounds": (int, 30)},
    "centralized": {"epochs": (int, 30)},
    "gossip": {"rounds": (int, None), "budget": ((str, int), None), "max_rounds": (int, 2000)},
    "derelayl": {
        "preset": (str, "reference"),
        "rounds": (int, None),
        "budget": ((str, int), None),
        "max_rounds": (int, 2000),
        "params": (dict, None),
        "fhe": (bool, False),
    },
}
_VARIANT: Spec = {
    "name": (str, None),
    "method": (str, "derelayl"),
    "merge_top_k": (int, 1),
    "soup": (bool, False),
    "prox_mu": (NUM, 0.0),
    "local_epochs": (int, None),
    "lr": (NUM, None),
    "momentum": (NUM, None),
    "preset": (str, "reference"),
    "params": (dict, None),
}


def _budgeted(method: dict[str, Any], where: str) -> None:
    if method["rounds"] is None and method["budget"] is None:
        raise ConfigError(f'[{where}] needs rounds = N or budget = "fedavg" (or a number of bytes)')
    if method["rounds"] is not None and method["budget"] is not None:
        raise ConfigError(f"[{where}] give rounds or budget, not both")
    budget = method["budget"]
    if isinstance(budget, str) and budget != "fedavg":
        raise ConfigError(f'[{where}] budget = {budget!r}: expected "fedavg" or a number of bytes')
    _positive(
        where,
        rounds=method["rounds"],
        budget=budget if isinstance(budget, int) else None,
        max_rounds=method["max_rounds"],
    )


def parse_config(raw: dict[str, Any], base: Path | None = None) -> ExperimentConfig:
    """``base``: the config's folder, which ``file.py:function`` names are relative to (they are
    made absolute here, so the resolved config names the same files from anywhere)."""
    if not isinstance(raw, dict):
        raise ConfigError("an experiment config is a TOML document of tables")
    top = _take(
        {k: v for k, v in raw.items() if not isinstance(v, (dict, list))},
        "top level",
        {"name": (str, "experiment"), "seed": (int, 0)},
    )
    tables = {k for k, v in raw.items() if isinstance(v, (dict, list))}
    unknown = sorted(tables - {"data", "model", "train", "methods", "variants", "adversaries"})
    if unknown:
        raise ConfigError(
            f"unknown table(s) {', '.join(unknown)}; allowed: data, model, train, methods, variants, adversaries"
        )
    data = _take(raw.get("data", {}), "data", _DATA)
    if _is_plugin(data["dataset"]):
        data["dataset"] = _plugin_name("data", "dataset", data["dataset"], base)
    _positive("data", test_fraction=data["test_fraction"], participants=data["participants"], alpha=data["alpha"])
    _in_range("data", "participants", data["participants"], 1, MAX_PARTICIPANTS)
    _in_range("data", "split_seed", data["split_seed"], 0, 2**32 - 1)
    data["options"] = _options(data) or None
    if data["test_fraction"] >= 1:
        raise ConfigError(f"[data] test_fraction must be below 1, got {data['test_fraction']}")
    model = _take(raw.get("model", {}), "model", _MODEL)
    if model["factory"] is not None:
        model["factory"] = _plugin_name("model", "factory", model["factory"], base)
        given = sorted(k for k in ("hidden", "activation") if raw.get("model", {}).get(k) is not None)
        if given:
            raise ConfigError(f"[model]: give factory or {', '.join(given)}, not both")
        model.update(hidden=None, activation=None)
    hidden = model["hidden"] or [1]
    if not hidden or len(hidden) > MAX_LAYERS or not all(_is_int(h) and 0 < h <= MAX_WIDTH for h in hidden):
        raise ConfigError(
            f"[model] hidden must list 1..{MAX_LAYERS} layer widths, each in 1..{MAX_WIDTH:,}, got {hidden!r}"
        )
    train = _take(raw.get("train", {}), "train", _TRAIN)
    if train["optimizer"] not in ("sgd", "adam"):
        train["optimizer"] = _plugin_name("train", "optimizer", train["optimizer"], base, "sgd, adam or ")
    _positive("train", lr=train["lr"], batch_size=train["batch_size"], local_epochs=train["local_epochs"])
    _in_range("train", "local_epochs", train["local_epochs"], 1, 10_000)
    _in_range("train", "batch_size", train["batch_size"], 1, 1_000_000)
    methods_raw = raw.get("methods", {})
    if not isinstance(methods_raw, dict) or not methods_raw:
        raise ConfigError(f"[methods] must list at least one of {', '.join(_METHODS)}")
    methods: dict[str, dict[str, Any]] = {}
    for name, section in methods_raw.items():
        if name not in _METHODS:
            raise ConfigError(f"[methods.{name}]: unknown method; choose from {', '.join(_METHODS)}")
        methods[name] = _take(section, f"methods.{name}", _METHODS[name])
        if name in ("gossip", "derelayl"):
            _budgeted(methods[name], f"methods.{name}")
        else:
            _positive(f"methods.{name}", **methods[name])
            if not methods[name].get("fraction", 1.0) <= 1:
                raise ConfigError(
                    f"[methods.{name}] fraction = {methods[name]['fraction']!r}: the share of clients per round, "
                    "in (0, 1]"
                )
        for key in ("rounds", "epochs", "max_rounds"):
            _in_range(f"methods.{name}", key, methods[name].get(key), 1, MAX_ROUNDS)
    needs_fedavg = [n for n, m in methods.items() if m.get("budget") == "fedavg"]
    if needs_fedavg and "fedavg" not in methods:
        raise ConfigError(f'budget = "fedavg" in {", ".join(needs_fedavg)} needs [methods.fedavg]')
    if "derelayl" in methods:
        rules = _check_params(methods["derelayl"]["preset"], methods["derelayl"]["params"] or {}, "methods.derelayl")
        if methods["derelayl"]["fhe"] and rules.compares_predictions:
            raise ConfigError(f"[methods.derelayl] {PREDICTIONS_NOT_ENCRYPTED}")
        if methods["derelayl"]["fhe"] and (model["activation"] != "quad" or len(hidden) != 1):
            raise ConfigError(
                '[methods.derelayl] fhe = true needs [model] activation = "quad" and one hidden layer '
                f"(got activation {model['activation']!r}, hidden {model['hidden']!r})"
            )
    variants = []
    if not isinstance(raw.get("variants", []), list):
        raise ConfigError("[[variants]] must be an array of tables")
    for i, section in enumerate(raw.get("variants", [])):
        if not isinstance(section, dict):
            raise ConfigError(f"[[variants]] #{i + 1} must be a table")
        v = _take(section, f"variants #{i + 1}", _VARIANT)
        if not v["name"]:
            raise ConfigError(f"[[variants]] #{i + 1} needs a name")
        if v["method"] not in ("derelayl", "fedavg", "gossip"):
            raise ConfigError(f"[variants {v['name']}] method must be derelayl, fedavg or gossip, got {v['method']!r}")
        if v["method"] not in methods:
            raise ConfigError(f"[variants {v['name']}] varies {v['method']}, which needs [methods.{v['method']}]")
        if v["method"] != "derelayl" and (
            v["merge_top_k"] != 1 or v["soup"] or v["preset"] != "reference" or v["params"]
        ):
            raise ConfigError(f"[variants {v['name']}] merge_top_k, soup, preset and params apply to derelayl only")
        if v["soup"] and v["merge_top_k"] != 1:
            raise ConfigError(f"[variants {v['name']}] soup merges every live model: leave merge_top_k out")
        _positive(f"variants {v['name']}", merge_top_k=v["merge_top_k"], local_epochs=v["local_epochs"], lr=v["lr"])
        _in_range(f"variants {v['name']}", "local_epochs", v["local_epochs"], 1, 10_000)
        _in_range(f"variants {v['name']}", "merge_top_k", v["merge_top_k"], 1, MAX_PARTICIPANTS)
        if v["prox_mu"] < 0:
            raise ConfigError(f"[variants {v['name']}] prox_mu must be >= 0")
        _check_params(v["preset"], v["params"] or {}, f"variants {v['name']}")
        variants.append(VariantConfig(**{**v, "params": v["params"] or {}}))
    names = [v.name for v in variants]
    if len(set(names)) != len(names) or set(names) & set(methods):
        raise ConfigError("variant names must be unique and differ from method names")
    _in_range("top level", "seed", top["seed"], 0, 2**32 - 1)
    adversaries = _take(raw.get("adversaries", {}), "adversaries", {k: (NUM, None) for k in KINDS})
    adversaries = {k: v for k, v in adversaries.items() if v is not None}
    for kind, share in adversaries.items():
        if not 0 <= share <= 1:
            raise ConfigError(f"[adversaries] {kind} = {share!r}: a share of participants, in 0..1")
    if sum(adversaries.values()) > 1:
        raise ConfigError(f"[adversaries]: shares add up to {sum(adversaries.values())}, above 1")
    config = ExperimentConfig(top["name"], top["seed"], data, model, train, methods, tuple(variants), adversaries)
    need, have = memory_estimate(config), usable_memory()
    if need > have:
        raise ConfigError(
            f"this experiment needs about {need / 2**30:.1f} GiB (participants, model and dataset sizes); "
            f"this machine has {have / 2**30:.1f} GiB to spare: make it smaller"
        )
    return config


def _is_plugin(name: str) -> bool:
    return ":" in name


def _plugin_name(table: str, key: str, name: str, base: Path | None, choices: str = "") -> str:
    """A plugin name checked for form, with a relative ``file.py`` part made absolute (so the
    resolved config names the same file from anywhere); the code is loaded only when the
    experiment runs."""
    where, _, attr = name.partition(":")
    if name.count(":") != 1 or not where or not attr.isidentifier():
        raise ConfigError(f"[{table}] {key} = {name!r}: expected {choices}module:function or file.py:function")
    if where.endswith(".py") and base is not None and not Path(where).is_absolute():
        return f"{(base / where).resolve()}:{attr}"
    return name


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def relay_params(preset_name: str, params: dict[str, Any]) -> Params:
    """A preset with a config's ``params`` on top; money amounts are in coins, as in simulate
    configs and on the command line (``lineage_reward = 1`` is one coin)."""
    from derelayl.sim.config import protocol_overrides

    return Params.from_dict(protocol_overrides(params, "params."), base=preset(preset_name))


def _check_params(preset_name: str, params: dict[str, Any], where: str) -> Params:
    """The relay's rules (``relay_params``); a bad value names ``where`` it was given."""
    try:
        return relay_params(preset_name, params)
    except ConfigError as exc:
        raise ConfigError(f"[{where}] {exc}") from exc


def load_config(path: Path) -> ExperimentConfig:
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    try:
        return parse_config(raw, base=path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
