"""The contract's history, replayed with the Python core.

The contract logs every block's full input (each bid, commitment and report with its
signature, the block's time and randomness), every direct registration and every transfer
between participants, and after each block a ``Checkpoint`` of its money and beacon. A
``History`` turns those logs, in chain order, into the core's operations, checks every
message signature itself, applies them with ``process_operation`` and compares each
checkpoint with the core's state: the first disagreement is a ``ChainIntegrityError`` naming
the block. The contract is trusted for nothing: a client's state is this replay.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from derelayl.errors import ChainIntegrityError, DerelaylError, MalformedError, SignatureError
from derelayl.evm.signing import EvmKey, EvmSigner, compute_domain, key_of_address, message_hash, recover
from derelayl.ledger.client import ChainEvent
from derelayl.protocol.blocks import (
    Bids,
    Block,
    CommitBlock,
    DepositBlock,
    Join,
    Operation,
    SettleBlock,
    TestBlock,
    TesterReport,
    Transfer,
)
from derelayl.protocol.genesis import initialize_state
from derelayl.protocol.messages import BidMessage, CommitMessage, JoinMessage, Message, ScoresMessage
from derelayl.protocol.params import Params
from derelayl.protocol.state import State
from derelayl.protocol.transition import process_operation, total_money

__all__ = ["History", "LogEntry", "decode_logs", "signature_bytes"]

_ITEMS = ("BidLogged", "JoinLogged", "CommitLogged", "FheKey", "ScoresLogged", "Selected")
_ROLES = ("trainer", "model_owner")

_PREFIX = b"\x19Ethereum Signed Message:\n32"


def signature_bytes(item: dict[str, Any]) -> bytes:
    return bytes(item["r"]) + bytes(item["s"]) + bytes([int(item["v"])])


@dataclass(frozen=True)
class LogEntry:
    """One decoded contract log: where it is and what it says."""

    block: int
    index: int
    tx: bytes
    event: str
    args: dict[str, Any]


def decode_logs(contract: Any, logs: list[Any]) -> list[LogEntry]:
    """Decode the contract's raw logs (any order) into entries in chain order."""
    from eth_utils import event_abi_to_log_topic
    from web3._utils.events import get_event_data

    by_topic = {bytes(event_abi_to_log_topic(abi)): abi for abi in contract.abi if abi.get("type") == "event"}
    out = []
    codec = contract.w3.codec
    for raw in logs:
        topics = raw["topics"]
        abi = by_topic.get(bytes(topics[0])) if topics else None
        if abi is None:
            continue
        data = get_event_data(codec, abi, raw)
        out.append(
            LogEntry(
                int(raw["blockNumber"]),
                int(raw["logIndex"]),
                bytes(raw["transactionHash"]),
                abi["name"],
                dict(data["args"]),
            )
        )
    out.sort(key=lambda e: (e.block, e.index))
    return out


