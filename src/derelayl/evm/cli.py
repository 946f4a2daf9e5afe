"""``derelayl deploy`` and the contract side of ``verify`` / ``inspect``: parsing and display
only (the work is in ``derelayl.evm.tools``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from derelayl.errors import ConfigError, DerelaylError
from derelayl.terminal import console, fail

__all__ = ["contract_target", "deploy"]

out = Console()


def deploy(
    rpc: Annotated[str, typer.Option(help="JSON-RPC URL of the Ethereum node.")],
    key: Annotated[
        str | None,
        typer.Option(
            help="Deployer's private key (hex, or a file holding it): participant 0, holds the genesis model. "
            "Default: anvil's first development account."
        ),
    ] = None,
    participant: Annotated[
        list[str] | None, typer.Option("--participant", help="Address of another founding participant (repeatable).")
    ] = None,
    preset: Annotated[str, typer.Option(help="Protocol parameter preset: reference or minimal.")] = "reference",
    seed: Annotated[int, typer.Option(help="Genesis beacon seed.")] = 42,
    chain_id: Annotated[int | None, typer.Option(help="Refuse a node on another chain.")] = None,
    chain_randomness: Annotated[
        bool, typer.Option(help="Mix the chain's prevrandao into the beacon at every block.")
    ] = True,
) -> None:
    """Deploy the DeRelayL contract on an Ethereum node and print its address."""
    from derelayl.evm.node import ANVIL_DEV_KEY
    from derelayl.evm.signing import EvmKey
    from derelayl.evm.tools import deploy_contract, open_node, parse_key
    from derelayl.protocol.params import preset as get_preset
    from derelayl.runtime.local import run_seed

    try:
        if rpc == "anvil" or not rpc.startswith(("http://", "https://")):
            raise ConfigError("deploy needs --rpc URL of a running node (an http(s) URL)")
        deployer = parse_key(key) if key is not None else EvmKey(ANVIL_DEV_KEY)
        params = get_preset(preset)
        node = open_node(rpc, chain_id=chain_id)
        try:
            client = deploy_contract(
                node, params, run_seed(seed), list(participant or []), deployer, mix_randomness=chain_randomness
            )
        finally:
            node.close()
    except DerelaylError as exc:
        raise fail(str(exc)) from exc
    console.print(
        f"deployed on chain {node.chain_id} by {deployer.address}; {client.state.n_participants} participants, "
        f"preset {preset}"
    )
    out.print(client.address)


def contract_target(target: Path | None, rpc: str | None, contract: str | None, chain_id: int | None) -> Any:
    """The node and address ``verify``/``inspect`` should read: ``--rpc URL --contract ADDR``,
    or the folder of a ``run --ledger evm`` (its contract.json; anvil restarted on its saved
    chain). None if the target is a local chain file."""
    from derelayl.evm.tools import open_node
    from derelayl.runtime.evm_run import ANVIL_STATE, RECORD

    if rpc is not None or contract is not None:
        if rpc is None or contract is None:
            raise ConfigError("reading a contract needs both --rpc URL and --contract ADDRESS")
        return open_node(rpc, chain_id=chain_id), contract
    devnet = target / "devnet.json" if target is not None else None
    if devnet is not None and devnet.is_file():
        record = {"backend": "anvil", **json.loads(devnet.read_text())}
    elif target is None or not (target / RECORD).is_file():
        return None
    else:
        record = json.loads((target / RECORD).read_text())
    if record.get("backend") in ("embedded", "embedded-rpc"):
        raise ConfigError(
            f"{target} ran on the embedded EVM, whose chain ended with the run (the run verified it: summary.json)"
        )
    if record.get("backend") == "anvil":
        if not (target / ANVIL_STATE).is_file():
            raise ConfigError(f"{target / ANVIL_STATE} is missing: the run's anvil chain cannot be restarted")
        node = open_node("anvil", state=target / ANVIL_STATE)
    else:
        node = open_node(record["rpc"], chain_id=record.get("chain_id"))
    return node, record["contract"]
