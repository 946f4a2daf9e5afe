"""What crosses the wire between nodes, strictly decoded.

- A participant message (bid, commitment, case commitment, co-tester scores, join) as JSON with its EIP-191
  signature (``derelayl.evm.signing``): ``message_to_json`` / ``message_from_json``.
- A signed fetch request for a model: the requester signs (contract domain, round, digest,
  nonce); the server checks who signed, whether the chain entitles them to that model now,
  and that the nonce is new (``FetchRequest``).
- Test cases as bytes: shapes, float32 inputs, int64 labels — exactly what ``case_digest``
  hashes, so the digest on chain names them (``learning.data.case_blob`` / ``cases_from_blob``).

Every decoder checks types, ranges and sizes first and raises ``MalformedError`` naming the
field: a bad request becomes one 4xx line, never a traceback.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
from eth_abi import encode
from eth_utils import keccak

from derelayl.errors import MalformedError
from derelayl.evm.signing import EvmSigner, recover
from derelayl.protocol.messages import BidMessage, CasesMessage, CommitMessage, JoinMessage, ScoresMessage, Signed
from derelayl.protocol.validate import INT64_MAX, INT64_MIN

__all__ = [
    "MAX_SCORES",
    "FetchRequest",
    "message_from_json",
    "message_to_json",
]

MAX_SCORES = 512
"""Scores per report (the contract's bound on models per round)."""
TAG_FETCH = keccak(b"derelayl/fetch")
_PREFIX = b"\x19Ethereum Signed Message:\n32"


# ---------------------------------------------------------------- participant messages


def message_to_json(signed: Signed) -> dict[str, Any]:
    m, sig = signed.message, signed.signature.hex()
    if isinstance(m, BidMessage):
        return {
            "kind": "bid",
            "round": m.round,
            "participant": m.participant,
            "role": m.role,
            "amount": m.amount,
            "signature": sig,
        }
    if isinstance(m, CommitMessage | CasesMessage):
        return {
            "kind": "commit" if isinstance(m, CommitMessage) else "cases",
            "round": m.round,
            "participant": m.participant,
            "digest": m.digest.hex(),
            "signature": sig,
        }
    if isinstance(m, ScoresMessage):
        return {
            "kind": "scores",
            "round": m.round,
            "participant": m.participant,
            "digest": m.test_cases_digest.hex(),
            "scores": [int(s) for s in m.scores],
            "signature": sig,
        }
    return {"kind": "join", "key": m.key.hex(), "signature": sig}


def _int(data: dict[str, Any], name: str, low: int = 0, high: int = INT64_MAX) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise MalformedError(f"{name} must be an integer in [{low}, {high}]")
    return value


def _hex(data: dict[str, Any], name: str, size: int) -> bytes:
    value = data.get(name)
    if not isinstance(value, str) or len(value) != 2 * size:
        raise MalformedError(f"{name} must be {size} bytes of hex")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise MalformedError(f"{name} is not hex") from None
    if len(raw) != size:  # fromhex skips spaces: "aa  " is 4 characters but 1 byte
        raise MalformedError(f"{name} is not hex")
    return raw


_FIELDS = {
    "bid": {"kind", "round", "participant", "role", "amount", "signature"},
    "commit": {"kind", "round", "participant", "digest", "signature"},
    "cases": {"kind", "round", "participant", "digest", "signature"},
    "scores": {"kind", "round", "participant", "digest", "scores", "signature"},
    "join": {"kind", "key", "signature"},
}


def message_from_json(data: Any) -> Signed:
    """A signed message from its JSON form (the signature is not checked here)."""
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str) or data["kind"] not in _FIELDS:
        raise MalformedError("a message is an object whose kind is bid, commit, cases, scores or join")
    kind = data["kind"]
    if set(data) != _FIELDS[kind]:
        raise MalformedError(f"a {kind} message has exactly the fields {sorted(_FIELDS[kind])}")
    signature = _hex(data, "signature", 65)
    if kind == "join":
        return Signed(JoinMessage(_hex(data, "key", 32)), signature)
    r, who = _int(data, "round"), _int(data, "participant", 0, 2**32)
    if kind == "bid":
        if data["role"] not in ("trainer", "model_owner"):
            raise MalformedError("role must be trainer or model_owner")
        return Signed(BidMessage(r, who, data["role"], _int(data, "amount")), signature)
    if kind == "commit":
        return Signed(CommitMessage(r, who, _hex(data, "digest", 32)), signature)
    if kind == "cases":
        return Signed(CasesMessage(r, who, _hex(data, "digest", 32)), signature)
    scores = data["scores"]
    if not isinstance(scores, list) or len(scores) > MAX_SCORES:
        raise MalformedError(f"scores must be a list of at most {MAX_SCORES} integers")
    if not all(isinstance(s, int) and not isinstance(s, bool) and INT64_MIN <= s <= INT64_MAX for s in scores):
        raise MalformedError("every score must be a 64-bit integer")
    return Signed(ScoresMessage(r, who, _hex(data, "digest", 32), np.array(scores, dtype=np.int64)), signature)


# ---------------------------------------------------------------- fetch requests


@dataclass(frozen=True)
class FetchRequest:
    """``GET /models/<digest>`` with headers X-Round, X-Nonce, X-Signature."""

    round: int
    digest: bytes
    nonce: bytes
    signature: bytes

    def hash(self, domain: bytes) -> bytes:
        body = encode(
            ["bytes32", "bytes32", "uint256", "bytes32", "bytes32"],
            [domain, TAG_FETCH, self.round, self.digest, self.nonce],
        )
        return keccak(_PREFIX + keccak(body))

    @classmethod
    def make(cls, signer: EvmSigner, round_index: int, digest: bytes) -> FetchRequest:
        nonce = secrets.token_bytes(32)
        unsigned = cls(round_index, digest, nonce, b"")
        return cls(round_index, digest, nonce, signer.key.sign_hash(unsigned.hash(signer.domain)))

    def headers(self) -> dict[str, str]:
        return {"X-Round": str(self.round), "X-Nonce": self.nonce.hex(), "X-Signature": self.signature.hex()}

    @classmethod
    def parse(cls, digest_hex: str, headers: dict[str, str]) -> FetchRequest:
        fields = {
            "digest": digest_hex,
            "nonce": headers.get("x-nonce", ""),
            "signature": headers.get("x-signature", ""),
        }
        raw_round = headers.get("x-round", "")
        if not (raw_round.isascii() and raw_round.isdigit()) or len(raw_round) > 12:  # not "²"
            raise MalformedError("X-Round must be a round number")
        return cls(int(raw_round), _hex(fields, "digest", 32), _hex(fields, "nonce", 32), _hex(fields, "signature", 65))

    def signer(self, domain: bytes) -> bytes | None:
        """The 20-byte address that signed the request, or None."""
        return recover(self.hash(domain), self.signature)


# ---------------------------------------------------------------- test cases
