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


APPLICATION_ID = 0x44524C59
"""``PRAGMA application_id`` of a derelayl chain ("DRLY"): marks the files we created."""
_COLUMNS = [("height", "INTEGER"), ("hash", "BLOB"), ("header", "BLOB"), ("body", "BLOB"), ("signature", "BLOB")]


class SQLiteLedger(Ledger):
    """``create=True``: the writer (creates the file, or opens one of ours); ``create=False``:
    a reader — the file is opened read-only and nothing in it or beside it is created.
    Either way a SQLite file that is not a derelayl chain is refused untouched."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StorageError(f"{self.path}: no such chain file")
        if create and self.path.exists() and not self.path.is_file():
            raise StorageError(f"{self.path}: exists and is not a file")
        try:
            if create:
                self._db = sqlite3.connect(self.path, isolation_level=None)
            else:
                # (a reader may be followed from another thread than the one that opened it; callers
                # serialise their calls, as the explorer's index does with its lock)
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            self._check_ours(create)
            if create:
                self._db.execute("PRAGMA journal_mode=DELETE")
                self._db.execute("PRAGMA synchronous=FULL")
                if not self._tables():
                    self._db.execute(_SCHEMA)
                    self._db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            self._db.execute("PRAGMA quick_check").fetchone()
            (self._height,) = self._db.execute("SELECT COUNT(*) FROM blocks").fetchone()
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise StorageError(f"{self.path}: not a readable chain file ({exc})") from exc
        except StorageError:
            self._close_quietly()
            raise

    def _tables(self) -> list[str]:
        rows = self._db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')").fetchall()
        return sorted(str(r[0]) for r in rows)

    def _check_ours(self, create: bool) -> None:
        """Refuse, before anything is written, a database some other program made."""
        (app_id,) = self._db.execute("PRAGMA application_id").fetchone()
        tables = self._tables()
        if not tables:
            if create and app_id in (0, APPLICATION_ID):
                return  # a new (or empty) file: it becomes ours
            raise StorageError(f"{self.path}: not a derelayl chain (an empty database)")
        columns = [(str(r[1]), str(r[2]).upper()) for r in self._db.execute("PRAGMA table_info(blocks)").fetchall()]
        if app_id not in (0, APPLICATION_ID) or tables != ["blocks"] or columns != _COLUMNS:
            raise StorageError(f"{self.path}: not a derelayl chain (tables: {', '.join(tables)[:80]}); left untouched")

    def _close_quietly(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()

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

    def refresh(self) -> int:
        """Re-count the stored blocks (a reader following a file another process appends to).
        A read-only reader can meet the writer mid-way (SQLite's ``SQLITE_READONLY_RECOVERY``:
        "attempt to write a readonly database"): that is a ``StorageError``, worth a retry."""
        try:
            (self._height,) = self._db.execute("SELECT COUNT(*) FROM blocks").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: the stored blocks cannot be counted now ({exc})") from exc
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
