"""Figures of an experiment, from ``results.json`` only (so they can be redrawn later)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from derelayl.folders import save_figure

__all__ = ["write_figures"]

_STYLE = {
    "centralized": ("k", "--"),
    "fedavg": ("tab:blue", "-"),
    "local_only": ("tab:gray", ":"),
    "gossip": ("tab:green", "-"),
    "derelayl": ("tab:red", "-"),
}
# Variants get colours no base method uses, so that no two lines look alike.
_VARIANT_COLOURS = ("tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "gold", "navy")


def _styles(names: list[str]) -> dict[str, tuple[str, str]]:
    styles, variants = {}, 0
    for name in names:
        if name in _STYLE:
            styles[name] = _STYLE[name]
        else:
            colour = _VARIANT_COLOURS[variants % len(_VARIANT_COLOURS)]
            styles[name] = (colour, "-." if name.startswith("derelayl") else "--")
            variants += 1
    return styles


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(method: dict[str, Any], key: str, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rounds = method["rounds"]
    return np.array([r[key] for r in rounds], dtype=float) / scale, np.array([r["accuracy"] for r in rounds])


def _accuracy(results: dict[str, Any], out_dir: Path) -> str:
    plt = _plt()
    n_train = results["dataset"]["train"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), sharey=True)
    axes_spec = [
        ("round", 1.0, "round (centralized: epoch)"),
        ("bytes", 1e6, "cumulative MB moved"),
        ("samples", n_train, "work: training samples processed / training-pool size"),
    ]
    styles = _styles(list(results["methods"]))
    for name, method in results["methods"].items():
        color, line = styles[name]
        for ax, (key, scale, _) in zip(axes, axes_spec, strict=True):
            x, y = _series(method, key, scale)
            if name == "centralized" and key == "bytes":
                ax.axhline(y[-1], color=color, ls=line, lw=1, label=f"{name} (moves the data: {x[-1]:.2f} MB)")
                continue
            ax.plot(x, y, color=color, ls=line, lw=1.4, label=name)
    for ax, (_, _, label) in zip(axes, axes_spec, strict=True):
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    if results.get("fedavg_bytes"):
        axes[1].axvline(results["fedavg_bytes"] / 1e6, color="tab:blue", lw=0.6, ls=":")
    axes[0].set_ylabel("global test accuracy")
    axes[0].set_title("accuracy vs round")
    axes[1].set_title("accuracy vs bytes moved")
    axes[2].set_title("accuracy vs local epochs (work)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, out_dir / "accuracy.png")


def _rewards(results: dict[str, Any], out_dir: Path) -> str | None:
    relay = results["methods"].get("derelayl")
    if relay is None:
        return None
    plt = _plt()
    info = relay["info"]
    coins = np.array(info["balances_coins"])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, key, label in (
        (axes[0], "models_trained", "models trained (committed)"),
        (axes[1], "models_selected", "models selected by the protocol"),
    ):
        x = np.array(info[key])
        dots = ax.scatter(x, coins, c=info["shard_sizes"], cmap="viridis", s=30)
        fig.colorbar(dots, ax=ax, label="samples held")
        ax.set(xlabel=label, ylabel="coins at the end", title=f"rewards vs contribution ({label.split()[1]})")
        ax.grid(alpha=0.3)
    rounds = relay["rounds"][1:]
    r = [p["round"] for p in rounds]
    axes[2].plot(r, [p["extra"]["gini"] for p in rounds], label="Gini of balances")
    axes[2].plot(r, [p["extra"]["within_2pp"] for p in rounds], label="share holding a model within 2 pp of the top")
    axes[2].set(xlabel="round", ylim=(0, 1.05), title="protocol figures (faithful DeRelayL)")
    axes[2].legend(fontsize=8)
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out_dir / "rewards.png")


def write_figures(results: dict[str, Any], out_dir: Path) -> list[str]:
    names = [_accuracy(results, out_dir), _rewards(results, out_dir)]
    return [n for n in names if n]
