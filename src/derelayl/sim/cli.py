"""``derelayl simulate`` (being built: issue 3)."""

import typer


def simulate() -> None:
    """Reproduce the paper's numerical results (not built yet)."""
    raise typer.Exit(3)
