"""``derelayl experiment CONFIG.toml --out DIR``: DeRelayL and baselines on the same split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from derelayl.errors import DerelaylError
from derelayl.terminal import console, fail

__all__ = ["experiment"]


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
