"""What the explorer shows, gathered while it replays (and keeps following) a chain.

``ChainIndex`` replays a ledger with the protocol core and records, as it goes: blocks,
per-round figures, every participant's balance and rewards by reason per round, and every
model (round, trainer, payee, parent, version, score, selected). Two sources:

- a local signed chain, opened read-only (``Chain.start`` / ``Chain.catch_up``: links,
  signatures, rules, state roots, money);
- a contract on an Ethereum node (``ChainIndex.of_contract``: its logs replayed by
  ``ContractClient``, as ``verify`` does).

``follow()`` applies what was appended since. A block that fails verification stops the index
there: it is named, and nothing after it is shown. Nothing is written anywhere.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from derelayl.errors import ChainIntegrityError, StorageError
from derelayl.ledger.chain import Chain
from derelayl.ledger.client import ChainEvent
from derelayl.ledger.sqlite import SQLiteLedger
from derelayl.protocol.blocks import (
    Challenge,
    CommitReceipt,
    DepositReceipt,
    SettleReceipt,
    TestReceipt,
    is_block,
)
from derelayl.protocol.messages import block_messages
from derelayl.protocol.state import State
from derelayl.protocol.types import UNIT
from derelayl.stats import gini

if TYPE_CHECKING:
    from derelayl.evm.client import ContractClient

__all__ = ["REASONS", "ChainIndex", "ModelRecord"]

REASONS = ("lineage", "miner", "refunds", "deposits", "transfers")
"""Why a participant's balance moved in a round: lineage rewards, miner items (block and
co-tester rewards), deposits paid back, deposits paid, coins sent or received."""


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
    def __init__(self, path: Path | None, lazy: bool = False, client: ContractClient | None = None) -> None:
        """A local chain at ``path`` (``lazy``: verify its genesis block only; ``follow`` does
        the rest), or a contract's ``client``."""
        self.lock = threading.Lock()
        self.client = client
        self.ledger = None if path is None else SQLiteLedger(path, create=False)  # read-only; refuses a non-chain
        self.blocks: list[dict[str, Any]] = []
        self.rounds: list[dict[str, Any]] = []
        self.models: dict[int, ModelRecord] = {0: ModelRecord(0, -1, 0, 0, -1, 0, selected=True)}
        self.balances: list[NDArray[np.int64]] = []
        """Per settled round: every participant's balance after it (units)."""
        self.rewards: list[dict[str, NDArray[np.int64]]] = []
        """Per settled round: units received by reason (``REASONS``), per participant."""
        self.mined: Counter[int] = Counter()
        """Blocks each participant produced."""
        self.trained: defaultdict[int, list[int]] = defaultdict(list)
        """Model ids each participant trained, oldest first."""
        self.selected_by: Counter[int] = Counter()
        self.paid_for: Counter[int] = Counter()
        """Models each participant is the lineage payee of."""
        self.bad: tuple[int, str] | None = None
        self.chain: Chain | None = None
        self.applied = 0
        self.stored = 0
        self.offline: str | None = None
        """Why the contract's node did not answer the last follow (None: it did)."""
        self._last: NDArray[np.int64] | None = None
        """Balances before the block being applied."""
        self._money: dict[str, NDArray[np.int64]] = {}
        """This round's units by reason, per participant, so far."""
        self._payee_of_trainer: dict[int, int] = {}
        self._pairs, self._live, self._committed = 0, 1, 0
        self._challenger = -1
        """Who challenged the current round (-1: nobody; ``Params.challenge_bond``)."""
        if client is not None:
            self.source = f"contract {client.address}"
            client.history.on_event = self._on_event
            self._on_block(_Stored(0, b""), None, None, client.state)  # the genesis, verified by the client
        else:
            self.source = str(path)
        self.follow(limit=0 if lazy else None)

    @classmethod
    def of_contract(cls, node: Any, address: str) -> ChainIndex:
        """The contract at ``address`` on an Ethereum ``node`` (``derelayl.evm.node``)."""
        from derelayl.evm.client import ContractClient

        return cls(None, client=ContractClient(node, address))

    # ------------------------------------------------------------ replay

    def follow(self, limit: int | None = None) -> int:
        """Apply what was appended since the last call (at most ``limit`` blocks: a server
        indexes a long chain in steps and answers in between); the height verified so far."""
        with self.lock:
            if self.bad is not None:
                return self.applied
            if self.client is not None:
                try:
                    self.client.sync()
                    self.offline = None
                except ChainIntegrityError as exc:  # a log the rules refuse: nothing after it is shown
                    self.bad = (len(self.blocks), str(exc))
                except Exception as exc:  # the node is unreachable for now (web3 raises its own types)
                    self.offline = f"{type(exc).__name__}: {str(exc)[:200]}"
                self.applied = self.stored = len(self.blocks)
                return self.applied
            assert self.ledger is not None
            try:
                self.stored = self.ledger.refresh()
                if self.chain is None:
                    self.chain = Chain.start(self.ledger, self._on_block)
                    self.applied = 1
                self.applied = self.chain.catch_up(self.applied, self._on_block, limit)
                self.offline = None
            except StorageError as exc:  # the writer is mid-way: counted again on the next tick
                self.offline = str(exc)
            except ChainIntegrityError as exc:
                if isinstance(exc.__cause__, StorageError):  # a read that failed, not a bad block
                    self.offline = str(exc)
                    if self.chain is not None:  # every block below the one unread is applied
                        self.applied = max(self.applied, exc.height)
                else:
                    self.bad = (exc.height, str(exc))
            return self.applied

    @property
    def indexing(self) -> bool:
        """Blocks are stored that are not verified and indexed yet."""
        return self.bad is None and self.applied < self.stored

    @property
    def state(self) -> State | None:
        if self.client is not None:
            return self.client.state
        return None if self.chain is None else self.chain.state

    def _on_event(self, event: ChainEvent, tx: bytes, state: State) -> None:
        self._on_block(_Stored(len(self.blocks), tx), event.operation, event.receipt, state)

    def _on_block(self, stored: Any, block: Any, receipt: Any, state: State) -> None:
        n = state.n_participants
        if self._last is not None and self._last.size < n:  # keys joined: new participants start at 0
            self._last = np.concatenate([self._last, np.zeros(n - self._last.size, np.int64)])
            self._money = {k: np.concatenate([v, np.zeros(n - v.size, np.int64)]) for k, v in self._money.items()}
        if block is not None and not is_block(block):  # outside the round's blocks: not a reward
            assert self._last is not None
            if isinstance(block, Challenge):  # its bond goes into escrow until the settle block
                self._challenger = int(block.challenger)
            self._money["transfers"] += state.balances - self._last
            self._last = state.balances.copy()
            return
        if block is None:  # genesis
            self.blocks.append(
                {"height": 0, "round": 0, "kind": "genesis", "miner": 0, "items": n, "hash": stored.hash.hex()}
            )
            self._last = state.balances.copy()
            self._new_round(n)
            return
        assert self._last is not None
        self.mined[int(block.miner)] += 1
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
                self.trained[trainer].append(mid)
                self.paid_for[payee] += 1
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

    def _new_round(self, n: int) -> None:
        self._money = {k: np.zeros(n, np.int64) for k in REASONS}

    def _settled(self, round_: int, receipt: SettleReceipt, state: State) -> None:
        for mid in receipt.selected_model.tolist():
            if mid in self.models:
                self.models[mid].selected = True
                self.selected_by[self.models[mid].trainer] += 1
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
                # a disputed round (appeals): paid to the appellants, forfeited by testers off their median
                "appeal_coins": receipt.appeal_reward / UNIT,
                "forfeited_coins": receipt.forfeited / UNIT,
                "challenger": self._challenger,
            }
        )
        self._challenger = -1
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
        if self.ledger is not None:
            self.ledger.close()
        if self.client is not None:
            self.client.close()


@dataclass(frozen=True)
class _Stored:
    """Where a contract's operation sits: its position in the index and its transaction."""

    height: int
    hash: bytes
