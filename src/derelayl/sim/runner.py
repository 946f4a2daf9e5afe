"""Run every (scheme, seed) of a config — on both cores when there are several — and write
summary.json, traces and figures.

Runs are independent processes (``multiprocessing``, fork): a run is single-threaded numpy
work, so two workers use the machine's two cores. Progress from workers comes back through
one shared counter of settled rounds.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from derelayl.folders import write_atomic
from derelayl.protocol.types import UNIT
from derelayl.sim.config import SimConfig
from derelayl.sim.engine import RunResult, run_one
from derelayl.sim.metrics import VERSION_BINS

__all__ = ["compare_table", "run_all", "summarise_run"]

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
"""(rounds settled over all runs, total rounds)"""

_counter: Any = None


def _init_worker(counter: Any) -> None:
    global _counter
    _counter = counter


def _work(job: tuple[SimConfig, str, int, Path | None, Path | None]) -> RunResult:
    config, scheme, seed, trace_dir, ledger_dir = job
    done = [0]

    def tick(r: int) -> None:
        with _counter.get_lock():
            _counter.value += r - done[0]
        done[0] = r

    return run_one(config, scheme, seed, trace_dir, ledger_dir, tick if _counter is not None else None)


def _tag(scheme: str, seed: int) -> str:
    return f"{scheme}-seed{seed}"


def run_all(
    config: SimConfig,
    out_dir: Path | None = None,
    ledger_dir: Path | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], dict[str, list[RunResult]]]:
    """Run everything; return (summary, results by scheme). Writes outputs if ``out_dir``."""
    start = time.perf_counter()
    jobs = config.jobs()
    single = len(jobs) == 1
    specs = []
    for scheme, seed in jobs:
        trace = None
        if config.traces and out_dir is not None:
            trace = out_dir if single else out_dir / "runs" / _tag(scheme, seed)
        ledger = None if ledger_dir is None else (ledger_dir if single else ledger_dir / _tag(scheme, seed))
        specs.append((config, scheme, seed, trace, ledger))
    total = config.rounds * len(jobs)
    workers = min(config.workers, len(jobs))
    if workers == 1:
        results = []
        for i, spec in enumerate(specs):
            results.append(run_one(*spec, on_round=_offset_progress(progress, i * config.rounds, total)))
    else:
        results = _run_pool(specs, workers, total, progress)
    by_scheme: dict[str, list[RunResult]] = {}
    for result in results:
        by_scheme.setdefault(result.scheme, []).append(result)
    summary = build_summary(config, by_scheme, time.perf_counter() - start)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if config.figures:
            from derelayl.sim.figures import write_figures

            summary["figures"] = write_figures(by_scheme, out_dir, config.version_rounds)
        summary["wall_seconds"] = round(time.perf_counter() - start, 3)
        write_atomic(out_dir / "summary.json", json.dumps(summary, indent=1, allow_nan=False) + "\n")
        if len(by_scheme) > 1:
            write_atomic(out_dir / "compare-schemes.md", compare_markdown(summary["comparison"]))
    return summary, by_scheme


def _offset_progress(progress: Progress | None, offset: int, total: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    report = progress

    def tick(r: int) -> None:
        report(offset + r, total)

    return tick


def _run_pool(specs: list[Any], workers: int, total: int, progress: Progress | None) -> list[RunResult]:
    ctx = mp.get_context("fork")
    counter = ctx.Value("q", 0)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(counter,)) as pool:
        pending = pool.map_async(_work, specs, chunksize=1)
        while not pending.ready():
            pending.wait(0.25)
            if progress is not None:
                progress(int(counter.value), total)
        results: list[RunResult] = pending.get()
    if progress is not None:
        progress(total, total)
    return results


# ---------------------------------------------------------------- summaries


def _num(values: Any, digits: int = 6) -> Any:
    """JSON-safe floats (NaN -> None), rounded to ``digits`` significant digits."""
    arr = np.asarray(values, dtype=np.float64)
    flat = [None if not np.isfinite(v) else float(f"{v:.{digits}g}") for v in arr.ravel()]
    if arr.ndim == 0:
        return flat[0]
    if arr.ndim == 1:
        return flat
    return [flat[i : i + arr.shape[1]] for i in range(0, len(flat), arr.shape[1])]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from derelayl.sim.metrics import spearman_rows

    return float(spearman_rows(a[None, :].astype(np.float64), b[None, :].astype(np.float64))[0])


def final_measures(run: RunResult) -> dict[str, Any]:
    m = run.metrics
    shares = m["version_shares"]
    settled = slice(min(10, shares.shape[0] - 1), None)  # after the warm-up of the first rounds
    joined = np.arange(run.first_hold.size) >= run.initial
    served = joined & (run.first_hold >= 0)
    waits = run.first_hold[served] - run.join_row[served]
    first = run.first_hold[: run.initial]
    return {
        "supply_coins": float((m["minted"][-1] - m["burned"][-1]) / UNIT),
        "gini": float(m["gini"][-1]),
        "covers_taker_bid": float(m["covers_bid"][-1]),
        "latest_share_mean": float(shares[settled, 0].mean()),
        "within_2_versions_share_mean": float(shares[settled, :3].sum(axis=1).mean()),
        "none_share_final": float(shares[-1, 12]),
        "spearman_reward_vs_winning_lineage_models": _spearman(run.reward, run.contribution),
        "initial_participants_without_model": int((first < 0).sum()),
        "round_all_initial_hold_a_model": int(first.max()) + 1 if (first >= 0).all() else None,
        "newcomers_joined": int(joined.sum()),
        "newcomers_served": int(served.sum()),
        "newcomer_wait_rounds_mean": float(waits.mean()) if waits.size else None,
        "newcomer_wait_rounds_p90": float(np.percentile(waits, 90)) if waits.size else None,
        **_sybil_measures(run),
    }


def _sybil_measures(run: RunResult) -> dict[str, Any]:
    """With a Sybil operator: its share of training slots and of all coins at the end."""
    if run.sybil is None or not run.sybil.any() or run.slots is None:
        return {}
    total = int(run.final_balances.sum())
    held = int(run.final_balances[: run.sybil.size][run.sybil].sum())
    return {
        "sybil_keys": int(run.sybil.sum()),
        "sybil_slot_share": float(run.slots[1] / max(int(run.slots.sum()), 1)),
        "sybil_coin_share": held / total if total else 0.0,
    }


def summarise_run(run: RunResult) -> dict[str, Any]:
    m = run.metrics
    coins = run.final_balances / UNIT
    q = np.percentile(coins, [10, 50, 90])
    minted, burned = m["minted"] / UNIT, m["burned"] / UNIT
    out: dict[str, Any] = {
        "scheme": run.scheme,
        "seed": run.seed,
        "wall_seconds": round(run.wall_seconds, 3),
        "balance_quantiles_coins": {
            "p10": float(q[0]),
            "p50": float(q[1]),
            "p90": float(q[2]),
            "min": float(coins.min()),
            "max": float(coins.max()),
        },
        "final": _clean(final_measures(run)),
        "per_round": {
            "round": list(range(1, minted.size + 1)),
            "minted_coins": _num(minted, 12),
            "burned_coins": _num(burned, 12),
            "circulating_coins": _num(minted - burned, 12),
            "gini": _num(m["gini"]),
            "covers_taker_bid_share": _num(m["covers_bid"]),
            "spearman_reward_vs_rounds_selected": _num(m["spearman"]),
            "newcomer_wait_rounds": _num(m["newcomer_wait"]),
            "participants": m["participants"].tolist(),
            "live_models": m["live_models"].tolist(),
        },
        "version_shares": {
            "columns": list(VERSION_BINS),
            "unit": "share of participants",
            "rows": _num(m["version_shares"], 4),
        },
    }
    if run.head_hash is not None:
        out["head_hash"] = run.head_hash
    return out


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}


def compare_table(by_scheme: dict[str, list[RunResult]]) -> dict[str, dict[str, Any]]:
    """Per scheme: each final measure as mean and 95% half-width over seeds."""
    table: dict[str, dict[str, Any]] = {}
    for scheme, runs in by_scheme.items():
        finals = [final_measures(r) for r in runs]
        row: dict[str, Any] = {}
        for key in (
            "supply_coins",
            "gini",
            "covers_taker_bid",
            "latest_share_mean",
            "within_2_versions_share_mean",
            "spearman_reward_vs_winning_lineage_models",
        ):
            values = np.array([f[key] for f in finals], dtype=np.float64)
            half = 1.96 * values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else 0.0
            row[key] = {"mean": _num(values.mean()), "ci95": _num(half)}
        table[scheme] = row
    return table


def compare_markdown(table: dict[str, dict[str, Any]]) -> str:
    keys = list(next(iter(table.values())))
    lines = ["| scheme | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for scheme, row in table.items():
        cells = [f"{row[k]['mean']:.4g} ± {row[k]['ci95']:.2g}" if row[k]["mean"] is not None else "n/a" for k in keys]
        lines.append(f"| {scheme} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_summary(config: SimConfig, by_scheme: dict[str, list[RunResult]], wall: float) -> dict[str, Any]:
    runs = [summarise_run(r) for rs in by_scheme.values() for r in rs]
    summary: dict[str, Any] = {"config": config.to_dict(), "wall_seconds": round(wall, 3)}
    if len(runs) == 1:
        summary.update({k: v for k, v in runs[0].items() if k != "wall_seconds"})
        summary["run_wall_seconds"] = runs[0]["wall_seconds"]
    else:
        summary["runs"] = runs
        summary["comparison"] = compare_table(by_scheme)
    return summary
