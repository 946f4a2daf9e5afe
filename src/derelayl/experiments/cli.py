"""``derelayl experiment`` (being built: issue 4)."""

import typer


def experiment() -> None:
    """Run DeRelayL and baselines on the same split (not built yet)."""
    raise typer.Exit(3)
