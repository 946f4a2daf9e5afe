"""Read a ledger's history for people: recent blocks, balances, and a model's lineage.

Everything is recomputed by replaying the verified history (a signed SQLite chain, or a
contract's logs); nothing derived is trusted from storage. ``Inspector`` collects what the
report needs while a replay runs; ``inspect_chain`` drives it over a local chain
(``derelayl.evm.tools.inspect_contract`` over a contract).
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from derelayl import jsonsafe
from derelayl.errors import ConfigError
from derelayl.ledger.base import StoredBlock
from derelayl.ledger.chain import Chain
from derelayl.ledger.sqlite import SQLiteLedger
from derelayl.protocol.blocks import Block, CommitReceipt
from derelayl.protocol.messages import block_messages
from derelayl.protocol.state import State
from derelayl.protocol.types import format_units

__all__ = ["Inspector", "inspect_chain"]


class Inspector:
    """What a report shows, gathered block by block during a replay."""

    def __init__(self, last_blocks: int = 8) -> None:
        self.recent: deque[dict[str, Any]] = deque(maxlen=max(last_blocks, 0))
        # model id -> (parent id, holder, version); the genesis model is 0
        self.models: dict[int, tuple[int, int, int]] = {0: (-1, 0, 0)}

    def add(self, height: int, block: Block, receipt: Any, state: State, block_hash: bytes) -> None:
        """Record a block just applied (``state`` is the state after it)."""
        self.recent.append(
            {
                "height": height,
                "round": block.round,
                "kind": block.kind.name.lower(),
                "miner": block.miner,
                "items": len(block_messages(block)) + (1 if block.kind.name == "TEST" else 0),
                "hash": block_hash.hex(),
            }
        )
        if isinstance(receipt, CommitReceipt):
            version = state.round + 1
            for mid, parent, owner in zip(receipt.model_id, receipt.parent_model, state.commits.owner, strict=True):
                self.models[int(mid)] = (int(parent), int(owner), version)

    def report(
        self, state: State, *, height: int, head: bytes, model: int | None = None, top: int = 10
    ) -> dict[str, Any]:
        order = sorted(range(state.n_participants), key=lambda i: -int(state.balances[i]))[:top]
        report: dict[str, Any] = {
            "height": height,
            "round": state.round,
            "head": head.hex(),
            "blocks": list(self.recent),
            "money": {
                "minted": format_units(state.minted),
                "burned": format_units(state.burned),
                "supply": format_units(state.supply),
                "escrow": format_units(state.escrow),
            },
            "richest": [
                {"participant": i, "key": _show_key(state.keys[i]), "coins": format_units(int(state.balances[i]))}
                for i in order
            ],
            "lineage": None,
        }
        if model is not None:
            report["lineage"] = self.lineage(model)
        return report

    def lineage(self, model: int) -> list[dict[str, int]]:
        if model not in self.models:
            raise ConfigError(f"no model {model} in this history (models 0..{max(self.models)})")
        out = []
        current = model
        while current >= 0:
            parent, owner, version = self.models[current]
            out.append({"model": current, "version": version, "owner": owner})
            current = parent
        return out


def _show_key(key: bytes) -> str:
    """An Ethereum participant's key is its address padded to 32 bytes: show the address."""
    return "0x" + key[12:].hex() if key[:12] == bytes(12) else key.hex()


def inspect_chain(path: Path, *, last_blocks: int = 8, model: int | None = None, top: int = 10) -> dict[str, Any]:
    inspector = Inspector(last_blocks)
    genesis: dict[str, Any] = {}

    def on_block(stored: StoredBlock, block: Block | None, receipt: Any, state: State) -> None:
        if block is None:
            header = jsonsafe.loads(stored.header)
            genesis.update(height=stored.height, round=header["round"], kind="genesis", miner=header["miner"])
            genesis.update(items=len(state.keys), hash=stored.hash.hex())
            inspector.recent.append(dict(genesis))
            return
        inspector.add(stored.height, block, receipt, state, stored.hash)

    ledger = SQLiteLedger(path, create=False)
    try:
        chain = Chain.open(ledger, on_block=on_block)
    finally:
        ledger.close()
    return inspector.report(chain.state, height=chain.height, head=chain.head_hash, model=model, top=top)
