"""``derelayl simulate``: parsing and display only; the work happens in ``sim.runner``.

Every flag defaults to ``None`` = "not given", so that a value from ``--config`` is only
overridden by a flag the user actually typed (preset <- TOML <- flags).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from derelayl.errors import DerelaylError
from derelayl.folders import FolderLock
from derelayl.terminal import console, fail

__all__ = ["simulate"]

out = Console()
_P = "Protocol"
_M = "Money (coins)"
_R = "Run"
_O = "Outputs"


def simulate(
    participants: Annotated[int | None, typer.Option(help="Participants at genesis [256].", rich_help_panel=_R)] = None,
    rounds: Annotated[int | None, typer.Option(help="Rounds to settle [5000].", rich_help_panel=_R)] = None,
    seed: Annotated[int | None, typer.Option(help="Seed [42] (same seed, same results).", rich_help_panel=_R)] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Several seeds: 0-9 or 1,3,5 (runs on both cores).", rich_help_panel=_R)
    ] = None,
    scheme: Annotated[
        str | None,
        typer.Option(help="Reward scheme(s): lineage, decay, capped; a comma list compares them.", rich_help_panel=_P),
    ] = None,
    compare_schemes: Annotated[
        bool, typer.Option("--compare-schemes", help="Same as --scheme lineage,decay,capped.", rich_help_panel=_P)
    ] = False,
    config: Annotated[
        Path | None, typer.Option(help="TOML config (see configs/); flags override it.", rich_help_panel=_R)
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="Protocol preset: reference or minimal (default: reference).", rich_help_panel=_P)
    ] = None,
    k: Annotated[int | None, typer.Option(help="Trainers per model owner [4].", rich_help_panel=_P)] = None,
    select_fraction: Annotated[
        float | None,
        typer.Option(
            "--select-fraction", "-s", help="Share s of models selected, in (0, 1] [0.5].", rich_help_panel=_P
        ),
    ] = None,
    cap_fraction: Annotated[
        float | None, typer.Option(help="Owners + trainers as a share of participants [0.5].", rich_help_panel=_P)
    ] = None,
    cap: Annotated[
        int | None, typer.Option(help="Owners + trainers, absolute (overrides --cap-fraction).", rich_help_panel=_P)
    ] = None,
    test_cases: Annotated[int | None, typer.Option(help="Test cases per round [100].", rich_help_panel=_P)] = None,
    testers: Annotated[
        int | None, typer.Option(help="Testers per round; models ranked by the median score [1].", rich_help_panel=_P)
    ] = None,
    royalty_decay: Annotated[
        float | None, typer.Option(help="gamma of the decay scheme, in [0, 1) [0.5].", rich_help_panel=_P)
    ] = None,
    encryption_miner_holds_models: Annotated[
        bool | None,
        typer.Option(
            "--encryption-miner-holds-models/--no-encryption-miner-holds-models",
            help="Reference: the encryption miner holds copies of new models.",
            rich_help_panel=_P,
        ),
    ] = None,
    trainer_holds_parent: Annotated[
        bool | None,
        typer.Option(
            "--trainer-holds-parent/--no-trainer-holds-parent",
            help="Count the parent a matched trainer is handed as a model it holds (reference: no).",
            rich_help_panel=_P,
        ),
    ] = None,
    lineage_payee: Annotated[
        str | None,
        typer.Option(
            help="Paid per model on a winning lineage: model_owner (reference: who handed out its parent) or trainer.",
            rich_help_panel=_P,
        ),
    ] = None,
    phase_timeout: Annotated[
        int | None,
        typer.Option(
            help="Blocks after which anyone may produce a phase the drawn miner skipped (default: none).",
            rich_help_panel=_P,
        ),
    ] = None,
    pooled_cases: Annotated[
        bool | None,
        typer.Option(
            "--pooled-cases/--no-pooled-cases",
            help="Testers score on all testers' cases; one off the median is not paid (default: off).",
            rich_help_panel=_P,
        ),
    ] = None,
    appeal_testers: Annotated[
        int | None,
        typer.Option(
            help="Appeals (needs --pooled-cases): appellants drawn when testers disagree (default: 0, off; latent "
            "testers are honest, so they never disagree).",
            rich_help_panel=_P,
        ),
    ] = None,
    case_commitments: Annotated[
        bool | None,
        typer.Option(
            "--case-commitments/--no-case-commitments",
            help="Testers commit to their cases' digest in the deposit block (default: off; latent testers "
            "are honest, so it changes no result).",
            rich_help_panel=_P,
        ),
    ] = None,
    min_improvement: Annotated[
        int | None,
        typer.Option(
            help="Improvement rule: a child must beat its parent's score by this (score units) to be selected "
            "(default: off).",
            rich_help_panel=_P,
        ),
    ] = None,
    mo_budget: Annotated[str | None, typer.Option(help="Model-owner budget [0.001].", rich_help_panel=_M)] = None,
    lineage_reward: Annotated[
        str | None, typer.Option(help="Coins minted per lineage member per selected model [1].", rich_help_panel=_M)
    ] = None,
    supply_cap: Annotated[str | None, typer.Option(help="Supply cap of the capped scheme.", rich_help_panel=_M)] = None,
    min_trainer_bid: Annotated[
        str | None, typer.Option(help="Least deposit a trainer must bid to be matched [0].", rich_help_panel=_M)
    ] = None,
    tester_stake: Annotated[
        str | None,
        typer.Option(
            help="Coins a tester must hold, at stake in a disputed round (needs --appeal-testers) [0].",
            rich_help_panel=_M,
        ),
    ] = None,
    reward_per_deposit: Annotated[
        str | None, typer.Option(help="Miner reward per deposit [0.001].", rich_help_panel=_M)
    ] = None,
    reward_per_commitment: Annotated[
        str | None, typer.Option(help="Miner reward per model hash [0.001].", rich_help_panel=_M)
    ] = None,
    reward_per_test_case: Annotated[
        str | None, typer.Option(help="Miner reward per test case [0.001].", rich_help_panel=_M)
    ] = None,
    reward_per_tested_model: Annotated[
        str | None, typer.Option(help="Miner reward per tested model [0.001].", rich_help_panel=_M)
    ] = None,
    reward_per_settled_model: Annotated[
        str | None, typer.Option(help="Miner reward per settled model [0.001].", rich_help_panel=_M)
    ] = None,
    reward_per_model_case: Annotated[
        str | None, typer.Option(help="Miner reward per model x test case [0.001].", rich_help_panel=_M)
    ] = None,
    success_rate: Annotated[
        float | None, typer.Option(help="Training success probability [0.9].", rich_help_panel=_R)
    ] = None,
    gain_mean: Annotated[
        float | None, typer.Option(help="Mean latent gain of a training round [1].", rich_help_panel=_R)
    ] = None,
    gain_std: Annotated[float | None, typer.Option(help="Std of the latent gain [1].", rich_help_panel=_R)] = None,
    join_rate: Annotated[
        float | None,
        typer.Option(help="New participants per round (0.5 = one every 2 rounds) [0].", rich_help_panel=_R),
    ] = None,
    sybil_share: Annotated[
        float | None,
        typer.Option(
            help="Share of participants run by one Sybil operator: they bid the least allowed and free-ride [0].",
            rich_help_panel=_R,
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Processes for several runs [2].", rich_help_panel=_R)] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Results folder: summary.json, figures.", rich_help_panel=_O)
    ] = None,
    traces: Annotated[
        bool | None,
        typer.Option("--traces/--no-traces", help="Also write balances.npy and versions.npy.", rich_help_panel=_O),
    ] = None,
    figures: Annotated[
        bool | None,
        typer.Option("--figures/--no-figures", help="Write figures (PNG + PDF) to --out.", rich_help_panel=_O),
    ] = None,
    version_rounds: Annotated[
        int | None, typer.Option(help="Rounds in the version figure [100].", rich_help_panel=_O)
    ] = None,
    ledger: Annotated[
        Path | None, typer.Option(help="Sign and store every block in DIR/chain.sqlite (slow).", rich_help_panel=_O)
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar or table.", rich_help_panel=_O)] = False,
) -> None:
    """Simulate DeRelayL in one process: the paper's coins and version figures, and more."""
    from derelayl.sim.config import load_toml, resolve_config
    from derelayl.sim.runner import run_all

    if seed is not None and seeds is not None:
        raise fail("give --seed or --seeds, not both")
    if compare_schemes and scheme is not None:
        raise fail("give --scheme or --compare-schemes, not both")
    flags: dict[str, Any] = dict(
        participants=participants,
        rounds=rounds,
        seeds=seeds if seeds is not None else seed,
        scheme="lineage,decay,capped" if compare_schemes else scheme,
        preset=preset,
        success_rate=success_rate,
        gain_mean=gain_mean,
        gain_std=gain_std,
        join_rate=join_rate,
        sybil_share=sybil_share,
        workers=workers,
        traces=traces,
        figures=figures,
        version_rounds=version_rounds,
    )
    protocol: dict[str, Any] = dict(
        k=k,
        select_fraction=select_fraction,
        cap_fraction=cap_fraction,
        cap=cap,
        test_cases=test_cases,
        testers=testers,
        royalty_decay=royalty_decay,
        encryption_miner_holds_models=encryption_miner_holds_models,
        trainer_holds_parent=trainer_holds_parent,
        lineage_payee=lineage_payee,
        phase_timeout=phase_timeout,
        min_improvement=min_improvement,
        pooled_cases=pooled_cases,
        appeal_testers=appeal_testers,
        case_commitments=case_commitments,
        mo_budget=mo_budget,
        lineage_reward=lineage_reward,
        supply_cap=supply_cap,
        min_trainer_bid=min_trainer_bid,
        tester_stake=tester_stake,
        reward_per_deposit=reward_per_deposit,
        reward_per_commitment=reward_per_commitment,
        reward_per_test_case=reward_per_test_case,
        reward_per_tested_model=reward_per_tested_model,
        reward_per_settled_model=reward_per_settled_model,
        reward_per_model_case=reward_per_model_case,
    )
    try:
        cfg = resolve_config(load_toml(config) if config else None, flags, protocol)
        if cfg.traces and out_dir is None:
            raise fail("--traces needs --out DIR")
        if ledger is not None and (ledger / "chain.sqlite").exists():
            raise fail(f"{ledger}/chain.sqlite exists; give an empty --ledger folder")
        with Progress(
            TextColumn("[bold]round"),
            MofNCompleteColumn(),
            BarColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=quiet,
        ) as progress:
            bar = progress.add_task("", total=cfg.rounds * len(cfg.jobs()))

            def on_progress(done: int, total: int) -> None:
                progress.update(bar, completed=done)

            with contextlib.ExitStack() as held:
                if out_dir is not None:  # one command per output folder
                    held.enter_context(FolderLock(out_dir, "derelayl simulate"))
                summary, _ = run_all(cfg, out_dir, ledger, None if quiet else on_progress)
    except DerelaylError as exc:
        raise fail(str(exc)) from exc
    if not quiet:
        _report(summary, out_dir)


def _report(summary: dict[str, Any], out_dir: Path | None) -> None:
    runs = summary.get("runs") or [summary]
    table = Table(title=f"derelayl simulate — {summary['wall_seconds']} s wall")
    for column in ("scheme", "seed", "run s", "supply", "p10", "p50", "p90", "Gini", "covers bid", "latest"):
        table.add_column(column, justify="right")
    for run in runs:
        q, f = run["balance_quantiles_coins"], run["final"]
        table.add_row(
            run["scheme"],
            str(run["seed"]),
            f"{run.get('wall_seconds', run.get('run_wall_seconds'))}",
            f"{f['supply_coins']:.4g}",
            f"{q['p10']:.4g}",
            f"{q['p50']:.4g}",
            f"{q['p90']:.4g}",
            f"{f['gini']:.3f}",
            f"{f['covers_taker_bid']:.1%}",
            f"{f['latest_share_mean']:.1%}",
        )
    out.print(table)
    if out_dir is not None:
        out.print(f"results in {out_dir}/")
