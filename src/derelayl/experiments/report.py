"""``report.md``: what was run, the table, and an honest reading of the targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from derelayl.folders import write_atomic

__all__ = ["render_report", "write_report"]


def _table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| method | rounds | accuracy (with a byte budget: last round within it) | MB moved | local epochs | "
        "samples processed | wall s | the next round, past the budget |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in results["summary"].items():
        past = row.get("past_budget")
        past_text = f"{past['accuracy']:.3f} (round {past['round']}, {past['bytes'] / 1e6:.2f} MB)" if past else "–"
        lines.append(
            f"| {name} | {row['rounds']} | {row['accuracy']:.3f} | {row['bytes'] / 1e6:.2f} | "
            f"{row['local_epochs']} | {row['samples']} | {row['wall_seconds']:.1f} | {past_text} |"
        )
    return lines


def _reading(results: dict[str, Any]) -> list[str]:
    s = results["summary"]
    out: list[str] = []
    if "derelayl" in s and "fedavg" in s:
        relay, fed = s["derelayl"]["accuracy"], s["fedavg"]["accuracy"]
        verdict = "meets" if relay >= fed else "misses"
        budgeted = results["methods"]["derelayl"]["info"].get("byte_budget") is not None
        where = "at FedAvg's bytes" if budgeted else f"after {s['derelayl']['rounds']} rounds, by rounds not bytes"
        if not budgeted:
            verdict += f" (with {s['derelayl']['bytes'] / max(s['fedavg']['bytes'], 1):.0f}x FedAvg's bytes)"
        out.append(
            f"- Faithful DeRelayL {where}: {relay:.3f} vs FedAvg {fed:.3f} "
            f"({(relay - fed) * 100:+.1f} pp): {verdict} the target 'at least as accurate as FedAvg'. This FedAvg "
            "trains every client every round with this config's settings, its most byte-hungry form; "
            "`derelayl compare` measures the relay against FedAvg with client sampling, FedProx, SCAFFOLD and "
            "gossip, each tuned on the same grid, at equal bytes and at equal compute over seeds."
        )
    if "centralized" in s:
        central = s["centralized"]["accuracy"]
        for name in s:
            if name.startswith("derelayl"):
                gap = (central - s[name]["accuracy"]) * 100
                verdict = "within" if gap <= 1.5 else "not within"
                out.append(f"- {name}: {gap:.1f} pp below centralized ({central:.3f}): {verdict} 1.5 pp.")
    for name, curve in results["methods"].items():
        rounds = [p for p in curve["rounds"][1:] if p["extra"].get("best_committed") is not None]
        if name.startswith("derelayl") and rounds:
            short = [p["extra"]["best_committed"] - p["accuracy"] for p in rounds]
            hit = sum(s < 1e-12 for s in short) / len(short)
            out.append(
                f"- Selection in {name} (testers' own cases): the protocol's first-ranked model was also the "
                f"best committed model on the global test set in {hit:.0%} of rounds; on average it was "
                f"{100 * sum(short) / len(short):.1f} pp below that best one (max {100 * max(short):.1f} pp)."
            )
    relay = results["methods"].get("derelayl")
    if relay:
        last = relay["rounds"][-1]["extra"]
        b = relay["info"]["bytes_breakdown"]
        out.append(
            f"- Protocol figures after {relay['rounds'][-1]['round']} rounds: supply {last['supply_coins']:.1f} "
            f"coins, Gini of balances {last['gini']:.2f}, {last['within_2pp']:.0%} of participants hold a "
            f"model within 2 pp of the protocol's top model."
        )
        out.append(
            "- DeRelayL bytes: "
            + ", ".join(f"{k.replace('_', ' ')} {v / 1e6:.2f} MB" for k, v in b.items())
            + f"; data reads by another participant's code path: {relay['info']['shard_reads_by_others']}."
        )
    return out


def _adversaries(results: dict[str, Any]) -> list[str]:
    shares = results["config"].get("adversaries") or {}
    if not shares:
        return []
    lines = [
        "## Dishonest participants",
        "",
        "Shares: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()) + " (they act so in DeRelayL and FedAvg "
        "runs; `derelayl attacks` measures each kind against an honest run over several seeds).",
        "",
        "| method | group | participants | share of rewards | models committed | selected | turned away |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in results["summary"].items():
        for group, g in row.get("groups", {}).items():
            away = "–" if g["turned_away"] is None else f"{g['turned_away']:.0%}"
            lines.append(
                f"| {name} | {group} | {g['participants']} | {g['reward_share']:.1%} | {g['models_committed']} | "
                f"{g['models_selected']} | {away} |"
            )
    return [*lines, ""]


def render_report(results: dict[str, Any]) -> str:
    cfg, ds = results["config"], results["dataset"]
    d, t = cfg["data"], cfg["train"]
    lines = [
        f"# Experiment `{results['name']}`",
        "",
        f"Dataset **{ds['name']}** ({ds['samples']} samples: {ds['train']} held by {d['participants']} participants, "
        f"{ds['test']} in a stratified global test set used only to measure). Partition **{d['partition']}**"
        + (f" (alpha = {d['alpha']})" if d.get("alpha") else "")
        + f", preprocessing {d['preprocess']}. "
        f"MLP {cfg['model']['hidden']} ({ds['model_parameters']} parameters), SGD lr {t['lr']}, batch "
        f"{t['batch_size']}, {t['local_epochs']} local epoch(s). Every method starts from the same initial "
        "weights on the same split (`split.json`).",
        "",
        "## Results",
        "",
        *_table(results),
        "",
        f"Total wall time {results['wall_seconds']:.1f} s. Curves: `accuracy.png` (vs round, bytes, work); "
        "protocol figures: `rewards.png`.",
        "",
        "## Reading",
        "",
        *_reading(results),
        "",
        *_adversaries(results),
        "## How things are counted",
        "",
        "- Bytes are model parameters as float32 (the same unit for every method), counted once per transfer. "
        "FedAvg: download + upload for every participant every round. Gossip: one model per participant per round. "
        "DeRelayL: model owner -> trainer (the merge variant counts every extra model received), trainer -> tester, "
        "copies to the commit (encryption) miner when the preset gives them to it, the published test cases "
        "(float32 inputs + int64 labels), and every block (as the signed chain stores it, signatures included) "
        "sent to every other node. Centralized moves the raw training data once.",
        "- DeRelayL's accuracy in a round is that of the model the protocol ranked first on its own test cases "
        "(drawn by the testing miner from its own data), measured on the global test set.",
        "- Gossip and local-only report the mean accuracy over participants' models (min/max in results.json).",
        "- A method run to a byte budget is reported at its last round within it; it stops at the first round "
        "that reaches it, shown in the last column for the record.",
    ]
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, Any], out_dir: Path) -> None:
    write_atomic(out_dir / "report.md", render_report(results))
