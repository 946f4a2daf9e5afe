"""What the explorer shows, gathered while it replays (and keeps following) a chain.

``ChainIndex`` opens a local signed chain read-only and applies every block with the
protocol core (``Chain.start`` / ``Chain.catch_up``: links, signatures, rules, state roots,
money), recording as it goes: blocks, per-round figures, every participant's balance and
rewards by reason per round, and every model (round, trainer, payee, parent, version,
score, selected). ``follow()`` applies the blocks another process has appended since. A
block that fails verification stops the index there: it is named, and nothing after it is
shown. Nothing is written anywhere.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from derelayl.errors import ChainIntegrityError
from derelayl.ledger.base import StoredBlock
from derelayl.ledger.chain import Chain
from derelayl.ledger.sqlite import SQLiteLedger
from derelayl.protocol.blocks import Block, CommitReceipt, DepositReceipt, SettleReceipt, TestReceipt
from derelayl.protocol.messages import block_messages
from derelayl.protocol.state import State
from derelayl.protocol.types import UNIT
from derelayl.stats import gini

__all__ = ["ChainIndex", "ModelRecord"]


@dataclass
class ModelRecord:
    model_id: int
    round: int
    """The round it was committed in (-1: genesis)."""
    trainer: int
    payee: int
    """Who is paid each time it or a descendant is selected: the model owner of its pair."""
    parent: int
    version: int
    score: int | None = None
    selected: bool = False
    children: list[int] = field(default_factory=list)


class ChainIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.ledger = SQLiteLedger(path, create=False)  # read-only; refuses a file that is not a chain
        self.blocks: list[dict[str, Any]] = []
        self.rounds: list[dict[str, Any]] = []
        self.models: dict[int, ModelRecord] = {0: ModelRecord(0, -1, 0, 0, -1, 0, selected=True)}
        self.balances: list[NDArray[np.int64]] = []
        """Per settled round: every participant's balance after it (units)."""
        self.rewards: list[dict[str, NDArray[np.int64]]] = []
        """Per settled round: units received by reason (lineage, miner, deposits and refunds)."""
        self.bad: tuple[int, str] | None = None
        self.chain: Chain | None = None
        self.applied = 0
        self._last: NDArray[np.int64] | None = None
        """Balances before the block being applied."""
        self._money: dict[str, NDArray[np.int64]] = {}
        """This round's units by reason, per participant, so far."""
        self._payee_of_trainer: dict[int, int] = {}
        self._pairs, self._live, self._committed = 0, 1, 0
        self.follow()

    # ------------------------------------------------------------ replay

    def follow(self) -> int:
        """Apply what was appended since the last call; the height verified so far."""
        with self.lock:
            if self.bad is not None:
                return self.applied
            self.ledger.refresh()
            try:
                if self.chain is None:
                    self.chain = Chain.start(self.ledger, self._on_block)
                    self.applied = 1
                self.applied = self.chain.catch_up(self.applied, self._on_block)
            except ChainIntegrityError as exc:
                self.bad = (exc.height, str(exc))
            return self.applied

    @property
    def state(self) -> State | None:
        return None if self.chain is None else self.chain.state

    def _on_block(self, stored: StoredBlock, block: Block | None, receipt: Any, state: State) -> None:
        n = state.n_participants
        if block is None:  # genesis
            self.blocks.append(
                {"height": 0, "round": 0, "kind": "genesis", "miner": 0, "items": n, "hash": stored.hash.hex()}
            )
            self._last = state.balances.copy()
            self._new_round(n)
            return
        assert self._last is not None
        delta = state.balances - self._last
        self._last = state.balances.copy()
        money = self._money
        self.blocks.append(
            {
                "height": stored.height,
                "round": block.round,
                "kind": block.kind.name.lower(),
                "miner": int(block.miner),
                "items": len(block_messages(block)),
                "miner_reward": int(getattr(receipt, "miner_reward", 0)),
                "hash": stored.hash.hex(),
            }
        )
        if isinstance(receipt, DepositReceipt):
            pairs = receipt.pairs
            paid = np.zeros(n, np.int64)
            np.add.at(paid, pairs.trainer, pairs.trainer_deposit)
            np.add.at(paid, pairs.model_owner, pairs.mo_deposit)
            money["deposits"] -= paid
            money["miner"] += delta + paid
            self._pairs, self._live = len(pairs), len(state.live)
            self._payee_of_trainer = dict(zip(pairs.trainer.tolist(), pairs.model_owner.tolist(), strict=True))
        elif isinstance(receipt, CommitReceipt):
            money["miner"] += delta
            self._committed = len(receipt.model_id)
            for mid, parent, trainer in zip(
                receipt.model_id.tolist(), receipt.parent_model.tolist(), state.commits.owner.tolist(), strict=True
            ):
                payee = self._payee_of_trainer.get(trainer, 0)
                self.models[mid] = ModelRecord(mid, block.round, trainer, payee, parent, state.round + 1)
                if parent in self.models:
                    self.models[parent].children.append(mid)
        elif isinstance(receipt, TestReceipt):
            money["miner"] += delta
            for mid, score in zip(state.commits.model_id.tolist(), state.commits.score.tolist(), strict=True):
                if mid in self.models:
                    self.models[mid].score = score
        elif isinstance(receipt, SettleReceipt):
            lineage = np.asarray(receipt.lineage_payout, dtype=np.int64)
            miner = np.zeros(n, np.int64)
            miner[block.miner] = receipt.miner_reward
            money["lineage"] += lineage
            money["miner"] += miner
            money["refunds"] += delta - lineage - miner
            self._settled(block.round, receipt, state)
        else:  # a transfer or a join: not a reward
            money["deposits"] += 0

    def _new_round(self, n: int) -> None:
        self._money = {k: np.zeros(n, np.int64) for k in ("lineage", "miner", "refunds", "deposits")}

    def _settled(self, round_: int, receipt: SettleReceipt, state: State) -> None:
        for mid in receipt.selected_model.tolist():
            if mid in self.models:
                self.models[mid].selected = True
        self.balances.append(state.balances.copy())
        self.rewards.append(self._money)
        self.rounds.append(
            {
                "round": round_,
                "height": len(self.blocks) - 1,
                "supply_coins": state.supply / UNIT,
                "gini": gini(state.balances),
                "models": self._committed,
                "selected": len(receipt.selected_model),
                "pairs_per_live_model": self._pairs / self._live if self._live else 0.0,
                "latest_version": state.latest_version,
            }
        )
        self._new_round(state.n_participants)

    # ------------------------------------------------------------ queries

    def lineage(self, model_id: int) -> list[ModelRecord]:
        """The model and its ancestors back to genesis, newest first."""
        out, seen = [], set()
        current: int | None = model_id
        while current is not None and current in self.models and current not in seen:
            seen.add(current)
            record = self.models[current]
            out.append(record)
            current = record.parent if record.parent >= 0 else None
        return out

    def close(self) -> None:
        self.ledger.close()
