"""Seeds for training and test-case draws, derived with SHA-256 from labelled parts, so that
every draw is a pure function of (run seed, purpose, round, participant): a resumed process
draws exactly what the interrupted one would have."""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed"]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from labelled parts, e.g. ``derive_seed(seed, "train", round, trainer)``."""
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1
