"""Run every method of an experiment on one ``LearningSetup`` and write the results folder:
``results.json``, ``split.json``, ``config.resolved.json``, figures and ``report.md``."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from derelayl.agents.adversaries import assign
from derelayl.agents.relay import MERGE_ALL
from derelayl.baselines import Curve, Point, run_centralized, run_fedavg, run_gossip, run_local_only
from derelayl.experiments.config import ExperimentConfig, VariantConfig, relay_params
from derelayl.experiments.relay import run_derelayl
from derelayl.folders import FolderLock, write_atomic
from derelayl.learning.plugin import resolve
from derelayl.learning.setup import LearningSetup, build_setup
from derelayl.learning.torch_models import TrainConfig

__all__ = ["build_experiment_setup", "run_experiment"]

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def build_experiment_setup(config: ExperimentConfig) -> LearningSetup:
    d, m, t = config.data, config.model, config.train
    options = {k: d[k] for k in ("alpha", "shards_per_participant", "min_size") if d[k] is not None}
    return build_setup(
        dataset=d["dataset"],
        model=m.get("factory"),
        participants=d["participants"],
        partition=d["partition"],
        test_fraction=d["test_fraction"],
        split_seed=d["split_seed"],
        hidden=tuple(m["hidden"] or ()),
        activation=m["activation"] or "relu",
        init_seed=m["init_seed"],
        partition_options=options,
        dataset_options=d["options"] or {},
        preprocessing=d["preprocess"],
        train_config=TrainConfig(
            lr=t["lr"],
            batch_size=t["batch_size"],
            local_epochs=t["local_epochs"],
            momentum=t["momentum"],
            weight_decay=t["weight_decay"],
            optimizer=t["optimizer"] if t["optimizer"] in ("sgd", "adam") else resolve(t["optimizer"]),
        ),
    )


def _budget(method: dict[str, Any], curves: dict[str, Curve]) -> int | None:
    budget = method.get("budget")
    if budget == "fedavg":
        return curves["fedavg"].final.bytes
    return None if budget is None else int(budget)


def _variant_train(base: TrainConfig, v: VariantConfig) -> TrainConfig:
    return dataclasses.replace(
        base,
        prox_mu=v.prox_mu,
        local_epochs=v.local_epochs if v.local_epochs is not None else base.local_epochs,
        lr=v.lr if v.lr is not None else base.lr,
        momentum=v.momentum if v.momentum is not None else base.momentum,
    )


def run_experiment(config: ExperimentConfig, out_dir: Path, progress: Progress | None = None) -> dict[str, Any]:
    with FolderLock(out_dir, "derelayl experiment"):
        return _run_locked(config, out_dir, progress)


def _run_locked(config: ExperimentConfig, out_dir: Path, progress: Progress | None) -> dict[str, Any]:
    torch.set_num_threads(1)  # deterministic results and a fair share of a shared machine
    say = progress or (lambda _: None)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    setup = build_experiment_setup(config)
    setup.split.save(out_dir / "split.json")
    write_atomic(out_dir / "config.resolved.json", json.dumps(config.resolved(), indent=2) + "\n")
    seed, methods = config.seed, config.methods
    curves: dict[str, Curve] = {}
    wall: dict[str, float] = {}

    def timed(name: str, job: Callable[[], Curve]) -> None:
        t0 = time.perf_counter()
        curves[name] = job()
        wall[name] = round(time.perf_counter() - t0, 3)
        final = _headline(curves[name])
        say(
            f"{name}: accuracy {final.accuracy:.3f} after {final.round} rounds, {final.bytes / 1e6:.2f} MB, "
            f"{wall[name]:.1f} s"
        )

    adversaries = config.adversaries or None
    kinds = _kinds(config, setup)
    if "fedavg" in methods:
        f = methods["fedavg"]
        timed("fedavg", lambda: run_fedavg(setup, f["rounds"], seed, kinds=kinds, fraction=f["fraction"]))
    if "centralized" in methods:
        timed("centralized", lambda: run_centralized(setup, methods["centralized"]["epochs"], seed))
    if "local_only" in methods:
        timed("local_only", lambda: run_local_only(setup, methods["local_only"]["rounds"], seed))
    if "gossip" in methods:
        g = methods["gossip"]
        timed("gossip", lambda: run_gossip(setup, seed, g["rounds"], _budget(g, curves), g["max_rounds"]))
    if "derelayl" in methods:
        r = methods["derelayl"]
        params = relay_params(r["preset"], r["params"] or {})
        timed(
            "derelayl",
            lambda: run_derelayl(
                setup,
                params,
                seed,
                rounds=r["rounds"],
                byte_budget=_budget(r, curves),
                max_rounds=r["max_rounds"],
                adversaries=adversaries,
                fhe=r["fhe"],
            ),
        )
    for v in config.variants:
        timed(v.name, lambda v=v: _run_variant(config, setup, v, curves))  # type: ignore[misc]
    results = _results(config, setup, curves, wall, time.perf_counter() - started)
    write_atomic(out_dir / "results.json", json.dumps(results, indent=1) + "\n")
    from derelayl.experiments.figures import write_figures
    from derelayl.experiments.report import write_report

    results["figures"] = write_figures(results, out_dir)
    write_report(results, out_dir)
    write_atomic(out_dir / "results.json", json.dumps(results, indent=1) + "\n")
    return results


def _kinds(config: ExperimentConfig, setup: LearningSetup) -> list[str] | None:
    """Each participant's behaviour under ``[adversaries]`` (None: all honest)."""
    return assign(len(setup.split.participants), config.adversaries, config.seed) if config.adversaries else None


