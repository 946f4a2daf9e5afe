"""``derelayl run --ledger evm``: the same network with the contract as its ledger.

The contract is deployed on the embedded py-evm (default), on our own anvil (``--rpc anvil``,
its chain kept in ``OUT/anvil-state.json``) or on any JSON-RPC node (``--rpc URL``; ``--key``
pays the participants' gas). ``OUT/contract.json`` records where it lives; a second run on the
same folder resumes from the contract (its history is replayed with the core, and the task
follows it), except on the embedded chain, which lives in memory and ends with the process.
Each participant is an Ethereum account derived from the seed (a local network's keys; never
for real funds) and signs only its own messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from derelayl.errors import ConfigError
from derelayl.evm.client import ContractClient
from derelayl.evm.node import ANVIL_DEV_KEY, Node
from derelayl.evm.signing import EvmKey, EvmSigner, derive_evm_keys
from derelayl.evm.tools import open_node, verify_contract
from derelayl.folders import write_atomic
from derelayl.ledger.client import ChainEvent
from derelayl.protocol.blocks import is_block
from derelayl.protocol.digest import compute_state_root
from derelayl.protocol.state import State

__all__ = ["EvmLedger", "open_evm_ledger"]

RECORD = "contract.json"
ANVIL_STATE = "anvil-state.json"


@dataclass
class EvmLedger:
    """An opened contract for a run: its client, each participant's signer, and how it began."""

    node: Node
    client: ContractClient
    signers: list[EvmSigner]
    resumed_blocks: int
    record: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """The ledger part of summary.json, after a fresh verification of the whole history."""
        checked = verify_contract(ContractClient(self.node, self.client.address))
        if checked["round"] != self.client.state.round:
            raise ConfigError("the contract's history replays to another round than the run's")
        return {
            "ledger": {**self.record, **checked, "verified": True},
            "height": checked["blocks"],
            "head_hash": compute_state_root(self.client.state).hex(),
        }


def _write_record(path: Path, record: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(record, indent=2) + "\n")


def open_evm_ledger(
    out_dir: Path,
    *,
    params: Any,
    seed: bytes,
    key_seed: int,
    participants: int,
    rpc: str | None,
    funder: EvmKey | None,
    chain_randomness: bool,
    follow: Any,
) -> EvmLedger:
    """Deploy (or reopen) the run's contract; ``follow(state)`` is called after every block
    of a resumed history, as the task's files are rebuilt from the chain."""
    record_path = out_dir / RECORD
    keys = derive_evm_keys(key_seed, participants)
    previous = json.loads(record_path.read_text()) if record_path.exists() else None
    if previous is not None and previous.get("backend") == "embedded":
        raise ConfigError(
            f"{out_dir} holds a run on the embedded EVM, whose chain ended with its process; use another --out "
            "(or --rpc anvil, which keeps its chain in the folder)"
        )
    node = open_node(
        rpc, state=out_dir / ANVIL_STATE if rpc == "anvil" else None, funder=funder or EvmKey(ANVIL_DEV_KEY)
    )
    try:
        if previous is not None:
            if previous.get("chain_id") != node.chain_id:
                raise ConfigError(f"{out_dir} holds a run on chain {previous.get('chain_id')}, not {node.chain_id}")

            def on_event(event: ChainEvent, _tx: bytes, state: State) -> None:
                if is_block(event.operation):
                    follow(state)

            since = previous.get("genesis_block", 0)
            client = ContractClient(node, previous["contract"], on_event=on_event, since=since)
            client.sync()
            if client.state.keys[:participants] != [k.public for k in keys] or client.state.params != params:
                raise ConfigError(
                    f"{out_dir} holds a run with other participants, seed or parameters; "
                    "use another --out or the same settings to resume"
                )
            resumed = len(client.history.events)
            record = previous
        else:
            node.fund([k.address for k in keys])
            client = ContractClient.deploy(
                node, params, seed, [k.public for k in keys], keys[0], mix_randomness=chain_randomness
            )
            resumed = 0
            record = {
                "backend": "embedded" if rpc is None else ("anvil" if rpc == "anvil" else "rpc"),
                "rpc": rpc,
                "chain_id": node.chain_id,
                "contract": client.address,
                "genesis_block": client.history.genesis_block,
                "chain_randomness": chain_randomness,
            }
            _write_record(record_path, record)
    except BaseException:
        node.close()
        raise
    return EvmLedger(node, client, [client.signer(k) for k in keys], resumed, record)
