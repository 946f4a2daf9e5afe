"""``derelayl attacks``: each kind of dishonest participant at a given share, against the relay
(with the faithful rules and with the defences on) and against FedAvg (plain and with the
trimmed mean, the standard robust aggregation), over several seeds, in one table.

Every run is paired with the same method, seed and split with nobody dishonest; what the
table reports per (attack, method), as mean and 95% interval over seeds:

- ``acc`` and ``loss pp``: accuracy of the model the method puts forward (the relay: the
  protocol's first-ranked model; FedAvg: the global model), averaged over the last
  ``LAST`` rounds to take out round-to-round noise, and its loss against the honest pair;
- ``share``: the dishonest group's share of all coins at the end (relay only: every coin is a
  reward, balances start at 0), and its share of the lineage rewards alone (what models earn;
  the rest are miners' and testers' fees for work the rules check);
- ``turned away``: the share of the dishonest group's committed models that the rules did
  not select (the honest group's share is given beside it: selection turns half away anyway);
- ``backdoor``: the share of stamped test inputs of other classes that the model puts in
  the backdoor's target class (the honest pair gives the base rate).
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from derelayl.agents.adversaries import HONEST, KINDS, assign, backdoor_success
from derelayl.agents.relay import MAX_RECHECKS
from derelayl.baselines import Curve, run_fedavg
from derelayl.errors import ConfigError
from derelayl.experiments.config import ExperimentConfig, relay_params
from derelayl.experiments.relay import run_derelayl
from derelayl.folders import FolderLock, save_figure, write_atomic
from derelayl.protocol.params import MAX_IMPROVEMENT_Z, MAX_TESTERS, Params
from derelayl.protocol.types import UNIT, format_units
from derelayl.stats import format_interval as _pm
from derelayl.stats import interval

__all__ = [
    "CHALLENGE_BOND",
    "DEFENCES",
    "LAST",
    "POOLED_TESTERS",
    "SIGN_TEST_Z",
    "TESTER_STAKE",
    "check_options",
    "defences",
    "encrypted_arms",
    "run_attacks",
]

LAST = 10
"""Rounds averaged for a run's accuracy."""
POOLED_TESTERS = 5
SIGN_TEST_Z = 100
"""The sign test's threshold in the last arm by default: one standard deviation
(``Params.improvement_z``; the sweep over other values is in ``docs/attacks.md``)."""
CHALLENGE_BOND = UNIT
"""What a challenge stakes in the challenge arms: 1 coin (``Params.challenge_bond``)."""
CHALLENGE_WINDOW = 2
"""Ledger ticks an unchallenged round waits (the in-memory ledger's clock; ``challenge_window``)."""
TESTER_STAKE = 20 * UNIT
"""The tester stake in the last arm by default: 20 coins (``Params.tester_stake``; the sweep
over other values is in ``docs/attacks.md``)."""