def _run_variant(config: ExperimentConfig, setup: LearningSetup, v: VariantConfig, curves: dict[str, Curve]) -> Curve:
    """A method with changed training (and, for DeRelayL, protocol) settings, same budget."""
    train = _variant_train(setup.train_config, v)
    method, seed = config.methods[v.method], config.seed
    if v.method == "derelayl":
        return run_derelayl(
            setup,
            v.protocol_params(),
            seed,
            name=v.name,
            train_config=train,
            merge_top_k=MERGE_ALL if v.soup else v.merge_top_k,
            soup=v.soup,
            rounds=method["rounds"],
            byte_budget=_budget(method, curves),
            max_rounds=method["max_rounds"],
            adversaries=config.adversaries or None,
        )
    varied = dataclasses.replace(setup, train_config=train)
    if v.method == "fedavg":
        curve = run_fedavg(varied, method["rounds"], seed, kinds=_kinds(config, setup), fraction=method["fraction"])
    else:
        curve = run_gossip(varied, seed, method["rounds"], _budget(method, curves), method["max_rounds"])
    curve.method = v.name
    return curve


def _headline(curve: Curve) -> Point:
    """What a method is reported at: a method run to a byte budget stops at the first round
    that reaches it, usually past it, and is reported at its last round within it."""
    budget = curve.info.get("byte_budget")
    return curve.at_bytes(budget) if budget is not None and curve.final.bytes > budget else curve.final


def _results(
    config: ExperimentConfig, setup: LearningSetup, curves: dict[str, Curve], wall: dict[str, float], total: float
) -> dict[str, Any]:
    budget = curves["fedavg"].final.bytes if "fedavg" in curves else None
    summary = {}
    for name, curve in curves.items():
        final = _headline(curve)
        row: dict[str, Any] = {
            "rounds": final.round,
            "accuracy": final.accuracy,
            "bytes": final.bytes,
            "local_epochs": final.local_epochs,
            "samples": final.samples,
            "wall_seconds": wall[name],
        }
        if "groups" in curve.info:
            row["groups"] = curve.info["groups"]
        if final is not curve.final:  # the round that crossed the budget, for the record
            past = curve.final
            row["past_budget"] = {"round": past.round, "accuracy": past.accuracy, "bytes": past.bytes}
        summary[name] = row
    return {
        "name": config.name,
        "config": config.resolved(),
        "dataset": {
            "name": setup.dataset.name,
            "samples": len(setup.dataset),
            "train": int(setup.train_pool()[1].size),
            "test": len(setup.split.test),
            "model_parameters": sum(int(t.numel()) for t in setup.init.values()),
        },
        "fedavg_bytes": budget,
        "summary": summary,
        "methods": {name: curve.to_json() for name, curve in curves.items()},
        "wall_seconds": round(total, 3),
    }
