"""Where blocks live. ``Ledger`` is the storage interface every backend implements; the
rules are applied by ``derelayl.ledger.chain.Chain`` on top of any of them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from derelayl.errors import StorageError

__all__ = ["Ledger", "MemoryLedger", "StoredBlock"]


@dataclass(frozen=True)
class StoredBlock:
    """A block as stored: header and body are canonical JSON bytes."""

    height: int
    hash: bytes
    header: bytes
    body: bytes
    signature: bytes


class Ledger(ABC):
    """Append-only block storage. ``append`` returns only once the block is durable."""

    @abstractmethod
    def append(self, block: StoredBlock) -> None:
        """Store the next block; ``StorageError`` if its height is not the next one."""

    @abstractmethod
    def height(self) -> int:
        """Number of stored blocks (the next block's height)."""

    @abstractmethod
    def get(self, height: int) -> StoredBlock:
        """The block at ``height``; ``StorageError`` if there is none."""

    def blocks(self, start: int = 0) -> Iterator[StoredBlock]:
        for height in range(start, self.height()):
            yield self.get(height)

    def head(self) -> StoredBlock | None:
        n = self.height()
        return self.get(n - 1) if n else None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (files, connections)."""


class MemoryLedger(Ledger):
    """In-memory blocks, for tests and fast simulations."""

    def __init__(self) -> None:
        self._blocks: list[StoredBlock] = []

    def append(self, block: StoredBlock) -> None:
        if block.height != len(self._blocks):
            raise StorageError(f"block height {block.height} does not follow stored height {len(self._blocks)}")
        self._blocks.append(block)

    def height(self) -> int:
        return len(self._blocks)

    def get(self, height: int) -> StoredBlock:
        if not 0 <= height < len(self._blocks):
            raise StorageError(f"no block at height {height}")
        return self._blocks[height]
