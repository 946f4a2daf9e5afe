"""``derelayl experiment CONFIG.toml --out DIR``: DeRelayL and baselines on the same split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from derelayl.agents.kinds import KINDS
from derelayl.errors import ConfigError, DerelaylError
from derelayl.terminal import console, fail

__all__ = ["attacks", "compare", "experiment"]


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
        typer.Option(help=f"Kinds, comma-separated: {', '.join(KINDS)}, or all."),
    ] = "all",
    rounds: Annotated[int, typer.Option(help="Relay rounds per run.")] = 50,
    testers: Annotated[int, typer.Option(help="Testers per round in the pooled-cases arms (2..16).")] = 5,
    improvement_z: Annotated[
        int, typer.Option(help="The sign test's threshold in the last arm, hundredths of a standard deviation.")
    ] = 100,
    tester_stake: Annotated[
        str,
        typer.Option(
            help="Coins a tester must hold in the last arm, forfeited when an appeal finds it lying (0: none)."
        ),
    ] = "20",
    rechecks: Annotated[
        int,
        typer.Option(
            help="With encrypted scoring (the config's [methods.derelayl] fhe = true): other children "
            "each trainer re-scores under encryption in the re-check arm (1..16)."
        ),
    ] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress lines.")] = False,
) -> None:
    """Each kind of dishonest participant against the relay (faithful and defended) and FedAvg
    (plain and trimmed mean), over seeds: accuracy lost, rewards taken, models caught, backdoor
    success; writes results.json, report.md and attacks.png. With a config whose relay scores
    encrypted models (fhe = true), the relay arms are optimistic testing without and with
    encrypted re-checks."""
    from derelayl.experiments.attacks import check_options, run_attacks
    from derelayl.experiments.config import load_config
    from derelayl.sim.config import parse_coins, parse_seeds

    try:
        chosen = KINDS if kinds == "all" else tuple(k.strip() for k in kinds.split(",") if k.strip())
        check_options(share, chosen, rounds, testers, improvement_z)
        stake = parse_coins(tester_stake, "--tester-stake")
        chosen_seeds = parse_seeds(seeds)
        cfg = load_config(config)
        results = run_attacks(
            cfg,
            out_dir,
            share=share,
            seeds=chosen_seeds,
            kinds=chosen,
            rounds=rounds,
            testers=testers,
            z=improvement_z,
            stake=stake,
            rechecks=rechecks,
            progress=None if quiet else lambda line: console.print(line),
        )
    except DerelaylError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"{len(results['runs'])} runs in {results['wall_seconds']:.1f} s; report in {out_dir}/report.md")


def compare(
    config: Annotated[
        Path, typer.Argument(help="Experiment config (TOML): the setting (data, model, training, FedAvg rounds).")
    ] = Path("experiments/digits_dirichlet.toml"),
    out_dir: Annotated[Path, typer.Option("--out", help="Results folder.")] = Path("runs/compare"),
    seeds: Annotated[str, typer.Option(help='Reported seeds (split and training): "0-4", "1,3,5".')] = "0-4",
    tune_seeds: Annotated[str, typer.Option(help="Seeds the grid is tuned on (must differ from --seeds).")] = "100,101",
    methods: Annotated[
        str,
        typer.Option(
            help="Comma-separated: derelayl, derelayl-cases, derelayl-pooled, derelayl-prox, derelayl-merge, "
            "derelayl-soup, fedavg, fedprox, scaffold, gossip, or all."
        ),
    ] = "all",
    workers: Annotated[int, typer.Option(help="Processes (default: one per core).")] = 0,
    cluster: Annotated[
        str | None, typer.Option(help="A Dask scheduler's address (tcp://host:8786): run there instead.")
    ] = None,
    grid: Annotated[str, typer.Option(help="full (the fair tuning) or quick (2 values per axis: a try-out).")] = "full",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress lines.")] = False,
) -> None:
    """DeRelayL (faithful and four variants within the protocol) against FedAvg (client
    sampling), FedProx, SCAFFOLD and gossip, each tuned on the same grid, at equal bytes and at
    equal compute, over seeds; writes results.json, report.md and compare.png."""
    import os

    from derelayl.experiments.compare import METHODS, check_options, run_compare
    from derelayl.experiments.config import load_config
    from derelayl.sim.config import parse_seeds

    try:
        chosen = METHODS if methods == "all" else tuple(m.strip() for m in methods.split(",") if m.strip())
        reported, tuning = parse_seeds(seeds), parse_seeds(tune_seeds)
        if workers < 0:
            raise ConfigError(f"--workers must be in 1..64 (0: one per core), got {workers}")
        count = workers or os.cpu_count() or 1
        check_options(reported, tuning, count, chosen, grid)
        cfg = load_config(config)
        results = run_compare(
            cfg,
            out_dir,
            seeds=reported,
            tune_seeds=tuning,
            methods=chosen,
            workers=count,
            size=grid,
            cluster=cluster,
            progress=None if quiet else lambda line: console.print(line),
        )
    except DerelaylError as exc:
        raise fail(str(exc)) from exc
    runs = len(results["runs"]) + len(results["tuning"])
    typer.echo(f"{runs} runs in {results['wall_seconds']:.1f} s; report in {out_dir}/report.md")
