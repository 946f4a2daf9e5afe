"""``derelayl keys new``, ``derelayl node``: parsing and display only."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from derelayl.errors import DerelaylError
from derelayl.terminal import console, fail

__all__ = ["keys_app", "node"]

out = Console()
keys_app = typer.Typer(help="Participant keys.", no_args_is_help=True)


@keys_app.command("new")
def keys_new(path: Annotated[Path, typer.Argument(help="Key file to create (never overwritten).")]) -> None:
    """Create a new random Ethereum key for a node and print its address."""
    from derelayl.node.keys import new_key

    try:
        key = new_key(path)
    except DerelaylError as exc:
        raise fail(str(exc)) from exc
    out.print(key.address)


def node(
    key: Annotated[Path, typer.Option(help="This node's key file (derelayl keys new).")],
    rpc: Annotated[str, typer.Option(help="JSON-RPC URL of the Ethereum node.")],
    contract: Annotated[str, typer.Option(help="Address of the DeRelayL contract.")],
    data: Annotated[str, typer.Option(help="This node's private data: digits:I/N (shard I of N).")],
    home: Annotated[Path, typer.Option(help="Folder for its model store and published test cases.")] = Path(
        "runs/node"
    ),
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8600,
    peers: Annotated[str, typer.Option(help="Other nodes' URLs, comma-separated.")] = "",
    public_url: Annotated[
        str | None, typer.Option(help="URL others reach this node at (default http://HOST:PORT).")
    ] = None,
    split_seed: Annotated[int, typer.Option(help="Seed of the data split and the genesis model.")] = 42,
    alpha: Annotated[float, typer.Option(help="Dirichlet concentration of the label split.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of this node's training and test draws.")] = 42,
    rounds: Annotated[int | None, typer.Option(help="Stop once this many rounds have settled.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Log each step.")] = False,
) -> None:
    """Run one participant: its key, its data, its model store, an HTTP server and the contract."""
    from derelayl.node.runner import DataSpec, NodeOptions, run_node

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        if not 0 < port < 65536:
            raise DerelaylError(f"--port must be in 1..65535, got {port}")
        options = NodeOptions(
            key=key,
            home=home,
            rpc=rpc,
            contract=contract,
            data=DataSpec.parse(data, split_seed, alpha),
            host=host,
            port=port,
            peers=tuple(p for p in peers.split(",") if p),
            seed=seed,
            rounds=rounds,
            public_url=public_url,
        )
        run_node(options)
    except DerelaylError as exc:
        raise fail(str(exc)) from exc
    console.print("node stopped")
