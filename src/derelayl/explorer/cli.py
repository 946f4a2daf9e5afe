"""``derelayl explorer``: parsing only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from derelayl.errors import DerelaylError
from derelayl.terminal import console, fail


def explorer(
    chain: Annotated[Path, typer.Option(help="The chain.sqlite to show (opened read-only; followed as it grows).")],
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8800,
) -> None:
    """A web page of a chain: rounds, blocks, participants, models and their lineage, money."""
    import uvicorn

    from derelayl.explorer.app import make_app, vendor_dir
    from derelayl.explorer.index import ChainIndex

    if not 0 < port < 65536:
        raise fail(f"--port must be in 1..65535, got {port}")
    try:
        index = ChainIndex(chain)
    except DerelaylError as exc:
        raise fail(str(exc)) from exc
    state = index.state
    console.print(
        f"{chain}: {len(index.blocks)} blocks verified, round {state.round if state else '?'}"
        + (f"; FAILS at block {index.bad[0]}: {index.bad[1]}" if index.bad else "")
    )
    if vendor_dir() is None:
        console.print("charts and the lineage graph need scripts/setup's npm packages; pages show tables only")
    console.print(f"explorer on http://{host}:{port}/ (Ctrl-C stops it)")
    try:
        uvicorn.run(make_app(index), host=host, port=port, log_level="warning")
    finally:
        index.close()