def defences(
    testers: int = POOLED_TESTERS, z: int = SIGN_TEST_Z, stake: int = TESTER_STAKE
) -> dict[str, dict[str, Any]]:
    """Protocol parameters of each relay arm, on top of the config's: a child must beat its
    parent by one test case (the improvement rule); several testers score each model (median);
    with pooled cases every tester (``testers`` of them) scores on all testers' cases, so honest
    ones agree exactly, and a tester off the medians is not paid; with the copy rule a child
    must also beat the live model whose predictions it shares most
    (``derelayl.protocol.copies``); with posted commitments every trainer also sends its
    commitment straight to the ledger, so no commit miner can leave it out (an agent policy,
    not a parameter: ``post_commitments`` is taken out before the rest become ``Params``); with
    appeals, a disagreement among the testers is decided by ``testers`` appellants drawn
    afterwards (``derelayl.protocol.appeals``); with the sign test, a child's lead must also be
    ``z`` hundredths of a standard deviation of the cases it and the model it is compared with
    split (``derelayl.protocol.copies.significant``); with case commitments, testers fix their
    cases in the deposit block, before any child exists (honest testers' cases are the same
    either way, so this changes only what a case picker can do); with a tester stake (``stake``
    units; 0 for none), testers are drawn from the miners holding it and a tester the
    appeal finds lying forfeits it (``Params.tester_stake``); with challenges, a trainer whose
    model's published score is wrong stakes a bond to open the appeal even when every tester
    told the same lie (``Params.challenge_bond``), and the optimistic arm has one tester, the
    appeal called only on a challenge."""
    pooled = {"min_improvement": 1, "testers": testers, "pooled_cases": True}
    staked = f", tester stake {format_units(stake)}" if stake else ""
    last = {
        **pooled,
        "copy_rule": True,
        "post_commitments": True,
        "appeal_testers": testers,
        "improvement_z": z,
        "case_commitments": True,
        **({"tester_stake": stake} if stake else {}),
    }
    challenged = {**last, "challenge_bond": CHALLENGE_BOND, "challenge_window": CHALLENGE_WINDOW}
    return {
        "relay (faithful)": {},
        "relay (improvement rule)": {"min_improvement": 1},
        "relay (improvement rule, 3 testers)": {"min_improvement": 1, "testers": 3},
        f"relay (improvement rule, {testers} testers, pooled cases)": pooled,
        "relay (all defences: + copy rule, posted commitments)": {
            **pooled,
            "copy_rule": True,
            "post_commitments": True,
        },
        f"relay (all defences + appeals to {testers} more)": {
            **pooled,
            "copy_rule": True,
            "post_commitments": True,
            "appeal_testers": testers,
        },
        f"relay (all defences + appeals + sign test, z = {z / 100:g}, case commitments{staked})": last,
        f"relay (last arm + challenges, bond {format_units(CHALLENGE_BOND)})": challenged,
        OPTIMISTIC: {**challenged, "testers": 1},
    }


OPTIMISTIC = "relay (optimistic: last arm with 1 tester + challenges)"
RECHECKS = 1
"""Other children each trainer re-scores under encryption in the re-check arm (``--rechecks``)."""


def encrypted_arms(
    testers: int = POOLED_TESTERS, stake: int = TESTER_STAKE, rechecks: int = RECHECKS
) -> dict[str, dict[str, Any]]:
    """The arms run when the relay scores encrypted models (the config's ``[methods.derelayl]
    fhe = true``): optimistic testing as in ``defences`` but without the copy rule and the sign
    test, which compare predictions in the clear, and then the same with every trainer also
    re-scoring ``rechecks`` of the round's other children under encryption before it decides
    to challenge (``RelayBrain.rechecks``), so that a lie which only raises someone else's
    child can be shown. Only these two: an encrypted round takes seconds, not milliseconds."""
    clear = defences(testers, SIGN_TEST_Z, stake)[OPTIMISTIC]
    arm = {k: v for k, v in clear.items() if k not in ("copy_rule", "improvement_z")}
    return {
        "relay (optimistic, encrypted)": arm,
        f"relay (optimistic, encrypted, + {rechecks} re-check{'s' if rechecks > 1 else ''} per trainer)": {
            **arm,
            "rechecks": rechecks,
        },
    }


DEFENCES = defences()
AGENT_POLICIES = ("post_commitments", "rechecks")
"""Arm keys that are what agents do, not ``Params``."""
FEDAVG = ("fedavg", "fedavg (trimmed mean)")
Progress = Callable[[str], None]


