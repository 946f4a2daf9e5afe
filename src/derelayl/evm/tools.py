"""What the command line does with a contract: reach a node, deploy, verify, inspect.

``verify`` and ``inspect`` read the contract's history from its logs and replay it with the
Python core (``History``): every message signature, every rule, and after every block the
contract's own checkpoint of its money and beacon; at the end the replayed state is compared
field by field with the contract's storage. The first disagreement names its block.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from derelayl.errors import ChainIntegrityError, ConfigError
from derelayl.evm.client import ContractClient
from derelayl.evm.compare import contract_snapshot, differences, state_snapshot
from derelayl.evm.node import Node, anvil, connect, embedded
from derelayl.evm.signing import EvmKey, key_of_address
from derelayl.ledger.client import ChainEvent
from derelayl.ledger.inspect import Inspector
from derelayl.protocol.blocks import Challenge, PostedCommitment, is_block
from derelayl.protocol.params import Params
from derelayl.protocol.state import State

__all__ = ["deploy_contract", "inspect_contract", "open_node", "parse_key", "verify_contract"]


def open_node(
    rpc: str | None, *, chain_id: int | None = None, state: Path | None = None, funder: EvmKey | None = None
) -> Node:
    """``None``: the embedded py-evm; ``"anvil"``: our own anvil (its chain kept in ``state``);
    anything else: a JSON-RPC URL."""
    if rpc is None:
        return embedded()
    if rpc == "anvil":
        return anvil(state=state)
    node = connect(rpc, funder=funder, chain_id=chain_id)
    return node


def parse_key(text: str) -> EvmKey:
    """A private key given as 64 hex digits (0x optional), or the path of a file holding one."""
    raw = text.strip()
    path = Path(raw)
    if path.is_file():
        try:
            raw = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--key: cannot read {path} ({exc.strerror})") from exc
    try:
        secret = bytes.fromhex(raw.removeprefix("0x"))
    except ValueError:
        raise ConfigError("--key must be a private key of 64 hex digits, or a file holding one") from None
    return EvmKey(secret)


def deploy_contract(
    node: Node, params: Params, seed: bytes, participants: list[str], deployer: EvmKey, *, mix_randomness: bool = True
) -> ContractClient:
    """Deploy with ``participants`` registered (the deployer first: it holds the genesis model)."""
    keys = [deployer.public] + [key_of_address(a) for a in participants if key_of_address(a) != deployer.public]
    if len(keys) < 2:
        raise ConfigError("a network needs at least 2 participants: give --participant ADDRESS at least once")
    return ContractClient.deploy(node, params, seed, keys, deployer, mix_randomness=mix_randomness)


def verify_contract(client: ContractClient) -> dict[str, Any]:
    """Replay the whole history; raises ``ChainIntegrityError`` at the first bad block."""
    client.sync()
    try:
        theirs = contract_snapshot(client.contract)
    except Exception as exc:  # web3 raises its own types when a view reverts or answers garbage
        raise ChainIntegrityError(
            client.node.block_number(), f"the contract does not answer DeRelayL's views ({type(exc).__name__})"
        ) from exc
    diff = differences(state_snapshot(client.state), theirs)
    if diff:
        raise ChainIntegrityError(
            client.node.block_number(), "the contract's storage differs from the replay: " + "; ".join(diff)
        )
    blocks = sum(1 for e in client.history.events if is_block(e.operation))
    posted = sum(1 for e in client.history.events if isinstance(e.operation, PostedCommitment))
    challenges = [
        {"round": e.operation.round, "challenger": e.operation.challenger}
        for e in client.history.events
        if isinstance(e.operation, Challenge)
    ]
    number, head = client.head()
    return {
        "contract": client.address,
        "chain_id": client.node.chain_id,
        "blocks": blocks,
        "operations": len(client.history.events),
        "posted_commitments": posted,
        "challenges": challenges,
        "round": client.state.round,
        "head_block": number,
        "head": head.hex(),
    }


def inspect_contract(
    node: Node, address: str, *, last_blocks: int = 8, model: int | None = None, top: int = 10
) -> dict[str, Any]:
    inspector = Inspector(last_blocks)

    def on_event(event: ChainEvent, tx: bytes, state: State) -> None:
        if is_block(event.operation):
            inspector.add(event.height, event.operation, event.receipt, state, tx)

    client = ContractClient(node, address, on_event=on_event)
    report = verify_contract(client)
    out = inspector.report(
        client.state, height=report["head_block"], head=bytes.fromhex(report["head"]), model=model, top=top
    )
    out["contract"] = client.address
    return out
