"""What every command shares on the terminal: the stderr console and the error line."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["Rechecks", "console", "fail", "on_off"]

console = Console(stderr=True)

Rechecks = Annotated[
    int,
    typer.Option(
        help="With --fhe on and challenges: other children each trainer re-scores under encryption "
        "before it decides to challenge (0..16; 0: only the models it holds)."
    ),
]
"""``--rechecks`` of ``run``, ``node`` and ``devnet`` (``RelayBrain.rechecks``)."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` (taken literally: config keys like ``[methods]`` stay visible)
    and return the exit to raise."""
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)  # one line, never wrapped
    return typer.Exit(code)


def on_off(value: str, flag: str) -> bool:
    """An ``on``/``off`` option's value; anything else is a ``ConfigError`` naming the flag."""
    from derelayl.errors import ConfigError

    if value not in ("on", "off"):
        raise ConfigError(f"{flag} must be on or off, got {value!r}")
    return value == "on"
