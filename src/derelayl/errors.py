"""One exception hierarchy for derelayl.

DerelaylError
├── ConfigError                 invalid parameters or config file
├── ProtocolError               an operation the rules reject (state is left unchanged)
│   ├── PhaseError              operation out of phase for the current round
│   ├── UnknownParticipantError key or index that is not registered
│   ├── RoleError               participant lacks the role the operation needs
│   ├── BalanceError            amount above the payer's balance
│   ├── DuplicateError          duplicate bid, commitment, registration
│   ├── WrongMinerError         block not produced by the drawn miner
│   └── MalformedError          fields of the wrong shape, size or type
├── SignatureError              unsigned, forged or replayed message or block
├── LedgerError                 stored chain problems
│   ├── ChainIntegrityError     broken link, tampered bytes, bad block (has height)
│   └── StorageError            unreadable or corrupted storage file
├── ModelError                  model files: corrupted or mismatching hash
└── DataAccessError             a participant's code path reading another's private data
"""

from __future__ import annotations

__all__ = [
    "BalanceError",
    "ChainIntegrityError",
    "ConfigError",
    "DataAccessError",
    "DerelaylError",
    "DuplicateError",
    "LedgerError",
    "MalformedError",
    "ModelError",
    "PhaseError",
    "ProtocolError",
    "RoleError",
    "SignatureError",
    "StorageError",
    "UnknownParticipantError",
    "WrongMinerError",
]


class DerelaylError(Exception):
    """Base class of every error derelayl raises on purpose."""


class ConfigError(DerelaylError):
    """Invalid parameters or configuration."""


class ProtocolError(DerelaylError):
    """An operation the protocol rules reject. State is left unchanged."""


class PhaseError(ProtocolError):
    """The operation does not belong to the round's current phase."""


class UnknownParticipantError(ProtocolError):
    """A key or participant index that is not registered."""


class RoleError(ProtocolError):
    """The participant does not hold the role the operation needs this round."""


class BalanceError(ProtocolError):
    """An amount above the payer's balance (or a negative amount)."""


class DuplicateError(ProtocolError):
    """A second bid, commitment or registration where only one is allowed."""


class WrongMinerError(ProtocolError):
    """The block was not produced by the miner drawn for it."""


class MalformedError(ProtocolError):
    """Fields of the wrong shape, size or type."""


class SignatureError(DerelaylError):
    """An unsigned, forged or replayed message or block."""


class LedgerError(DerelaylError):
    """A problem with stored blocks."""


class ChainIntegrityError(LedgerError):
    """A stored block that does not verify; ``height`` names the first bad block."""

    def __init__(self, height: int, reason: str) -> None:
        super().__init__(f"block {height}: {reason}")
        self.height = height
        self.reason = reason


class StorageError(LedgerError):
    """A storage file that cannot be read or is corrupted."""


class ModelError(DerelaylError):
    """A model file that is corrupted or does not match its recorded hash."""


class DataAccessError(DerelaylError):
    """A participant tried to read another participant's private data."""
