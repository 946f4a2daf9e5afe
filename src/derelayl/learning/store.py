"""Content-addressed model stores: a model is found by the SHA-256 of its bytes, and every
read re-checks that hash, so a corrupted or swapped file is a ``ModelError``, never a model.

Which ledger model id a digest belongs to is public chain data (the commit blocks), kept by
``derelayl.agents.relay.ModelBook``, not by the store."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from derelayl.errors import ModelError
from derelayl.folders import write_atomic
from derelayl.learning.serialization import model_digest

__all__ = ["DirModelStore", "MemoryModelStore", "ModelStore"]


class ModelStore(ABC):
    def put(self, data: bytes) -> bytes:
        digest = model_digest(data)
        if not self.has(digest):
            self._write(digest, data)
        return digest

    def get(self, digest: bytes) -> bytes:
        if not self.has(digest):
            raise ModelError(f"model {digest.hex()} is not in the model store")
        data = self._read(digest)
        # Verify the bytes are the committed model
        actual = model_digest(data)
        if actual != digest:
            raise ModelError(f"model file {digest.hex()} is corrupted: its bytes hash to {actual.hex()}")
        return data

    @abstractmethod
    def has(self, digest: bytes) -> bool: ...

    @abstractmethod
    def digests(self) -> list[bytes]:
        """Every digest held."""

    @abstractmethod
    def discard(self, digest: bytes) -> None:
        """Forget a blob (encrypted models a settled round no longer needs)."""

    @abstractmethod
    def peek(self, digest: bytes, n: int) -> bytes:
        """The first ``n`` bytes, unverified: to tell kinds of blobs apart, never to use them."""

    @abstractmethod
    def _write(self, digest: bytes, data: bytes) -> None: ...

    @abstractmethod
    def _read(self, digest: bytes) -> bytes: ...


class MemoryModelStore(ModelStore):
    def __init__(self) -> None:
        self._blobs: dict[bytes, bytes] = {}

    def has(self, digest: bytes) -> bool:
        return digest in self._blobs

    def digests(self) -> list[bytes]:
        return list(self._blobs)

    def discard(self, digest: bytes) -> None:
        self._blobs.pop(digest, None)

    def peek(self, digest: bytes, n: int) -> bytes:
        return self._blobs[digest][:n]

    def _write(self, digest: bytes, data: bytes) -> None:
        self._blobs[digest] = data

    def _read(self, digest: bytes) -> bytes:
        return self._blobs[digest]


class DirModelStore(ModelStore):
    """``root/<hex>.safetensors``; writes are atomic (tmp + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: bytes) -> Path:
        return self.root / f"{digest.hex()}.safetensors"

    def has(self, digest: bytes) -> bool:
        return self.path(digest).exists()

    def digests(self) -> list[bytes]:
        return [bytes.fromhex(p.name.split(".")[0]) for p in sorted(self.root.glob("*.safetensors"))]

    def discard(self, digest: bytes) -> None:
        self.path(digest).unlink(missing_ok=True)

    def peek(self, digest: bytes, n: int) -> bytes:
        with self.path(digest).open("rb") as f:
            return f.read(n)

    def _atomic(self, path: Path, data: bytes) -> None:
        write_atomic(path, data)

    def _write(self, digest: bytes, data: bytes) -> None:
        self._atomic(self.path(digest), data)

    def _read(self, digest: bytes) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except OSError as exc:
            raise ModelError(f"model file {self.path(digest)} cannot be read: {exc}") from exc
