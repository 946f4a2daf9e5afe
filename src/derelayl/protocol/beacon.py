"""The round's randomness: a beacon in state, and draws any backend can reproduce.

Every draw is SHA-256 of ``beacon || purpose (8 bytes) || index (32 bytes, big-endian)``: the
EVM has SHA-256 as a precompile, so the contract computes exactly the same numbers (keccak
would do as well; SHA-256 keeps the pure core on ``hashlib``). Each block may carry
``randomness`` (up to 32 bytes; the EVM's ``prevrandao`` on the contract, empty on a local
chain), which is mixed into the beacon when the block is applied: ``beacon = H(beacon ||
randomness)``. Draws never come from a clock or a global RNG.

Two kinds of draws:

- ``compute_word``: one uint256 per index (block miners, co-testers, appellants);
- ``compute_keys``: a 64-bit sort key per item, ``ticket << 32 | item`` with a 32-bit ticket
  (eight tickets per hash, big-endian) and the item's index in the low bits, so keys are
  unique and equal tickets fall back to the index. Used to draw trainers (lowest keys) and
  to break ties in the auction and the settlement ranking.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "APPEAL",
    "AUCTION",
    "BEACON_SIZE",
    "MAX_RANDOMNESS",
    "MINERS",
    "ROLES",
    "SETTLE",
    "TESTERS",
    "compute_keys",
    "compute_mixed_beacon",
    "compute_word",
]

BEACON_SIZE = 32
MAX_RANDOMNESS = 32
"""A block's randomness input is at most this many bytes."""

# Purposes: 8 ASCII bytes each (right-padded with zeros), so they fit one EVM word prefix.
ROLES = b"roles\0\0\0"
MINERS = b"miners\0\0"
TESTERS = b"testers\0"
AUCTION = b"auction\0"
SETTLE = b"settle\0\0"
APPEAL = b"appeal\0\0"

U64 = NDArray[np.uint64]
_TICKETS_PER_HASH = 8


def compute_mixed_beacon(beacon: bytes, randomness: bytes) -> bytes:
    """The beacon after a block with ``randomness`` is applied."""
    return hashlib.sha256(beacon + randomness).digest()


def _digest(beacon: bytes, purpose: bytes, index: int) -> bytes:
    return hashlib.sha256(beacon + purpose + index.to_bytes(32, "big")).digest()


def compute_word(beacon: bytes, purpose: bytes, index: int) -> int:
    """A uniform 256-bit integer for (purpose, index)."""
    return int.from_bytes(_digest(beacon, purpose, index), "big")


@lru_cache(maxsize=16)
def compute_keys(beacon: bytes, purpose: bytes, count: int) -> U64:
    """Unique 64-bit sort keys for items ``0..count-1``: a random 32-bit ticket in the high
    half, the item index in the low half. Sorting by key is a uniform random order.
    (Read-only and memoised: a deposit block's miner and its verifiers ask for the same keys.)"""
    blocks = -(-count // _TICKETS_PER_HASH)
    raw = b"".join(_digest(beacon, purpose, i) for i in range(blocks))
    tickets = np.frombuffer(raw, dtype=">u4")[:count].astype(np.uint64)
    keys = (tickets << np.uint64(32)) | np.arange(count, dtype=np.uint64)
    keys.flags.writeable = False
    return keys
