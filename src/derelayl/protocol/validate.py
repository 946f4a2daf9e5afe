"""Checks shared by several transitions (no state changes here)."""

from __future__ import annotations

from collections.abc import Iterable

from derelayl.errors import DuplicateError, MalformedError
from derelayl.protocol.state import KEY_SIZE

__all__ = ["DIGEST_SIZE", "INT64_MAX", "INT64_MIN", "validate_new_keys"]

DIGEST_SIZE = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def validate_new_keys(key_index: dict[bytes, int], keys: Iterable[bytes]) -> None:
    """Registration is permissionless: any well-formed, not yet registered key may join."""
    seen: set[bytes] = set()
    for key in keys:
        # Verify the key is a 32-byte public key
        if not isinstance(key, bytes) or len(key) != KEY_SIZE:
            raise MalformedError(f"registration: public key must be {KEY_SIZE} bytes")
        # Verify it is not registered already
        if key in key_index or key in seen:
            raise DuplicateError(f"registration: key {key.hex()[:16]}… is already registered")
        seen.add(key)
