"""``derelayl compare``: DeRelayL against the federated baselines people would pick, each tuned
on the same grid, at equal bytes and at equal compute, over seeds.

Methods: the faithful relay and variants within the protocol (``RELAYS``); FedAvg with client
sampling (McMahan et al.'s fraction C, all clients at C = 1); FedProx (FedAvg with a proximal
term); SCAFFOLD (control variates); gossip learning. Every method gets the same tuning budget:
the learning rate and local epochs of ``GRID``, crossed with one axis of its own with four
values (``AXES``).

Budgets are those of full FedAvg running the config's ``[methods.fedavg] rounds`` (30 by
default) at one local epoch: ``bytes`` = what it moves (2 x participants x model x rounds),
``samples`` = what it trains on (rounds x the training pool). Each run goes on until it has
reached both, and is read at each: its accuracy at the last round within that budget.

Tuning uses seeds of its own (split and training), disjoint from the reported ones, and picks
per method and budget the grid point with the best accuracy averaged over the last
``TUNE_LAST`` rounds within the budget. The reported seeds then run the picked points; the
table gives the mean and 95% interval over them of the accuracy at the last round within
budget (never a single run), and the paired differences between the relay (faithful, and
the variant that tuned best) and the best baseline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch

from derelayl.agents.relay import MERGE_ALL
from derelayl.baselines import Budget, Curve, run_centralized, run_fedavg, run_gossip
from derelayl.baselines.scaffold import run_scaffold
from derelayl.errors import ConfigError
from derelayl.experiments.config import ExperimentConfig, relay_params
from derelayl.folders import FolderLock, write_atomic
from derelayl.learning.serialization import param_bytes
from derelayl.learning.setup import LearningSetup
from derelayl.stats import interval

__all__ = ["AXES", "GRID", "METHODS", "budgets", "grid", "label", "run_compare"]

RELAYS: dict[str, dict[str, object]] = {
    "derelayl": {},
    "derelayl-cases": {"k": 4},
    "derelayl-pooled": {"k": 4, "pooled_cases": True},
    "derelayl-prox": {"k": 4},
    "derelayl-merge": {"k": 4},
    "derelayl-soup": {"k": 4},
}
"""The faithful relay and variants any participant could run within the protocol (protocol
parameters on top of the config's): more test cases per tester; several testers scoring the
pool of their cases (median); a proximal term toward the parent in local training; a trainer
that starts from the average of its parent and the best other live models (relay + merge,
each extra model downloaded and counted); relay + soup: every trainer starts from the average of
all live models, the network's model is that average, and a round takes ``cap`` participants.
"""
BASELINES = ("fedavg", "fedprox", "scaffold", "gossip")
METHODS = (*RELAYS, *BASELINES)
GRID: dict[str, tuple[float, ...]] = {"lr": (0.05, 0.1, 0.2, 0.4), "local_epochs": (1, 5, 10)}
AXES: dict[str, tuple[str, tuple[float, ...]]] = {
    "derelayl": ("k", (1, 2, 4, 8)),  # trainers per model owner
    "derelayl-cases": ("test_cases", (100, 200, 400, 800)),  # per tester
    "derelayl-pooled": ("testers", (2, 3, 5, 7)),  # scoring the pool of their cases
    "derelayl-prox": ("mu", (0.001, 0.01, 0.1, 1.0)),
    "derelayl-merge": ("merge_top_k", (2, 3, 4, 6)),  # live models averaged into the parent
    "derelayl-soup": ("cap", (3, 4, 6, 10)),  # owners + trainers per round; every live model merged and read averaged
    "fedavg": ("fraction", (0.1, 0.25, 0.5, 1.0)),  # clients per round
    "fedprox": ("mu", (0.001, 0.01, 0.1, 1.0)),  # proximal term, at PROX_FRACTION of the clients
    "scaffold": ("fraction", (0.1, 0.25, 0.5, 1.0)),
    "gossip": ("fanout", (1, 2, 4, 8)),  # peers each participant sends to per round
}
PROX_FRACTION = 0.25
TUNE_LAST = 5
MAX_ROUNDS = 5000
BUDGETS = ("bytes", "samples")
Progress = Callable[[str], None]


QUICK = 2
"""``--grid quick``: the first two values of each list (a try-out, not a fair tuning)."""


def grid(method: str, size: str = "full") -> list[dict[str, float]]:
    """The grid points of ``method``: the same count for every method."""
    cut = QUICK if size == "quick" else None
    axis, values = AXES[method]
    return [
        {"lr": lr, "local_epochs": int(e), axis: v}
        for lr in GRID["lr"][:cut]
        for e in GRID["local_epochs"][:cut]
        for v in values[:cut]
    ]


def budgets(config: ExperimentConfig, setup: LearningSetup) -> dict[str, int]:
    rounds = config.methods.get("fedavg", {}).get("rounds", 30)
    n = len(setup.split.participants)
    pool = sum(len(p) for p in setup.split.participants)
    return {"bytes": 2 * n * param_bytes(setup.init) * rounds, "samples": rounds * pool, "fedavg_rounds": rounds}


def _training(setup: LearningSetup, **changes: Any) -> LearningSetup:
    """``setup`` with its training configuration changed."""
    return dataclasses.replace(setup, train_config=dataclasses.replace(setup.train_config, **changes))


@functools.lru_cache(maxsize=4)
def seeded_setup(config_json: str, seed: int) -> LearningSetup:
    """The learning set-up of a (resolved, JSON) config with ``seed`` as split and training seed."""
    from derelayl.experiments.config import parse_config
    from derelayl.experiments.runner import build_experiment_setup

    try:
        return build_experiment_setup(parse_config(json.loads(config_json)).with_seed(seed))
    except ConfigError as exc:
        raise ConfigError(f"seed {seed}: {exc}") from exc


def run_one(config_json: str, method: str, point: dict[str, float], seed: int, stop: dict[str, int]) -> dict[str, Any]:
    """One method at one grid point and seed, run until both budgets are reached."""
    torch.set_num_threads(1)
    base = seeded_setup(config_json, seed)
    setup = _training(base, lr=point["lr"], local_epochs=int(point["local_epochs"]))
    budget = Budget(bytes=stop["bytes"], samples=stop["samples"], max_rounds=MAX_ROUNDS)
    curve = _curve(setup, method, point, seed, budget, json.loads(config_json))
    row: dict[str, Any] = {"method": method, "point": point, "seed": seed, "rounds": curve.final.round}
    for kind in BUDGETS:
        # (centralized moves the data before its first round: nothing of it fits a small byte budget)
        within = [p for p in curve.points if getattr(p, kind) <= stop[kind]] or curve.points[:1]
        row[kind] = within[-1].accuracy
        row[f"tune_{kind}"] = float(np.mean([p.accuracy for p in within[-TUNE_LAST:]]))
        row[f"rounds_{kind}"] = within[-1].round
        gaps = [
            p.extra["best_committed"] - p.extra.get("first_ranked", p.accuracy)
            for p in within
            if p.extra.get("best_committed") is not None
        ]
        if gaps:  # the relay: how far the protocol's first-ranked model was below the best it could have picked
            row[f"selection_gap_{kind}"] = float(np.mean(gaps))
            # and the share of all training that went into the first-ranked model's lineage
            row[f"lineage_share_{kind}"] = within[-1].extra["lineage_samples"] / max(within[-1].samples, 1)
    row["curve"] = [[p.bytes, p.samples, p.accuracy] for p in curve.points]
    if "bytes_breakdown" in curve.info:
        row["bytes_breakdown"] = curve.info["bytes_breakdown"]
    return row


def _curve(
    setup: LearningSetup, method: str, point: dict[str, float], seed: int, stop: Budget, raw: dict[str, Any]
) -> Curve:
    from derelayl.experiments.relay import run_derelayl

    if method in RELAYS:
        relay = raw.get("methods", {}).get("derelayl", {})
        axis, _ = AXES[method]
        given = {**(relay.get("params") or {}), **RELAYS[method]}
        merge = int(point[axis]) if axis == "merge_top_k" else 1
        soup = method == "derelayl-soup"
        if soup:
            merge = MERGE_ALL
        if axis == "mu":
            setup = _training(setup, prox_mu=point["mu"])
        elif axis != "merge_top_k":
            given[axis] = int(point[axis])
        params = relay_params(relay.get("preset", "reference"), given)
        return run_derelayl(setup, params, seed, stop=stop, merge_top_k=merge, soup=soup)
    if method == "scaffold":
        return run_scaffold(setup, seed, stop, fraction=point["fraction"])
    if method == "fedavg":
        return run_fedavg(setup, 0, seed, fraction=point["fraction"], stop=stop)
    if method == "fedprox":
        return run_fedavg(_training(setup, prox_mu=point["mu"]), 0, seed, fraction=PROX_FRACTION, stop=stop)
    if method == "gossip":
        return run_gossip(setup, seed, fanout=int(point["fanout"]), stop=stop)
    if method == "centralized":
        epochs = -(-stop.samples // len(setup.train_pool()[1])) if stop.samples else 1
        return run_centralized(setup, epochs, seed)
    raise ConfigError(f"unknown method {method!r}")


def check_options(
    seeds: tuple[int, ...], tune_seeds: tuple[int, ...], workers: int, methods: tuple[str, ...], size: str = "full"
) -> None:
    if size not in ("full", "quick"):
        raise ConfigError(f"--grid must be full or quick, got {size!r}")
    if set(seeds) & set(tune_seeds):
        raise ConfigError(f"--tune-seeds must differ from --seeds (both hold {sorted(set(seeds) & set(tune_seeds))})")
    if not 1 <= workers <= 64:
        raise ConfigError(f"--workers must be in 1..64, got {workers}")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or "derelayl" not in methods:
        raise ConfigError(
            f"--methods: {'unknown ' + ', '.join(unknown) if unknown else 'derelayl is missing'}; "
            f"choose from {', '.join(METHODS)} (derelayl always)"
        )


def run_compare(
    config: ExperimentConfig,
    out_dir: Path,
    *,
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
    tune_seeds: tuple[int, ...] = (100, 101),
    methods: tuple[str, ...] = METHODS,
    workers: int | None = None,
    size: str = "full",
    cluster: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """``cluster``: a Dask scheduler's address (``tcp://host:8786``): the runs go there instead
    of to ``workers`` local processes."""
    workers = workers or os.cpu_count() or 1
    check_options(seeds, tune_seeds, workers, methods, size)
    raw = json.dumps(config.resolved())
    for seed in (*tune_seeds, *seeds):  # a split that cannot be made stops here, before any file
        seeded_setup(raw, seed)
    with _executor(cluster or workers) as pool, FolderLock(out_dir, "derelayl compare"):
        return _run(config, out_dir, seeds, tune_seeds, methods, pool, size, progress or (lambda _: None))


def _run(
    config: ExperimentConfig,
    out_dir: Path,
    seeds: tuple[int, ...],
    tune_seeds: tuple[int, ...],
    methods: tuple[str, ...],
    pool: Executor | None,
    size: str,
    say: Progress,
) -> dict[str, Any]:
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(config.resolved())
    stop = budgets(config, seeded_setup(raw, seeds[0]))
    say(
        f"budgets: {stop['bytes'] / 1e6:.1f} MB and {stop['samples']:,} training samples "
        f"(full FedAvg, {stop['fedavg_rounds']} rounds)"
    )
    tuning = [(m, p, s) for m in methods for p in grid(m, size) for s in tune_seeds]
    tuned = _map(raw, tuning, stop, pool, say, "tuning")
    picked = {kind: {m: _pick(tuned, m, kind) for m in methods} for kind in BUDGETS}
    for kind in BUDGETS:
        say(f"picked at equal {kind}: " + "; ".join(f"{m} {label(p)}" for m, p in picked[kind].items()))
    final_jobs = {(m, json.dumps(picked[k][m], sort_keys=True)) for k in BUDGETS for m in methods}
    lrs = [{"lr": lr, "local_epochs": 1} for lr in GRID["lr"][: QUICK if size == "quick" else None]]
    reference = _map(raw, [("centralized", p, s) for p in lrs for s in tune_seeds], stop, pool, say, "centralized")
    picked_central = _pick(reference, "centralized", "samples")
    jobs = [(m, json.loads(p), s) for m, p in sorted(final_jobs) for s in seeds]
    jobs += [("centralized", picked_central, s) for s in seeds]
    runs = _map(raw, jobs, stop, pool, say, "reported seeds")
    tables = {kind: _table(runs, tuned, picked[kind], kind, methods) for kind in BUDGETS}
    central = interval([r["samples"] for r in runs if r["method"] == "centralized"])
    results = {
        "config": config.resolved(),
        "seeds": list(seeds),
        "tune_seeds": list(tune_seeds),
        "budgets": stop,
        "grid_size": size,
        "grid": {m: grid(m, size) for m in methods},
        "prox_fraction": PROX_FRACTION,
        "tune_last_rounds": TUNE_LAST,
        "picked": picked,
        "tables": tables,
        "centralized": {"point": picked_central, "accuracy": central},
        "tuning": [_strip(r) for r in tuned],
        "runs": runs,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_atomic(out_dir / "results.json", json.dumps(results, indent=1) + "\n")
    from derelayl.experiments.compare_report import figure, render

    figure(results, out_dir / "compare.png")
    write_atomic(out_dir / "report.md", render(results))
    return results


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "curve"}


Job = tuple[str, dict[str, float], int]
"""(method, grid point, seed)"""


def _map(
    raw: str, jobs: list[Job], stop: dict[str, int], pool: Executor | None, say: Progress, what: str
) -> list[dict[str, Any]]:
    """Run ``jobs`` on ``pool`` (in this process without one); results in job order. Every
    job is a pure function of its arguments, so where it runs changes nothing."""
    t0 = time.perf_counter()
    out: list[dict[str, Any] | None] = [None] * len(jobs)
    step = max(1, len(jobs) // 10)

    def report(done: int) -> None:
        if done % step == 0 or done == len(jobs):
            say(f"{what}: {done}/{len(jobs)} runs, {time.perf_counter() - t0:.0f} s")

    if pool is None:
        for i, (m, p, s) in enumerate(jobs):
            out[i] = run_one(raw, m, p, s, stop)
            report(i + 1)
    else:
        futures = {pool.submit(run_one, raw, m, p, s, stop): i for i, (m, p, s) in enumerate(jobs)}
        for done, future in enumerate(as_completed(futures), 1):
            out[futures[future]] = future.result()
            report(done)
    return [r for r in out if r is not None]


@contextlib.contextmanager
def _executor(workers: int | str) -> Iterator[Executor | None]:
    """None for one local worker (this process), a process pool for more, or a Dask cluster's
    executor for an address: connected before anything is written."""
    if workers == 1:
        yield None
        return
    if isinstance(workers, int):
        import multiprocessing

        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            yield pool
        finally:  # on an error, drop the runs not yet started instead of waiting for them all
            pool.shutdown(wait=True, cancel_futures=True)
        return
    try:
        from distributed import Client
    except ImportError as exc:
        raise ConfigError("--cluster needs dask's distributed (pip install 'derelayl[cluster]')") from exc
    try:
        client = Client(workers, timeout=10)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(f"--cluster {workers}: no Dask scheduler answers there ({type(exc).__name__})") from exc
    try:
        with client.get_executor(pure=False) as pool:
            yield pool
    finally:
        client.close()


def _pick(rows: list[dict[str, Any]], method: str, kind: str) -> dict[str, float]:
    """The grid point with the best tuning accuracy (mean over tuning seeds) at ``kind``;
    ties go to the earlier point."""
    scores: dict[str, list[float]] = {}
    for r in rows:
        if r["method"] == method:
            scores.setdefault(json.dumps(r["point"], sort_keys=True), []).append(r[f"tune_{kind}"])
    best = max(scores, key=lambda p: float(np.mean(scores[p])))
    return dict(json.loads(best))


def _tuned_score(tuned: list[dict[str, Any]], method: str, point: dict[str, float], kind: str) -> float:
    return float(np.mean([r[f"tune_{kind}"] for r in tuned if r["method"] == method and r["point"] == point]))


def label(point: dict[str, float], grid: list[dict[str, float]] | None = None) -> str:
    """The point's values; with its method's ``grid``, a value at an end of its axis is
    starred (a wider grid might do better there)."""
    names = {"local_epochs": "epochs", "fraction": "C", "mu": "μ"}
    out = []
    for k, v in point.items():
        values = sorted({g[k] for g in grid or []})
        edge = len(values) > 1 and v in (values[0], values[-1])
        out.append(f"{names.get(k, k)} {v:g}{'*' if edge else ''}")
    return ", ".join(out)


def _table(
    runs: list[dict[str, Any]],
    tuned: list[dict[str, Any]],
    picked: dict[str, dict[str, float]],
    kind: str,
    methods: tuple[str, ...],
) -> list[dict[str, Any]]:
    """Per method at its picked point: accuracy at the last round within the ``kind`` budget,
    mean and interval over the reported seeds; then the paired differences with the best
    baseline (the best on the reported seeds: the strongest opponent) of the faithful relay and
    of the relay variant that tuned best (chosen on the tuning seeds, never the reported ones)."""
    rows = []
    per_seed: dict[str, dict[int, float]] = {}
    for m in methods:
        mine = [r for r in runs if r["method"] == m and r["point"] == picked[m]]
        per_seed[m] = {r["seed"]: r[kind] for r in mine}
        row: dict[str, Any] = {
            "method": m,
            "point": picked[m],
            "accuracy": interval(list(per_seed[m].values())),
            "rounds": interval([r[f"rounds_{kind}"] for r in mine]),
        }
        if all(f"selection_gap_{kind}" in r for r in mine):
            row["selection_gap"] = interval([r[f"selection_gap_{kind}"] for r in mine])
            row["lineage_share"] = interval([r[f"lineage_share_{kind}"] for r in mine])
        rows.append(row)
    baselines = [r for r in rows if r["method"] in BASELINES]
    relays = [r for r in rows if r["method"] in RELAYS]
    if baselines:
        best = max(baselines, key=lambda r: r["accuracy"][0])
        top = max(relays, key=lambda r: _tuned_score(tuned, r["method"], r["point"], kind))
        for relay in dict.fromkeys(["derelayl", top["method"]]):
            seeds = sorted(per_seed[relay])
            diff = interval([per_seed[relay][s] - per_seed[best["method"]][s] for s in seeds])
            rows.append(
                {"method": f"{relay} − {best['method']}", "difference": diff, "relay": relay, "best": best["method"]}
            )
    return rows


def mean_curve(runs: list[dict[str, Any]], axis: int, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% half-width over runs of accuracy against bytes (``axis`` 0) or samples
    (1), each run's curve held constant between its points, on a common grid up to ``limit``."""
    xs = np.linspace(0, limit, 101)
    ys = []
    for r in runs:
        c = np.asarray(r["curve"], dtype=float)
        idx = np.searchsorted(c[:, axis], xs, side="right") - 1
        ys.append(c[np.clip(idx, 0, len(c) - 1), 2])
    a = np.asarray(ys)
    half = np.array([interval(list(col))[1] for col in a.T]) if len(a) > 1 else np.zeros(len(xs))
    return xs, a.mean(axis=0), half


def seconds(value: float) -> str:
    return f"{value / 60:.1f} min" if value >= 90 else f"{value:.0f} s"
