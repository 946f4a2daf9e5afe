"""A local ledger in one SQLite file.

Each block is one row written in its own transaction with ``synchronous=FULL`` and a
rollback journal: when ``append`` returns, the block is on disk, and a crash mid-write
leaves the previous head intact (SQLite rolls the half-written transaction back on open).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from derelayl.errors import StorageError
from derelayl.ledger.base import Ledger, StoredBlock

__all__ = ["SQLiteLedger"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    height    INTEGER PRIMARY KEY,
    hash      BLOB NOT NULL,
    header    BLOB NOT NULL,
    body      BLOB NOT NULL,
    signature BLOB NOT NULL
)
"""


def _blob(value: object, height: int) -> bytes:
    # An edited row may come back as TEXT or a number; hand its bytes on so that the
    # hash checks name what was tampered with.
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int | float):
        return str(value).encode()
    raise StorageError(f"block {height}: a column holds no data")


class SQLiteLedger(Ledger):
    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StorageError(f"{self.path}: no such chain file")
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=DELETE")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
            self._db.execute("PRAGMA quick_check").fetchone()
            (self._height,) = self._db.execute("SELECT COUNT(*) FROM blocks").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: not a readable chain file ({exc})") from exc

    def append(self, block: StoredBlock) -> None:
        if block.height != self._height:
            raise StorageError(f"block height {block.height} does not follow stored height {self._height}")
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT INTO blocks (height, hash, header, body, signature) VALUES (?, ?, ?, ?, ?)",
                    (block.height, block.hash, block.header, block.body, block.signature),
                )
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: could not store block {block.height} ({exc})") from exc
        self._height += 1

    def height(self) -> int:
        return int(self._height)

    def get(self, height: int) -> StoredBlock:
        try:
            row = self._db.execute(
                "SELECT height, hash, header, body, signature FROM blocks WHERE height = ?", (height,)
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: block {height} is unreadable ({exc})") from exc
        if row is None:
            raise StorageError(f"{self.path}: no block at height {height}")
        return StoredBlock(int(row[0]), *(_blob(value, height) for value in row[1:]))

    def close(self) -> None:
        self._db.close()
