"""``derelayl experiment CONFIG.toml --out DIR``: DeRelayL and baselines on the same split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from derelayl.errors import DerelaylError
from derelayl.terminal import console, fail

__all__ = ["attacks", "experiment"]


def experiment(
    config: Annotated[Path, typer.Argument(help="Experiment config (TOML), e.g. experiments/digits_dirichlet.toml.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Results folder.")] = Path("runs/experiment"),
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress lines.")] = False,
) -> None:
    """Run DeRelayL and baselines on the same split, model and initial weights; write
    results.json, split.json, figures and report.md."""
    from derelayl.experiments.config import load_config
    from derelayl.experiments.runner import run_experiment

    try:
        cfg = load_config(config)
        results = run_experiment(cfg, out_dir, None if quiet else lambda line: console.print(line))
    except DerelaylError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"{len(results['summary'])} methods in {results['wall_seconds']:.1f} s; report in {out_dir}/report.md")


def attacks(
    config: Annotated[
        Path, typer.Argument(help="Experiment config (TOML): data, model, training, rounds of FedAvg.")
    ] = Path("experiments/digits_dirichlet.toml"),
    out_dir: Annotated[Path, typer.Option("--out", help="Results folder.")] = Path("runs/attacks"),
    share: Annotated[float, typer.Option(help="Share of participants dishonest, one kind at a time.")] = 0.3,
    seeds: Annotated[str, typer.Option(help='Seeds of split and training: "0-4", "1,3,5".')] = "0-2",
    kinds: Annotated[
        str,
        typer.Option(help="Kinds, comma-separated: free_rider, copier, label_flip, backdoor, lying_tester, or all."),
    ] = "all",
    rounds: Annotated[int, typer.Option(help="Relay rounds per run.")] = 50,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress lines.")] = False,
) -> None:
    """Each kind of dishonest participant against the relay (faithful and defended) and FedAvg
    (plain and trimmed mean), over seeds: accuracy lost, rewards taken, models caught, backdoor
    success; writes results.json, report.md and attacks.png."""
    from derelayl.agents.kinds import KINDS
    from derelayl.experiments.attacks import check_options, run_attacks
    from derelayl.experiments.config import load_config
    from derelayl.sim.config import parse_seeds

    try:
        chosen = KINDS if kinds == "all" else tuple(k.strip() for k in kinds.split(",") if k.strip())
        check_options(share, chosen, rounds)
        chosen_seeds = parse_seeds(seeds)
        cfg = load_config(config)
        results = run_attacks(
            cfg,
            out_dir,
            share=share,
            seeds=chosen_seeds,
            kinds=chosen,
            rounds=rounds,
            progress=None if quiet else lambda line: console.print(line),
        )
    except DerelaylError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"{len(results['runs'])} runs in {results['wall_seconds']:.1f} s; report in {out_dir}/report.md")
