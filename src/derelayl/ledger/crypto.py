"""Ed25519 keys and signatures (via ``cryptography``) and the canonical bytes they sign."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["KeyPair", "canonical", "derive_keys", "sha256", "verify_signature"]


def canonical(obj: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class KeyPair:
    private: Ed25519PrivateKey
    public: bytes

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        private = Ed25519PrivateKey.from_private_bytes(sha256(seed))
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(private, public)

    @classmethod
    def generate(cls) -> KeyPair:
        private = Ed25519PrivateKey.generate()
        return cls(private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


def derive_keys(seed: int | str, count: int, start: int = 0) -> list[KeyPair]:
    """Deterministic keys for a local network (never for real funds): key i from (seed, i)."""
    return [KeyPair.from_seed(f"derelayl-local-key/{seed}/{i}".encode()) for i in range(start, start + count)]


@lru_cache(maxsize=1 << 16)
def _public_key(public: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(public)


def verify_signature(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        _public_key(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
