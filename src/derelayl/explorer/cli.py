"""``derelayl explorer``: parsing only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from derelayl.errors import DerelaylError
from derelayl.terminal import console, fail


def explorer(
    chain: Annotated[
        Path | None, typer.Option(help="A chain.sqlite to show (opened read-only; followed as it grows).")
    ] = None,
    rpc: Annotated[str | None, typer.Option(help="Or: the JSON-RPC URL of a node holding the contract.")] = None,
    contract: Annotated[str | None, typer.Option(help="... and the contract's address (e.g. a devnet's).")] = None,
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
        if rpc is not None or contract is not None:
            from derelayl.evm.cli import contract_target

            node, address = contract_target(None, rpc, contract, None)
            index = ChainIndex.of_contract(node, address)
        elif chain is None:
            raise fail("give --chain PATH (a chain.sqlite) or --rpc URL --contract ADDRESS")
        else:
            index = ChainIndex(chain, lazy=True)  # the genesis block now; the rest while serving
    except DerelaylError as exc:
        raise fail(str(exc)) from exc
    console.print(f"{index.source}: genesis verified; the rest is verified and indexed while it serves")
    if vendor_dir() is None:
        console.print("charts and the lineage graph need scripts/setup's npm packages; pages show tables only")
    console.print(f"explorer on http://{host}:{port}/ (Ctrl-C stops it)")
    try:
        uvicorn.run(make_app(index), host=host, port=port, log_level="warning")
    finally:
        index.close()
