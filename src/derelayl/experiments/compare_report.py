"""The report and figure of ``derelayl compare`` (``derelayl.experiments.compare``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from derelayl.experiments.compare import (
    AXES,
    BUDGETS,
    GRID,
    PROX_FRACTION,
    QUICK,
    RELAYS,
    label,
    mean_curve,
    seconds,
)
from derelayl.folders import save_figure
from derelayl.stats import format_interval as _pm

__all__ = ["figure", "render"]

_TITLE = {"bytes": "equal bytes", "samples": "equal compute"}
_UNIT = {"bytes": "MB moved", "samples": "training samples processed"}


def _share(row: dict[str, Any]) -> str:
    if "lineage_share" in row:
        return _pm(row["lineage_share"], 100, 0)
    return "–" if row["method"] == "gossip" or row["method"] in RELAYS else "100"


def render(results: dict[str, Any]) -> str:
    b = results["budgets"]
    name = results["config"].get("name", "experiment")
    lines = [
        f"# DeRelayL against tuned federated baselines: {name}",
        "",
        f"Budgets (full FedAvg, {b['fedavg_rounds']} rounds, 1 local epoch): **{b['bytes'] / 1e6:.2f} MB** moved "
        f"and **{b['samples']:,} training samples** processed. Each method at the grid point tuned for that "
        f"budget on seeds {results['tune_seeds']}; accuracy at the last round within budget, mean ± 95% interval "
        f"over seeds {results['seeds']} (split and training).",
        "",
    ]
    for kind in BUDGETS:
        lines += [
            f"## At {_TITLE[kind]} ({b[kind] / 1e6:.2f} MB)"
            if kind == "bytes"
            else f"## At {_TITLE[kind]} ({b[kind]:,} samples)",
            "",
            "| method | tuned setting | accuracy % | rounds | selection gap pp | training on the top lineage % |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for row in results["tables"][kind]:
            if "difference" in row:
                what = "faithful" if row["relay"] == "derelayl" else "the variant that tuned best"
                lines.append(
                    f"| **{row['method']}** ({what}; paired, same seeds) | | {_pm(row['difference'], 100)} pp | | | |"
                )
            else:
                lines.append(
                    f"| {row['method']} | {label(row['point'], results['grid'][row['method']])} | "
                    f"{_pm(row['accuracy'], 100)} | "
                    f"{_pm(row['rounds'], 1, 0)} | "
                    f"{_pm(row['selection_gap'], 100) if 'selection_gap' in row else '–'} | "
                    f"{_share(row)} |"
                )
        lines.append("")
    central = results["centralized"]
    lines += [
        "\\* a value at an end of its grid axis: a wider grid might do better there.",
        "",
        f"Centralized (pooled data, {label(central['point'])}) at equal compute: {_pm(central['accuracy'], 100)}%.",
        "",
        "![accuracy against bytes and compute](compare.png)",
        "",
        "## How it was run",
        "",
        f"- Grid ({results['grid_size']}{', a try-out: not a fair tuning' if results['grid_size'] == 'quick' else ''}"
        f"), the same size for every method: lr {GRID['lr']} × local epochs {GRID['local_epochs']} × one "
        "axis of the method's own: "
        + "; ".join(f"{m}: {axis} {values}" for m, (axis, values) in AXES.items() if m in results["grid"])
        + f" (FedProx at C = {PROX_FRACTION})"
        + (f"; quick keeps the first {QUICK} values of each" if results["grid_size"] == "quick" else "")
        + ".",
        f"- Tuning picks the best accuracy averaged over the last {results['tune_last_rounds']} rounds within "
        "budget, mean over the tuning seeds (never the reported ones). The relay variants change only what a "
        "participant may choose within the protocol: "
        + "; ".join(f"{m}: {', '.join(f'{k} = {v}' for k, v in p.items()) or 'the config'}" for m, p in RELAYS.items())
        + ". The best baseline is the best on the reported seeds (the strongest opponent); the relay variant "
        "compared with it is the one that tuned best, chosen on the tuning seeds. derelayl-soup is read as "
        "the average of the round's live models (what any participant can build after settlement; the "
        "bytes count one reader fetching them), every other relay as its first-ranked model.",
        "- Selection gap (relay): how far, on average over the rounds within budget, the model the protocol "
        "ranked first was below the best model committed that round, on the global test set: what selection "
        "on the testers' cases costs. Training on the top lineage: the share of all training samples processed "
        "that went into the reported model's ancestors (FedAvg, FedProx, SCAFFOLD: every sample goes into the "
        "global model; gossip: into some participant's model).",
        "- Bytes: every model transfer (FedAvg/FedProx 2 per sampled client per round, SCAFFOLD 4 with the "
        "control variates, gossip one per peer); the relay's also count test cases and every block sent to "
        "every other node. Compute: training samples (forward + backward).",
        "",
        f"Wall time {seconds(results['wall_seconds'])}.",
        "",
    ]
    return "\n".join(lines)


def figure(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    runs = results["runs"]
    for ax, kind, axis in zip(axes, BUDGETS, (0, 1), strict=True):
        limit = results["budgets"][kind]
        scale = 1e6 if kind == "bytes" else 1.0
        finals = [100 * row["accuracy"][0] for row in results["tables"][kind] if "point" in row]
        for row in results["tables"][kind]:
            if "point" not in row:
                continue
            mine = [r for r in runs if r["method"] == row["method"] and r["point"] == row["point"]]
            xs, mean, half = mean_curve(mine, axis, int(limit * 1.3))
            (line,) = ax.plot(xs / scale, 100 * mean, label=f"{row['method']} ({label(row['point'])})")
            ax.fill_between(xs / scale, 100 * (mean - half), 100 * (mean + half), color=line.get_color(), alpha=0.15)
        if kind == "samples":
            central = [r for r in runs if r["method"] == "centralized"]
            xs, mean, _ = mean_curve(central, axis, int(limit * 1.3))
            ax.plot(xs, 100 * mean, "k:", label="centralized")
        ax.axvline(limit / scale, color="k", ls="--", lw=1)
        ax.set_xlabel(_UNIT[kind])
        ax.set_ylabel("test accuracy %")
        ax.set_title(f"tuned for {_TITLE[kind]} (dashed: budget)")
        # the range where the methods end up: the climb from the first rounds would squeeze it
        ax.set_ylim(max(0, min(finals) - 15), min(100, max(finals) + 3))
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{results['config'].get('name', '')}: mean ± 95% interval over seeds {results['seeds']}")
    fig.tight_layout()
    save_figure(fig, path)