class History:
    """A verified replay of one contract's logs."""

    def __init__(self, genesis: LogEntry, address: str, chain_id: int) -> None:
        args = genesis.args
        try:
            params = Params.from_dict(json.loads(args["params_json"]))
            keys = [key_of_address(a) for a in args["participants"]]
            self.state: State = initialize_state(params, bytes(args["seed"]), keys)
        except (DerelaylError, ValueError, TypeError) as exc:
            raise ChainIntegrityError(genesis.block, f"genesis: {exc}") from exc
        self.address = address
        self.domain = compute_domain(chain_id, address)
        self.genesis_block = genesis.block
        self.cursor = (genesis.block, genesis.index)
        self.events: list[ChainEvent] = []
        self._items: list[LogEntry] = []
        self.on_event: Callable[[ChainEvent, bytes, State], None] | None = None
        """Called after each operation is applied, with its transaction hash and the state."""

    @property
    def signer_check(self) -> EvmSigner:
        return EvmSigner(EvmKey(b"\x01" * 32), self.domain)

    def apply(self, entries: list[LogEntry]) -> list[ChainEvent]:
        """Apply the entries after the cursor, in order; returns the operations applied. A
        block's items are logged before its ``Block`` log, in the same transaction."""
        applied = []
        for entry in entries:
            if (entry.block, entry.index) <= self.cursor:
                continue
            try:
                if entry.event in _ITEMS:
                    if self._items and self._items[0].tx != entry.tx:
                        raise MalformedError("block items without their block")
                    self._items.append(entry)
                    op: Operation | None = None
                elif entry.event == "Block":
                    items, self._items = [i for i in self._items if i.tx == entry.tx], []
                    op = self._block(entry, items)
                else:
                    op = self._operation(entry)
                if op is not None:
                    receipt = process_operation(self.state, op)
                    event = ChainEvent(entry.block, op, receipt)
                    self.events.append(event)
                    applied.append(event)
                    if self.on_event is not None:
                        self.on_event(event, entry.tx, self.state)
                elif entry.event == "Checkpoint":
                    self._check(entry.args)
            except ChainIntegrityError:
                raise
            except (DerelaylError, ValueError, TypeError, KeyError) as exc:
                raise ChainIntegrityError(entry.block, f"{entry.event}: {exc}") from exc
            self.cursor = (entry.block, entry.index)
        return applied

    def _check(self, args: dict[str, Any]) -> None:
        s = self.state
        ours = (s.round, int(s.phase), s.minted, s.burned, s.escrow, s.beacon)
        theirs = (args["round"], args["phase"], args["minted"], args["burned"], args["escrow"], bytes(args["beacon"]))
        if ours != theirs:
            names = ("round", "phase", "minted", "burned", "escrow", "beacon")
            diff = [f"{n} {o!r} vs {t!r}" for n, o, t in zip(names, ours, theirs, strict=True) if o != t]
            raise MalformedError(f"the contract's state differs from the rules' ({'; '.join(diff)})")
        supply, held = total_money(s)
        if supply != held:
            raise MalformedError(f"minted - burned = {supply} but balances + escrow = {held}")

    # ------------------------------------------------------------ logs -> operations

    def _operation(self, entry: LogEntry) -> Operation | None:
        a = entry.args
        if entry.event == "Registered":
            return Join(key_of_address(a["key"])) if a["direct"] else None
        if entry.event == "Transfer":
            index = self.state.key_index
            s, r = index.get(key_of_address(a["sender"])), index.get(key_of_address(a["receiver"]))
            if s is None or r is None:  # escrow, refunds, mints, burns: derived from blocks
                return None
            return Transfer(s, r, int(a["value"]))
        return None

    def _block(self, entry: LogEntry, items: list[LogEntry]) -> Block:
        """The core's block from a ``Block`` log and its items' logs; every signature checked."""
        a = entry.args
        r, miner, kind = int(a["round"]), int(a["miner"]), int(a["kind"])
        ledger = {"time": int(a["time"]), "randomness": bytes(a["randomness"]) if a["mixed"] else b""}
        of = {name: [i.args for i in items if i.event == name] for name in _ITEMS}
        if kind == 0:
            bids: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
            for item in of["BidLogged"]:
                role = int(item["role"])
                msg = BidMessage(r, int(item["participant"]), _ROLES[role], int(item["amount"]))
                self._verify(msg, item, f"{msg.role} bid")
                bids[role].append((msg.participant, msg.amount))
            joins = []
            for item in of["JoinLogged"]:
                key = key_of_address(item["key"])
                self._verify(JoinMessage(key), item, "join", signer=key)
                joins.append(key)
            return DepositBlock(r, miner, Bids.of(bids[0]), Bids.of(bids[1]), tuple(joins), **ledger)
        if kind == 1:
            trainers, digests = [], []
            for item in of["CommitLogged"]:
                msg = CommitMessage(r, int(item["participant"]), bytes(item["digest"]))
                self._verify(msg, item, "commitment")
                trainers.append(msg.participant)
                digests.append(msg.digest)
            fhe = bytes(of["FheKey"][0]["key"]) if of["FheKey"] else b""
            return CommitBlock(r, miner, np.array(trainers, dtype=np.int64), tuple(digests), fhe, **ledger)
        if kind == 2:
            reports = of["ScoresLogged"]
            if not reports or int(reports[0]["tester"]) != miner:
                raise MalformedError("test block without the testing miner's scores")
            main, reports_out = reports[0], []
            for item in reports[1:]:
                scores = np.array([int(x) for x in item["scores"]], dtype=np.int64)
                msg = ScoresMessage(r, int(item["tester"]), bytes(item["digest"]), scores)
                self._verify(msg, item, "co-tester scores")
                reports_out.append(TesterReport(msg.participant, msg.test_cases_digest, scores))
            return TestBlock(
                r,
                miner,
                int(main["n_test_cases"]),
                bytes(main["digest"]),
                np.array([int(x) for x in main["scores"]], dtype=np.int64),
                tuple(reports_out),
                **ledger,
            )
        return SettleBlock(r, miner, **ledger)

    def _verify(self, message: Message, item: dict[str, Any], what: str, signer: bytes | None = None) -> None:
        if signer is None:
            who = message.participant  # type: ignore[union-attr]
            if not 0 <= who < self.state.n_participants:
                return  # the rules reject an unknown participant with their own error
            signer = self.state.keys[who]
        from eth_utils import keccak

        digest = keccak(_PREFIX + message_hash(self.domain, message))
        found = recover(digest, signature_bytes(item))
        if found is None or bytes(12) + found != signer:
            raise SignatureError(f"{what}: signature does not verify")


def iter_blocks(events: list[ChainEvent]) -> Iterator[Block]:
    for event in events:
        if not isinstance(event.operation, Join | Transfer):
            yield event.operation
