"""Blocks as stored bytes: canonical JSON bodies with per-message signatures, a header that
links to the previous block and records the post-state root, and the miner's signature.

Every participant message is signed by its sender (Ed25519) over (chain id, round, content),
so a message replayed from another round or chain does not verify, and a replay within the
round is a duplicate the rules reject. The signatures come from the senders themselves (an
agent signs its own messages; the miner only collects them): ``encode_block`` takes them as
a ``Proposal``.

Decoding is strict: exact field sets, integer types and ranges, hex of the right length.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from derelayl import jsonsafe
from derelayl.errors import MalformedError, SignatureError, UnknownParticipantError
from derelayl.ledger.base import StoredBlock
from derelayl.ledger.crypto import KeyPair, canonical, sha256, verify_signature
from derelayl.protocol.blocks import Block, CommitBlock, DepositBlock, SettleBlock, TestBlock, TesterReport
from derelayl.protocol.messages import (
    BidMessage,
    BlockHeader,
    CasesMessage,
    CommitMessage,
    JoinMessage,
    Message,
    Proposal,
    ScoresMessage,
    block_from_messages,
    block_messages,
)
from derelayl.protocol.types import BlockKind
from derelayl.protocol.validate import INT64_MAX, INT64_MIN

__all__ = [
    "ZERO_HASH",
    "Proposal",
    "decode_block",
    "encode_block",
    "message_bytes",
    "parse_header",
    "proposal_of",
    "seal",
    "sign_message",
    "wire_size",
]

ZERO_HASH = bytes(32)


def message_bytes(chain_id: bytes, message: Message) -> bytes:
    """The bytes a participant signs for ``message`` on the local chain."""
    chain = chain_id.hex()
    if isinstance(message, BidMessage):
        fields: dict[str, Any] = {"type": "bid", "role": message.role, "amount": message.amount}
    elif isinstance(message, CommitMessage):
        fields = {"type": "commit", "digest": message.digest.hex()}
    elif isinstance(message, CasesMessage):
        fields = {"type": "cases", "digest": message.digest.hex()}
    elif isinstance(message, ScoresMessage):
        fields = {
            "type": "scores",
            "digest": message.test_cases_digest.hex(),
            "scores": [int(s) for s in message.scores],
        }
    else:
        return canonical({"type": "join", "chain": chain, "key": message.key.hex()})
    return canonical({**fields, "chain": chain, "round": message.round})


def sign_message(key: KeyPair, chain_id: bytes, message: Message) -> bytes:
    return key.sign(message_bytes(chain_id, message))


def proposal_of(
    block: Block, chain_id: bytes, keys: Mapping[int, KeyPair], join_keys: Mapping[bytes, KeyPair]
) -> Proposal:
    """Sign every item with its sender's key: for tests and tools that hold every key (a
    network's nodes never do; each signs its own messages)."""
    signatures = []
    for message in block_messages(block):
        signer = join_keys[message.key] if isinstance(message, JoinMessage) else keys[message.participant]
        signatures.append(sign_message(signer, chain_id, message))
    return Proposal(block, tuple(signatures))


def encode_block(proposal: Proposal) -> dict[str, Any]:
    """The body of a block: each participant message with its sender's signature."""
    block = proposal.block
    messages = block_messages(block)
    if len(messages) != len(proposal.signatures):
        raise MalformedError(f"{len(proposal.signatures)} signatures for {len(messages)} messages")
    sigs = [s.hex() for s in proposal.signatures]
    if isinstance(block, DepositBlock):
        t, m, j = len(block.trainer_bids), len(block.mo_bids), len(block.joins)
        bids = [[msg.participant, msg.amount, sig] for msg, sig in zip(messages[: t + m], sigs[: t + m], strict=True)]
        body: dict[str, Any] = {
            "trainer_bids": bids[:t],
            "mo_bids": bids[t:],
            "joins": [[k.hex(), sig] for k, sig in zip(block.joins, sigs[t + m : t + m + j], strict=True)],
        }
        if block.case_commitments:  # (left out when empty: chains without case commitments keep their bytes)
            body["case_commitments"] = [
                [c.tester, c.digest.hex(), sig]
                for c, sig in zip(block.case_commitments, sigs[t + m + j :], strict=True)
            ]
        return body
    if isinstance(block, CommitBlock):
        return {
            "commitments": [
                [int(t), d.hex(), sig] for t, d, sig in zip(block.trainers, block.commitments, sigs, strict=True)
            ],
            "fhe_public_key": block.fhe_public_key.hex(),
        }
    if isinstance(block, TestBlock):
        return {
            "n_test_cases": block.n_test_cases,
            "test_cases_digest": block.test_cases_digest.hex(),
            "scores": [int(s) for s in block.scores],
            "co_testers": _encode_reports(block.co_testers, sigs),
        }
    if isinstance(block, SettleBlock) and block.appeals:  # (a settle block without appeals keeps its empty body)
        return {"appeals": _encode_reports(block.appeals, sigs)}
    return {}


