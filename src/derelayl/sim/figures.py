"""Figures of a simulation: the paper's two, plus supply, fairness and scheme comparison.

Every figure is written as PNG and PDF. With several seeds, curves are the mean over seeds
with a 95% confidence band (mean ± 1.96 · sd / sqrt(seeds)).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import NDArray

from derelayl.folders import save_figure
from derelayl.protocol.types import UNIT
from derelayl.sim.engine import RunResult
from derelayl.sim.metrics import VERSION_BINS

__all__ = ["band", "write_figures"]

F64 = NDArray[np.float64]
_VERSION_COLOURS = [
    f"#{r:02x}{g:02x}{b:02x}"
    for r, g, b in (  # the reference figure's legend colours (sampled from its PNG)
        (8, 48, 107),
        (8, 69, 138),
        (14, 89, 162),
        (30, 109, 178),
        (50, 130, 190),
        (72, 150, 200),
        (97, 167, 210),
        (127, 185, 218),
        (159, 202, 225),
        (184, 213, 234),
        (205, 223, 241),
        (211, 211, 211),
        (255, 255, 255),
    )
]


def band(series: Sequence[F64]) -> tuple[F64, F64]:
    """(mean, 95% half-width) across seeds; half-width 0 for a single seed."""
    stack = np.vstack([np.asarray(s, dtype=np.float64) for s in series])
    mean = np.nanmean(stack, axis=0)
    if stack.shape[0] < 2:
        return mean, np.zeros_like(mean)
    return mean, 1.96 * np.nanstd(stack, axis=0, ddof=1) / np.sqrt(stack.shape[0])


def _save(fig: Figure, out_dir: Path, name: str) -> list[str]:
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        paths.append(save_figure(fig, path, dpi=110 if ext == "png" else None, bbox_inches="tight", close=False))
    plt.close(fig)
    return paths


def _rounds(n: int) -> F64:
    return np.arange(1, n + 1, dtype=np.float64)


def _plot_band(ax: Axes, x: F64, series: Sequence[F64], label: str | None = None, **kw: Any) -> None:
    mean, half = band(series)
    line = ax.plot(x, mean, label=label, lw=1.5, **kw)[0]
    if np.any(half > 0):
        ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=0.25, lw=0)


def coins_figure(runs: Sequence[RunResult], out_dir: Path) -> list[str]:
    fig, ax = plt.subplots(figsize=(12, 6))
    first = runs[0].metrics["sampled_balances"]
    x = _rounds(first.shape[0])
    if len(runs) == 1:
        ax.plot(x, first, lw=0.6, alpha=0.8)
        ax.set_title(f"Coins per Participant Over Rounds ({first.shape[1]} participants)")
    else:
        for q, style in ((10, ":"), (50, "-"), (90, "--")):
            series = [np.percentile(r.metrics["sampled_balances"], q, axis=1) for r in runs]
            _plot_band(ax, x, series, label=f"p{q} of participants", ls=style)
        ax.legend()
        ax.set_title(f"Coins per Participant Over Rounds (mean of {len(runs)} seeds, 95% band)")
    ax.set_xlabel("Round")
    ax.set_ylabel("Coins")
    ax.set_xlim(1, x[-1])
    ax.set_ylim(bottom=0)
    ax.grid(True)
    return _save(fig, out_dir, "fig-coins-per-participant")


def version_figure(runs: Sequence[RunResult], out_dir: Path, rounds: int) -> list[str]:
    shares, _ = band([r.metrics["version_shares"][:rounds].ravel() for r in runs])
    shares = shares.reshape(-1, len(VERSION_BINS)) * 100
    x = _rounds(shares.shape[0])
    fig, ax = plt.subplots(figsize=(15, 6))
    # one stepped polygon per bin = bars of width 1 edge to edge (13 artists, not 13 x rounds)
    edges = np.append(x - 0.5, x[-1] + 0.5)
    bottom = np.zeros(edges.size)
    for j, (name, colour) in enumerate(zip(VERSION_BINS, _VERSION_COLOURS, strict=True)):
        label = name.replace("latest", "Latest") if name.startswith("latest") else name.capitalize()
        top = bottom + np.append(shares[:, j], shares[-1, j])
        ax.fill_between(edges, bottom, top, step="post", color=colour, label=label, linewidth=0)
        bottom = top
    ax.set_xlim(0.5, x[-1] + 0.5)
    ax.set_ylim(0, 100)
    ax.set_yticks(range(0, 101, 10))
    ax.grid(True, axis="y")
    ax.set_xlabel("Round")
    ax.set_ylabel("Percentage of Participants (%)")
    seeds = f" (mean of {len(runs)} seeds)" if len(runs) > 1 else ""
    ax.set_title(f"Model Version Distribution Over Rounds{seeds}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, out_dir, "fig-version-distribution")


def _money(run: RunResult) -> dict[str, F64]:
    minted = run.metrics["minted"] / UNIT
    burned = run.metrics["burned"] / UNIT
    return {"minted": minted, "burned": burned, "circulating": minted - burned}


def supply_figure(runs: Sequence[RunResult], out_dir: Path) -> list[str]:
    fig, ax = plt.subplots(figsize=(10, 5))
    x = _rounds(runs[0].metrics["minted"].size)
    for key in ("minted", "circulating", "burned"):
        _plot_band(ax, x, [_money(r)[key] for r in runs], label=key)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("Round")
    ax.set_ylabel("Coins")
    ax.set_title("Money supply over rounds")
    ax.grid(True)
    ax.legend()
    return _save(fig, out_dir, "fig-supply")


def fairness_figure(runs: Sequence[RunResult], out_dir: Path) -> list[str]:
    fig, ax = plt.subplots(figsize=(10, 5))
    x = _rounds(runs[0].metrics["gini"].size)
    _plot_band(ax, x, [r.metrics["gini"] for r in runs], label="Gini of balances")
    _plot_band(ax, x, [r.metrics["covers_bid"] for r in runs], label="share whose balance covers the taker bid")
    _plot_band(ax, x, [r.metrics["spearman"] for r in runs], label="Spearman(reward, rounds selected)")
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("Round")
    ax.set_title("Fairness and sustainability over rounds")
    ax.grid(True)
    ax.legend()
    return _save(fig, out_dir, "fig-gini")


def compare_figure(by_scheme: dict[str, list[RunResult]], out_dir: Path) -> list[str]:
    fig, axes = plt.subplots(2, 2, figsize=(13, 8), sharex=True)

    def supply(r: RunResult) -> F64:
        return _money(r)["circulating"]

    def metric(key: str, column: int | None = None) -> Callable[[RunResult], F64]:
        def get(r: RunResult) -> F64:
            values: F64 = r.metrics[key] if column is None else r.metrics[key][:, column]
            return values

        return get

    panels: tuple[tuple[str, Callable[[RunResult], F64]], ...] = (
        ("circulating supply (coins)", supply),
        ("Gini of balances", metric("gini")),
        ("share covering the taker bid", metric("covers_bid")),
        ("share holding the latest version", metric("version_shares", 0)),
    )
    for ax, (title, get) in zip(axes.ravel(), panels, strict=True):
        for scheme, runs in by_scheme.items():
            x = _rounds(get(runs[0]).size)
            _plot_band(ax, x, [get(r) for r in runs], label=scheme)
        ax.set_title(title)
        ax.grid(True)
    axes[0, 0].set_yscale("symlog", linthresh=1.0)
    axes[0, 0].set_ylim(bottom=0)
    axes[0, 0].legend()
    for ax in axes[1]:
        ax.set_xlabel("Round")
    fig.suptitle("Incentive schemes compared" + (f" ({len(next(iter(by_scheme.values())))} seeds, 95% bands)"))
    fig.tight_layout()
    return _save(fig, out_dir, "fig-compare-schemes")


def write_figures(by_scheme: dict[str, list[RunResult]], out_dir: Path, version_rounds: int) -> list[str]:
    """All figures; per-scheme figures go to a subfolder when several schemes ran."""
    written: list[str] = []
    for scheme, runs in by_scheme.items():
        where = out_dir if len(by_scheme) == 1 else out_dir / f"scheme-{scheme}"
        where.mkdir(parents=True, exist_ok=True)
        prefix = "" if where == out_dir else f"scheme-{scheme}/"
        for make in (coins_figure, supply_figure, fairness_figure):
            written += [prefix + p for p in make(runs, where)]
        written += [prefix + p for p in version_figure(runs, where, version_rounds)]
    if len(by_scheme) > 1:
        written += compare_figure(by_scheme, out_dir)
    return written
