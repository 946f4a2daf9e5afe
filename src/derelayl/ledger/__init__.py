"""Where blocks live: the storage interface, a local SQLite chain, and chain verification."""

from derelayl.ledger.base import Ledger, MemoryLedger, StoredBlock
from derelayl.ledger.chain import Chain
from derelayl.ledger.crypto import KeyPair, derive_keys
from derelayl.ledger.sqlite import SQLiteLedger

__all__ = ["Chain", "KeyPair", "Ledger", "MemoryLedger", "SQLiteLedger", "StoredBlock", "derive_keys"]
