"""The contract's history, replayed with the Python core.

The contract logs every block's full input (each bid, commitment and report with its
signature, the block's time and randomness), every direct registration, every transfer
between participants, every posted commitment and every challenge (with its time and
randomness), and after each block and challenge a ``Checkpoint`` of its money and beacon. A
``History`` turns those logs, in chain order, into the core's operations, checks every
message signature itself, applies them with ``process_operation`` and compares each
checkpoint with the core's state: the first disagreement is a ``ChainIntegrityError`` naming
the block. The contract is trusted for nothing: a client's state is this replay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from derelayl import jsonsafe
from derelayl.errors import ChainIntegrityError, DerelaylError, MalformedError, SignatureError
from derelayl.evm.signing import compute_domain, key_of_address, message_hash, recover
from derelayl.ledger.client import ChainEvent
from derelayl.protocol.blocks import (
    Block,
    Challenge,
    Join,
    Operation,
    PostedCommitment,
    Transfer,
)
from derelayl.protocol.genesis import initialize_state
from derelayl.protocol.messages import (
    BidMessage,
    BlockHeader,
    CasesMessage,
    CommitMessage,
    JoinMessage,
    Message,
    ScoresMessage,
    block_from_messages,
)
from derelayl.protocol.params import Params
from derelayl.protocol.state import State
from derelayl.protocol.transition import process_operation, total_money
from derelayl.protocol.types import BlockKind

__all__ = ["History", "LogEntry", "decode_logs", "signature_bytes"]

_ITEMS = ("BidLogged", "JoinLogged", "CasesLogged", "CommitLogged", "FheKey", "ScoresLogged", "Selected")
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


def _show(value: Any) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else repr(value)


class History:
    """A verified replay of one contract's logs."""

    def __init__(self, genesis: LogEntry, address: str, chain_id: int) -> None:
        args = genesis.args
        try:
            params = Params.from_dict(jsonsafe.loads(args["params_json"]))
            keys = [key_of_address(a) for a in args["participants"]]
            self.state: State = initialize_state(params, bytes(args["seed"]), keys)
        except (DerelaylError, ValueError, TypeError) as exc:
            raise ChainIntegrityError(genesis.block, f"genesis: {exc}") from exc
        self.address = address
        self.genesis_model = bytes(args["genesis_model"])
        """SHA-256 of the genesis model's bytes (zero for the abstract model)."""
        self.domain = compute_domain(chain_id, address)
        self.genesis_block = genesis.block
        self.cursor = (genesis.block, genesis.index)
        self.events: list[ChainEvent] = []
        self._items: list[LogEntry] = []
        self.on_event: Callable[[ChainEvent, bytes, State], None] | None = None
        """Called after each operation is applied, with its transaction hash and the state."""

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
            diff = [f"{n} {_show(o)} vs {_show(t)}" for n, o, t in zip(names, ours, theirs, strict=True) if o != t]
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
        if entry.event == "CommitPosted":
            message = CommitMessage(int(a["round"]), int(a["participant"]), bytes(a["digest"]))
            self._verify(message, a, "posted commitment")
            return PostedCommitment(message.round, message.participant, message.digest, signature_bytes(a))
        if entry.event == "Challenged":
            randomness = bytes(a["randomness"]) if a["mixed"] else b""
            return Challenge(int(a["round"]), int(a["challenger"]), int(a["time"]), randomness)
        return None

    def _block(self, entry: LogEntry, items: list[LogEntry]) -> Block:
        """The core's block from a ``Block`` log and its items' logs; every signature checked."""
        a = entry.args
        r, miner, kind = int(a["round"]), int(a["miner"]), BlockKind(int(a["kind"]))
        messages: list[Message] = []
        extra: dict[str, Any] = {}
        for item in items:
            i = item.args
            if item.event == "BidLogged":
                bid = BidMessage(r, int(i["participant"]), _ROLES[int(i["role"])], int(i["amount"]))
                self._verify(bid, i, f"{bid.role} bid")
                messages.append(bid)
            elif item.event == "JoinLogged":
                join = JoinMessage(key_of_address(i["key"]))
                self._verify(join, i, "join", signer=join.key)
                messages.append(join)
            elif item.event == "CasesLogged":
                cases = CasesMessage(r, int(i["tester"]), bytes(i["digest"]))
                self._verify(cases, i, "case commitment")
                messages.append(cases)
            elif item.event == "CommitLogged":
                commit = CommitMessage(r, int(i["participant"]), bytes(i["digest"]))
                self._verify(commit, i, "commitment")
                messages.append(commit)
            elif item.event == "FheKey":
                extra["fhe_public_key"] = bytes(i["key"])
            elif item.event == "ScoresLogged":
                scores = np.array([int(x) for x in i["scores"]], dtype=np.int64)
                report = ScoresMessage(r, int(i["tester"]), bytes(i["digest"]), scores)
                if kind == BlockKind.TEST and "tester" not in extra:  # the testing miner's own, unsigned
                    extra.update(tester=report, n_test_cases=int(i["n_test_cases"]))
                    continue
                self._verify(report, i, "co-tester scores" if kind == BlockKind.TEST else "appeal scores")
                messages.append(report)
        if kind == BlockKind.TEST and extra.get("tester") is None:
            raise MalformedError("test block without the testing miner's scores")
        ledger = {"time": int(a["time"]), "randomness": bytes(a["randomness"]) if a["mixed"] else b""}
        return block_from_messages(BlockHeader(kind, r, miner, **ledger, **extra), messages)

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