def _encode_reports(reports: tuple[TesterReport, ...], sigs: list[str]) -> list[list[Any]]:
    return [
        [c.tester, c.test_cases_digest.hex(), [int(s) for s in c.scores], sig]
        for c, sig in zip(reports, sigs, strict=True)
    ]


def seal(
    block: Block, body: dict[str, Any], *, height: int, prev: bytes, state_root: bytes, miner: KeyPair
) -> StoredBlock:
    """Header + miner signature around an encoded body."""
    body_bytes = canonical(body)
    header = canonical(
        {
            "height": height,
            "prev": prev.hex(),
            "round": block.round,
            "kind": block.kind.name.lower(),
            "miner": block.miner,
            "time": block.time,
            "randomness": block.randomness.hex(),
            "body": sha256(body_bytes).hex(),
            "state_root": state_root.hex(),
        }
    )
    block_hash = sha256(header)
    return StoredBlock(height, block_hash, header, body_bytes, miner.sign(block_hash))


_SIZER = KeyPair.from_seed(b"derelayl/wire-size")


def wire_size(block: Block, height: int = 0) -> int:
    """Bytes of ``block`` as the local chain stores and a node sends it: header, body with a
    64-byte signature per message, and the miner's signature (placeholders of the real sizes;
    hashes and roots are 32 bytes whatever their value)."""
    unsigned = Proposal(block, tuple(b"\0" * 64 for _ in block_messages(block)))
    stored = seal(block, encode_block(unsigned), height=height, prev=b"\0" * 32, state_root=b"\0" * 32, miner=_SIZER)
    return len(stored.header) + len(stored.body) + len(stored.signature)


def parse_header(stored: StoredBlock) -> dict[str, Any]:
    try:
        header = jsonsafe.loads(stored.header)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MalformedError(f"header is not canonical JSON ({type(exc).__name__})") from exc
    if not isinstance(header, dict):
        raise MalformedError("header is not a JSON object")
    return header


# ---------------------------------------------------------------- strict decoding


def _int(value: Any, what: str, low: int = 0, high: int = INT64_MAX) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise MalformedError(f"{what} must be an integer in [{low}, {high}], got {str(value)[:40]}")
    return value


