"""Where blocks live. ``Ledger`` is the storage interface every backend implements; the
rules are applied by ``derelayl.ledger.chain.Chain`` on top of any of them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

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
    def append(self, block: StoredBlock) -> None: ...

    @abstractmethod
    def height(self) -> int:
        """Number of stored blocks (the next block's height)."""

    @abstractmethod
    def get(self, height: int) -> StoredBlock: ...

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
            raise ValueError(f"block height {block.height} does not follow {len(self._blocks) - 1}")
        self._blocks.append(block)

    def height(self) -> int:
        return len(self._blocks)

    def get(self, height: int) -> StoredBlock:
        return self._blocks[height]
