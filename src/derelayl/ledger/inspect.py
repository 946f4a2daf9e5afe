"""Read a stored chain for people: recent blocks, balances, and a model's lineage.

Everything is recomputed by replaying the verified chain; nothing derived is trusted from
storage.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

from derelayl.errors import ConfigError
from derelayl.ledger.base import StoredBlock
from derelayl.ledger.chain import Chain
from derelayl.ledger.sqlite import SQLiteLedger
from derelayl.protocol.blocks import Block, CommitReceipt
from derelayl.protocol.state import State
from derelayl.protocol.types import format_units

__all__ = ["inspect_chain"]


def _items(body: dict[str, Any]) -> int:
    return sum(len(v) for v in body.values() if isinstance(v, list))


def inspect_chain(path: Path, *, last_blocks: int = 8, model: int | None = None, top: int = 10) -> dict[str, Any]:
    recent: deque[dict[str, Any]] = deque(maxlen=max(last_blocks, 0))
    # model id -> (parent id, owner, version); the genesis model is 0
    models: dict[int, tuple[int, int, int]] = {0: (-1, 0, 0)}

    def on_block(stored: StoredBlock, block: Block | None, receipt: Any, state: State) -> None:
        header = json.loads(stored.header)
        recent.append(
            {
                "height": stored.height,
                "round": header["round"],
                "kind": header["kind"],
                "miner": header["miner"],
                "items": _items(json.loads(stored.body)) if block is not None else len(state.keys),
                "hash": stored.hash.hex(),
            }
        )
        if isinstance(receipt, CommitReceipt):
            version = state.round + 1
            for mid, parent, owner in zip(receipt.model_id, receipt.parent_model, state.commits.owner, strict=True):
                models[int(mid)] = (int(parent), int(owner), version)

    ledger = SQLiteLedger(path, create=False)
    try:
        chain = Chain.open(ledger, on_block=on_block)
    finally:
        ledger.close()
    state = chain.state
    order = sorted(range(state.n_participants), key=lambda i: -int(state.balances[i]))[:top]
    report: dict[str, Any] = {
        "height": chain.height,
        "round": state.round,
        "head": chain.head_hash.hex(),
        "blocks": list(recent),
        "money": {
            "minted": format_units(state.minted),
            "burned": format_units(state.burned),
            "supply": format_units(state.supply),
            "escrow": format_units(state.escrow),
        },
        "richest": [
            {"participant": i, "key": state.keys[i].hex(), "coins": format_units(int(state.balances[i]))} for i in order
        ],
        "lineage": None,
    }
    if model is not None:
        if model not in models:
            raise ConfigError(f"no model {model} in this chain (models 0..{max(models)})")
        lineage = []
        current = model
        while current >= 0:
            parent, owner, version = models[current]
            lineage.append({"model": current, "version": version, "owner": owner})
            current = parent
        report["lineage"] = lineage
    return report