def _hex(value: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise MalformedError(f"{what} is not a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise MalformedError(f"{what} is not hex") from exc
    if size is not None and len(raw) != size:
        raise MalformedError(f"{what} must be {size} bytes, got {len(raw)}")
    return raw


def _list(value: Any, what: str, width: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedError(f"{what} is not a list")
    if width is not None and not all(isinstance(item, list) and len(item) == width for item in value):
        raise MalformedError(f"every item of {what} must be a list of {width} fields")
    return value


def _fields(body: Any, names: set[str], what: str) -> dict[str, Any]:
    if not isinstance(body, dict) or set(body) != names:
        got = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise MalformedError(f"{what} must have exactly the fields {sorted(names)}, got {got}")
    return body


def _scores(value: Any, what: str) -> np.ndarray:
    items = _list(value, what)
    return np.array([_int(s, f"a score in {what}", INT64_MIN, INT64_MAX) for s in items], dtype=np.int64)


def _check(keys: list[bytes], who: Any, sig: Any, chain_id: bytes, message: Message, what: str) -> None:
    if not isinstance(who, int) or isinstance(who, bool) or not 0 <= who < len(keys):
        raise UnknownParticipantError(f"{what}: unknown participant {str(who)[:40]}")
    if not sig:
        raise SignatureError(f"{what} of participant {who} is unsigned")
    if not verify_signature(keys[who], _hex(sig, f"{what} signature"), message_bytes(chain_id, message)):
        raise SignatureError(
            f"{what} of participant {who}: signature does not verify (forged, or replayed from another round or chain)"
        )


def decode_block(header: dict[str, Any], body: Any, chain_id: bytes, keys: list[bytes]) -> Block:
    """Check every message signature and build the block the rules process."""
    kind = header["kind"]
    r, miner = header["round"], header["miner"]
    messages: list[Message] = []
    extra: dict[str, Any] = {}
    if kind == BlockKind.DEPOSIT:
        names = {"trainer_bids", "mo_bids", "joins"}
        if isinstance(body, dict) and "case_commitments" in body:
            names.add("case_commitments")
        body = _fields(body, names, "deposit block body")
        for name, role in (("trainer_bids", "trainer"), ("mo_bids", "model_owner")):
            for who, amount, sig in _list(body[name], name, 3):
                bid = BidMessage(r, who, role, _int(amount, f"{role} bid amount", INT64_MIN))  # type: ignore[arg-type]
                _check(keys, who, sig, chain_id, bid, f"{role} bid")
                messages.append(bid)
        for key_hex, sig in _list(body["joins"], "joins", 2):
            join = JoinMessage(_hex(key_hex, "join key", 32))
            if not verify_signature(join.key, _hex(sig, "join signature"), message_bytes(chain_id, join)):
                raise SignatureError(f"join of key {key_hex[:16]}…: signature does not verify")
            messages.append(join)
        cases = _list(body["case_commitments"], "case_commitments", 3) if "case_commitments" in body else []
        if "case_commitments" in body and not cases:
            raise MalformedError("deposit block body: case_commitments is empty (it is left out when there are none)")
        for who, digest_hex, sig in cases:
            committed = CasesMessage(r, who, _hex(digest_hex, "case commitment", 32))
            _check(keys, who, sig, chain_id, committed, "case commitment")
            messages.append(committed)
    elif kind == BlockKind.COMMIT:
        body = _fields(body, {"commitments", "fhe_public_key"}, "commit block body")
        for who, digest_hex, sig in _list(body["commitments"], "commitments", 3):
            commit = CommitMessage(r, who, _hex(digest_hex, "commitment", 32))
            _check(keys, who, sig, chain_id, commit, "commitment")
            messages.append(commit)
        extra["fhe_public_key"] = _hex(body["fhe_public_key"], "fhe_public_key")
    elif kind == BlockKind.TEST:
        body = _fields(body, {"n_test_cases", "test_cases_digest", "scores", "co_testers"}, "test block body")
        messages += _decode_reports(body["co_testers"], "co_testers", "co-tester", r, chain_id, keys)
        digest = _hex(body["test_cases_digest"], "test_cases_digest", 32)
        extra["tester"] = ScoresMessage(r, miner, digest, _scores(body["scores"], "scores"))
        extra["n_test_cases"] = _int(body["n_test_cases"], "n_test_cases")
    elif body:  # a disputed round's settle block carries the appeal reports
        body = _fields(body, {"appeals"}, "settle block body")
        messages += _decode_reports(body["appeals"], "appeals", "appellant", r, chain_id, keys)
    info = BlockHeader(kind, r, miner, header["time"], header["randomness"], **extra)
    return block_from_messages(info, messages)


def _decode_reports(items: Any, name: str, who_is: str, r: int, chain_id: bytes, keys: list[bytes]) -> list[Message]:
    out: list[Message] = []
    for who, digest_hex, scores, sig in _list(items, name, 4):
        report = ScoresMessage(
            r, who, _hex(digest_hex, f"{who_is} test_cases_digest", 32), _scores(scores, f"{who_is} scores")
        )
        _check(keys, who, sig, chain_id, report, f"{who_is} scores")
        out.append(report)
    return out


def decode_header(header: dict[str, Any], n_participants: int) -> dict[str, Any]:
    """The header's fields, typed and range-checked (``kind`` as a ``BlockKind``)."""
    names = {"height", "prev", "round", "kind", "miner", "time", "randomness", "body", "state_root"}
    _fields(header, names, "block header")
    kinds = {k.name.lower(): k for k in BlockKind if k != BlockKind.GENESIS}
    if header["kind"] not in kinds:
        raise MalformedError(f"unknown block kind {str(header['kind'])[:20]!r}")
    return {
        "kind": kinds[header["kind"]],
        "round": _int(header["round"], "round"),
        "miner": _int(header["miner"], "miner", 0, max(n_participants - 1, 0)),
        "time": _int(header["time"], "time"),
        "randomness": _hex(header["randomness"], "randomness"),
    }