def run_attacks(
    config: ExperimentConfig,
    out_dir: Path,
    *,
    share: float = 0.3,
    seeds: tuple[int, ...] = (0, 1, 2),
    kinds: tuple[str, ...] = KINDS,
    rounds: int = 50,
    testers: int = POOLED_TESTERS,
    z: int = SIGN_TEST_Z,
    stake: int = TESTER_STAKE,
    rechecks: int = RECHECKS,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """With ``[methods.derelayl] fhe = true`` in ``config`` the relay scores encrypted models
    and only ``encrypted_arms`` run."""
    check_options(share, kinds, rounds, testers, z)
    if not 1 <= rechecks <= MAX_RECHECKS:
        raise ConfigError(f"--rechecks must be in 1..{MAX_RECHECKS}, got {rechecks}")
    fhe = bool(config.methods.get("derelayl", {}).get("fhe"))
    arms = encrypted_arms(testers, stake, rechecks) if fhe else defences(testers, z, stake)
    with FolderLock(out_dir, "derelayl attacks"):
        return _run(config, out_dir, share, seeds, kinds, rounds, arms, progress or (lambda _: None))


def check_options(
    share: float, kinds: tuple[str, ...], rounds: int, testers: int = POOLED_TESTERS, z: int = SIGN_TEST_Z
) -> None:
    if not (math.isfinite(share) and 0 < share <= 0.5):
        raise ConfigError(f"--share must be in (0, 0.5], got {share}")
    if not 1 <= rounds <= 10_000:
        raise ConfigError(f"--rounds must be in 1..10000, got {rounds}")
    if not 2 <= testers <= MAX_TESTERS:
        raise ConfigError(f"--testers must be in 2..{MAX_TESTERS}, got {testers}")
    if not 1 <= z <= MAX_IMPROVEMENT_Z:
        raise ConfigError(
            f"--improvement-z must be in 1..{MAX_IMPROVEMENT_Z} (hundredths of a standard deviation), got {z}"
        )
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ConfigError(f"--kinds: unknown {', '.join(unknown) or 'none given'}; choose from {', '.join(KINDS)}")


def _run(
    config: ExperimentConfig,
    out_dir: Path,
    share: float,
    seeds: tuple[int, ...],
    kinds: tuple[str, ...],
    rounds: int,
    arms: dict[str, dict[str, Any]],
    say: Progress,
) -> dict[str, Any]:
    from derelayl.experiments.runner import build_experiment_setup

    torch.set_num_threads(1)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    relay = config.methods.get("derelayl", {"preset": "reference", "params": None})
    base = relay_params(relay["preset"], relay["params"] or {})
    fed_rounds = config.methods.get("fedavg", {"rounds": 30})["rounds"]
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        setup = build_experiment_setup(config.with_seed(seed))
        backdoor = functools.partial(_backdoor, setup.evaluator(), setup.x_test, setup.y_test)
        n = len(setup.split.participants)
        for kind in ("none", *kinds):
            shares = {} if kind == "none" else {kind: share}
            group = assign(n, shares, seed)
            for method, arm in arms.items():
                extra = {k: v for k, v in arm.items() if k not in AGENT_POLICIES}
                params = Params.from_dict({**base.to_dict(), **extra})
                posting = bool(arm.get("post_commitments", False))
                curve = run_derelayl(
                    setup,
                    params,
                    seed,
                    rounds=rounds,
                    adversaries=shares,
                    measure_backdoor=True,
                    post_commitments=posting,
                    fhe=bool(relay.get("fhe")),
                    rechecks=int(arm.get("rechecks", 0)),
                )
                runs.append(_summary(curve, method, kind, seed, group))
            for method in FEDAVG:
                trim = share if method != "fedavg" else 0.0
                curve = run_fedavg(setup, fed_rounds, seed, kinds=group, trim=trim, measure=backdoor)
                runs.append(_summary(curve, method, kind, seed, group))
            done = runs[-(len(arms) + len(FEDAVG)) :]
            say(f"seed {seed}, {kind}: " + ", ".join(f"{r['method']} {r['accuracy']:.3f}" for r in done))
    table = _table(runs, kinds, tuple(arms))
    results = {
        "config": config.resolved(),
        "share": share,
        "seeds": list(seeds),
        "relay_rounds": rounds,
        "fedavg_rounds": fed_rounds,
        "defences": arms,
        "last_rounds_averaged": LAST,
        "table": table,
        "runs": runs,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_atomic(out_dir / "results.json", json.dumps(results, indent=1) + "\n")
    _figure(table, share, out_dir / "attacks.png")
    write_atomic(out_dir / "report.md", render(results))
    return results


def _backdoor(evaluator: Any, x: Any, y: Any, weights: Any) -> dict[str, float]:
    return {"backdoor_success": backdoor_success(evaluator, weights, x, y)}


def _summary(curve: Curve, method: str, kind: str, seed: int, group: list[str]) -> dict[str, Any]:
    last = curve.points[-LAST:]
    groups = curve.info.get("groups", {})
    bad = groups.get(kind, {})
    balances = curve.info.get("balances_coins")
    return {
        "method": method,
        "attack": kind,
        "seed": seed,
        "rounds": curve.final.round,
        "accuracy": float(np.mean([p.accuracy for p in last])),
        "final_accuracy": curve.final.accuracy,
        "backdoor_success": float(np.mean([p.extra["backdoor_success"] for p in last])),
        "models_committed": sum(curve.info.get("models_trained", [])),
        "mb_per_round": curve.final.bytes / max(curve.final.round, 1) / 1e6,
        "challenges": curve.info.get("challenges", 0),
        "ties_confirmed": curve.info.get("ties_confirmed", 0),
        "reward_share": bad.get("reward_share"),
        "lineage_share": bad.get("lineage_share"),
        "turned_away": bad.get("turned_away"),
        "honest_turned_away": groups.get(HONEST, {}).get("turned_away"),
        "groups": groups,
        "balances": balances,
        "dishonest": [p for p, k in enumerate(group) if k != HONEST],
    }


def _share(balances: list[float], members: list[int]) -> float:
    total = sum(balances)
    return sum(balances[p] for p in members) / total if total else 0.0


def _table(runs: list[dict[str, Any]], kinds: tuple[str, ...], arms: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per (attack, method): means and intervals over seeds, losses against the honest
    run of the same method and seed."""
    honest = {(r["method"], r["seed"]): r for r in runs if r["attack"] == "none"}
    rows = []
    for kind in ("none", *kinds):
        for method in (*arms, *FEDAVG):
            mine = [r for r in runs if r["attack"] == kind and r["method"] == method]
            row: dict[str, Any] = {"attack": kind, "method": method, "seeds": len(mine)}
            row["accuracy"] = interval([r["accuracy"] for r in mine])
            row["loss_pp"] = interval([100 * (honest[(method, r["seed"])]["accuracy"] - r["accuracy"]) for r in mine])
            row["backdoor_success"] = interval([r["backdoor_success"] for r in mine])
            row["mb_per_round"] = interval([r["mb_per_round"] for r in mine])
            row["challenges"] = float(np.mean([r["challenges"] for r in mine]))
            if kind != "none" and mine[0]["reward_share"] is not None:
                row["reward_share"] = interval([r["reward_share"] for r in mine])
                # the same participants' share when everybody is honest
                fair = [_share(honest[(method, r["seed"])]["balances"], r["dishonest"]) for r in mine]
                row["fair_share"] = interval(fair)
                # paired by seed: which people are dishonest changes with the seed, and so does
                # their fair share; the difference does not carry that spread
                row["excess_pp"] = interval([100 * (r["reward_share"] - f) for r, f in zip(mine, fair, strict=True)])
                row["lineage_share"] = interval([r["lineage_share"] or 0.0 for r in mine])
                row["turned_away"] = interval([r["turned_away"] or 0.0 for r in mine])
                row["honest_turned_away"] = interval([r["honest_turned_away"] or 0.0 for r in mine])
            rows.append(row)
    return rows


def render(results: dict[str, Any]) -> str:
    share, seeds = results["share"], results["seeds"]
    lines = [
        f"# Attacks: {share:.0%} of participants dishonest, one kind at a time",
        "",
        f"Seeds {seeds} (split and training); relay {results['relay_rounds']} rounds, FedAvg "
        f"{results['fedavg_rounds']} rounds; accuracy is the mean of the last {results['last_rounds_averaged']} "
        "rounds; mean ± 95% interval over seeds. Loss is against the same method and seed with nobody "
        "dishonest. Relay arms: "
        + "; ".join(
            f"{m}: " + (", ".join(f"{k} = {v}" for k, v in p.items()) or "reference")
            for m, p in results["defences"].items()
        )
        + ".",
        "",
        "| attack | method | accuracy % | loss pp | dishonest share of rewards % (same people, all honest) | "
        "over their honest share, pp (paired) | of lineage rewards alone % | their models turned away % "
        "(honest %) | backdoor success % | MB per round | challenges per run |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["table"]:
        share_text = (
            f"{_pm(row['reward_share'], 100)} ({_pm(row['fair_share'], 100)})" if "reward_share" in row else "–"
        )
        away = (
            f"{_pm(row['turned_away'], 100, 0)} ({_pm(row['honest_turned_away'], 100, 0)})"
            if "turned_away" in row
            else "–"
        )
        lineage = _pm(row["lineage_share"], 100) if "lineage_share" in row else "–"
        excess = _pm(row["excess_pp"]) if "excess_pp" in row else "–"
        lines.append(
            f"| {row['attack']} | {row['method']} | {_pm(row['accuracy'], 100)} | {_pm(row['loss_pp'])} | "
            f"{share_text} | {excess} | {lineage} | {away} | {_pm(row['backdoor_success'], 100)} | "
            f"{_pm(row['mb_per_round'], 1, 2)} | {row['challenges']:g} |"
        )
    lines += ["", "Targets (issue 10): loss within 1 pp and dishonest share below 5%.", ""]
    for row in results["table"]:
        if row["attack"] == "none" or not row["method"].startswith("relay"):
            continue
        loss, share_v = row["loss_pp"][0], row.get("reward_share", (0.0, 0.0))[0]
        ok = loss <= 1.0 and share_v < 0.05
        excess = f", {row['excess_pp'][0]:+.1f} pp over their honest share" if "excess_pp" in row else ""
        lines.append(
            f"- {row['attack']}, {row['method']}: {'meets' if ok else 'misses'} "
            f"(loss {loss:.1f} pp, share {100 * share_v:.1f}%{excess})"
        )
    lines += ["", "![attacks](attacks.png)", "", f"Wall time {results['wall_seconds']} s.", ""]
    return "\n".join(lines)


def _figure(table: list[dict[str, Any]], share: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = [k for k in dict.fromkeys(r["attack"] for r in table) if k != "none"]
    methods = list(dict.fromkeys(r["method"] for r in table))
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5))
    width = 0.8 / len(methods)
    x = np.arange(len(attacks))
    panels = [
        ("reward_share", 100, "dishonest share of rewards (%)", 5.0),
        ("loss_pp", 1, "accuracy loss vs honest (pp)", 1.0),
        ("backdoor_success", 100, "backdoor success (%)", None),
    ]
    for ax, (key, scale, label, target) in zip(axes, panels, strict=True):
        for i, method in enumerate(methods):
            rows = [next(r for r in table if r["attack"] == a and r["method"] == method) for a in attacks]
            if key not in rows[0]:
                continue
            mean = [r[key][0] * scale for r in rows]
            half = [r[key][1] * scale for r in rows]
            at = x + (i - (len(methods) - 1) / 2) * width
            color = plt.get_cmap("tab20")(i % 20)  # one colour per arm (the default cycle has 10)
            ax.bar(at, mean, width, yerr=half, capsize=3, label=method, color=color)
            if key == "reward_share":  # what the same participants earn when everybody is honest
                fair = [r["fair_share"][0] * scale for r in rows]
                ax.scatter(
                    at,
                    fair,
                    marker="_",
                    s=120,
                    color="k",
                    zorder=3,
                    label="same people, all honest" if i == 0 else None,
                )
        if target is not None:
            ax.axhline(target, color="k", ls="--", lw=1, label="target")
        ax.set_xticks(x, attacks, rotation=20)
        ax.set_ylabel(label)
    # one legend under the panels (inside them it hides the bars): every method, the target
    # line and the honest marker, each once
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    fig.legend(entries.values(), entries.keys(), loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    save_figure(fig, path)
