"""Deterministic model bytes (safetensors) and their SHA-256 identity.

The same weights and metadata always give the same bytes: safetensors orders tensors by
dtype and name, and we store exactly one metadata entry (a canonical JSON string), because
safetensors keeps metadata in a hash map whose order is not guaranteed across entries.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from derelayl import jsonsafe
from derelayl.errors import ModelError

__all__ = ["Weights", "model_digest", "param_bytes", "weights_from_bytes", "weights_to_bytes"]

Weights = dict[str, torch.Tensor]
_META_KEY = "derelayl"


def weights_to_bytes(weights: Weights, meta: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    tensors = {name: t.detach().to(torch.float32).contiguous() for name, t in weights.items()}
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"))
    return save(tensors, metadata={_META_KEY: text})


def weights_from_bytes(data: bytes, name: str = "model") -> tuple[Weights, dict[str, Any]]:
    """Parse model bytes; anything unreadable is a ``ModelError`` naming the model."""
    from safetensors.torch import load

    try:
        weights = load(data)
        meta = meta_from_header(data)
    except Exception as exc:  # safetensors raises its own error types and ValueError/OSError
        raise ModelError(f"{name}: not a readable model file ({type(exc).__name__}: {exc})") from exc
    return weights, meta


def header_size(first8: bytes) -> int:
    """Bytes of a model file's header after its first 8 (safetensors: a little-endian length)."""
    return int.from_bytes(first8[:8], "little")


def meta_from_header(data: bytes) -> dict[str, Any]:
    """The metadata ``weights_to_bytes`` recorded, from the file's first ``8 + header_size``
    bytes (no tensor is read). Malformed input raises ``ValueError``/``AttributeError``."""
    header = jsonsafe.loads(data[8 : 8 + header_size(data)])
    meta: dict[str, Any] = jsonsafe.loads(header.get("__metadata__", {}).get(_META_KEY, "{}"))
    return meta


def model_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def param_bytes(weights: Weights) -> int:
    """Bytes of parameters moved when a model is sent (float32), the unit every method counts."""
    return sum(int(t.numel()) * 4 for t in weights.values())
