"""Blocks as stored bytes: canonical JSON bodies with per-message signatures, a header that
links to the previous block and records the post-state root, and the miner's signature.

Every participant message is signed by its sender over (chain id, round, content), so a
message replayed from another round or chain does not verify, and a replay within the round
is a duplicate the rules reject.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from derelayl.errors import MalformedError, SignatureError
from derelayl.ledger.base import StoredBlock
from derelayl.ledger.crypto import KeyPair, canonical, sha256, verify_signature
from derelayl.protocol.blocks import Bids, Block, CommitBlock, DepositBlock, SettleBlock, TestBlock, TesterReport
from derelayl.protocol.types import BlockKind

__all__ = [
    "ZERO_HASH",
    "bid_message",
    "commit_message",
    "decode_block",
    "encode_block",
    "join_message",
    "parse_header",
    "scores_message",
    "seal",
]

ZERO_HASH = bytes(32)
Signer = Mapping[int, KeyPair]


def bid_message(chain_id: bytes, round_index: int, role: str, amount: int) -> bytes:
    return canonical({"type": "bid", "chain": chain_id.hex(), "round": round_index, "role": role, "amount": amount})


def commit_message(chain_id: bytes, round_index: int, digest: bytes) -> bytes:
    return canonical({"type": "commit", "chain": chain_id.hex(), "round": round_index, "digest": digest.hex()})


def scores_message(chain_id: bytes, round_index: int, digest: bytes, scores: list[float]) -> bytes:
    return canonical(
        {"type": "scores", "chain": chain_id.hex(), "round": round_index, "digest": digest.hex(), "scores": scores}
    )


def join_message(chain_id: bytes, key: bytes) -> bytes:
    return canonical({"type": "join", "chain": chain_id.hex(), "key": key.hex()})


def _sig(keys: Signer, who: int, message: bytes) -> str:
    return keys[who].sign(message).hex()


def encode_block(
    block: Block, chain_id: bytes, keys: Signer, join_keys: Mapping[bytes, KeyPair] = {}
) -> dict[str, Any]:
    """The body of a block, each participant message signed by its sender's key."""
    r = block.round
    if isinstance(block, DepositBlock):

        def bids(b: Bids, role: str) -> list[list[Any]]:
            return [
                [int(p), int(a), _sig(keys, int(p), bid_message(chain_id, r, role, int(a)))]
                for p, a in zip(b.participant, b.amount, strict=True)
            ]

        return {
            "trainer_bids": bids(block.trainer_bids, "trainer"),
            "mo_bids": bids(block.mo_bids, "model_owner"),
            "joins": [[k.hex(), join_keys[k].sign(join_message(chain_id, k)).hex()] for k in block.joins],
        }
    if isinstance(block, CommitBlock):
        return {
            "commitments": [
                [int(t), d.hex(), _sig(keys, int(t), commit_message(chain_id, r, d))]
                for t, d in zip(block.trainers, block.commitments, strict=True)
            ],
            "fhe_public_key": block.fhe_public_key.hex(),
        }
    if isinstance(block, TestBlock):
        co_testers = []
        for report in block.co_testers:
            scores = [float(s) for s in report.scores]
            message = scores_message(chain_id, r, report.test_cases_digest, scores)
            co_testers.append(
                [report.tester, report.test_cases_digest.hex(), scores, _sig(keys, report.tester, message)]
            )
        return {
            "n_test_cases": block.n_test_cases,
            "test_cases_digest": block.test_cases_digest.hex(),
            "scores": [float(s) for s in block.scores],
            "co_testers": co_testers,
        }
    return {}


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
            "body": sha256(body_bytes).hex(),
            "state_root": state_root.hex(),
        }
    )
    block_hash = sha256(header)
    return StoredBlock(height, block_hash, header, body_bytes, miner.sign(block_hash))


def parse_header(stored: StoredBlock) -> dict[str, Any]:
    try:
        header = json.loads(stored.header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedError(f"header is not canonical JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise MalformedError("header is not a JSON object")
    return header


def _field(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind):
        raise MalformedError(f"body field {name!r} missing or not a {kind.__name__}")
    return value


def _hex(value: Any, what: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except (TypeError, ValueError) as exc:
        raise MalformedError(f"{what} is not hex") from exc


def _numbers(values: Any) -> list[float]:
    if not isinstance(values, list) or not all(isinstance(s, int | float) and not isinstance(s, bool) for s in values):
        raise MalformedError("scores must be a list of numbers")
    return values


def _check(keys: list[bytes], who: int, sig: Any, message: bytes, what: str) -> None:
    if not isinstance(who, int) or not 0 <= who < len(keys):
        from derelayl.errors import UnknownParticipantError

        raise UnknownParticipantError(f"{what}: unknown participant {who!r}")
    if not sig:
        raise SignatureError(f"{what} of participant {who} is unsigned")
    if not verify_signature(keys[who], _hex(sig, f"{what} signature"), message):
        raise SignatureError(
            f"{what} of participant {who}: signature does not verify (forged, or replayed from another round or chain)"
        )


def decode_block(
    kind: BlockKind, round_index: int, miner: int, body: dict[str, Any], chain_id: bytes, keys: list[bytes]
) -> Block:
    """Check every message signature and build the block the rules process."""
    r = round_index
    try:
        if kind == BlockKind.DEPOSIT:
            decoded: dict[str, list[tuple[int, int]]] = {}
            for name, role in (("trainer_bids", "trainer"), ("mo_bids", "model_owner")):
                items = []
                for item in _field(body, name, list):
                    who, amount, sig = item
                    if not isinstance(amount, int) or isinstance(amount, bool):
                        raise MalformedError(f"{role} bid amount must be an integer")
                    _check(keys, who, sig, bid_message(chain_id, r, role, amount), f"{role} bid")
                    items.append((who, amount))
                decoded[name] = items
            joins = []
            for key_hex, sig in _field(body, "joins", list):
                key = _hex(key_hex, "join key")
                if not verify_signature(key, _hex(sig, "join signature"), join_message(chain_id, key)):
                    raise SignatureError(f"join of key {key_hex[:16]}…: signature does not verify")
                joins.append(key)
            return DepositBlock(r, miner, Bids.of(decoded["trainer_bids"]), Bids.of(decoded["mo_bids"]), tuple(joins))
        if kind == BlockKind.COMMIT:
            trainers, digests = [], []
            for who, digest_hex, sig in _field(body, "commitments", list):
                digest = _hex(digest_hex, "commitment")
                _check(keys, who, sig, commit_message(chain_id, r, digest), "commitment")
                trainers.append(who)
                digests.append(digest)
            fhe = _hex(_field(body, "fhe_public_key", str), "fhe_public_key")
            return CommitBlock(r, miner, np.array(trainers, dtype=np.int64), tuple(digests), fhe)
        if kind == BlockKind.TEST:
            scores = _numbers(_field(body, "scores", list))
            reports = []
            # optional: blocks written before co-testers existed have none
            for who, digest_hex, co_scores, sig in _field({"co_testers": [], **body}, "co_testers", list):
                digest = _hex(digest_hex, "co-tester test_cases_digest")
                co_scores = _numbers(co_scores)
                _check(keys, who, sig, scores_message(chain_id, r, digest, co_scores), "co-tester scores")
                reports.append(TesterReport(who, digest, np.array(co_scores, dtype=np.float64)))
            return TestBlock(
                r,
                miner,
                _field(body, "n_test_cases", int),
                _hex(_field(body, "test_cases_digest", str), "test_cases_digest"),
                np.array(scores, dtype=np.float64),
                tuple(reports),
            )
        if kind == BlockKind.SETTLE:
            return SettleBlock(r, miner)
    except (TypeError, ValueError) as exc:
        raise MalformedError(f"{kind.name.lower()} block body is malformed ({exc})") from exc
    raise MalformedError(f"unknown block kind {kind!r}")
