"""The chain interface above ``Ledger``: what a participant needs from the ledger it runs on.

A ``ChainClient`` keeps the rules' state at the head (replayed and verified locally with the
protocol core), takes a drawn miner's block (``submit``) and operations participants send
straight to the ledger (``send``: registration, transfers), and reports what happened
(``events``). Implementations:

- ``StateClient``: no ledger at all, the core applied in memory (the simulator and the
  experiment, which measure learning and money, not signatures);
- ``LocalChainClient``: the signed SQLite chain (``Chain``), Ed25519 signatures;
- ``derelayl.evm.client.ContractClient``: the Vyper contract on an EVM node, secp256k1.

Each client also makes ``Signer`` objects for its own signature scheme, so the same ``Agent``
code runs on every ledger.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from derelayl import jsonsafe
from derelayl.errors import SignatureError
from derelayl.ledger.chain import Chain
from derelayl.ledger.codec import decode_block, decode_header, message_bytes, parse_header
from derelayl.ledger.crypto import KeyPair, verify_signature
from derelayl.protocol.blocks import Challenge, Direct, Operation
from derelayl.protocol.messages import Message, Proposal
from derelayl.protocol.state import State
from derelayl.protocol.transition import process_block, process_operation

__all__ = ["ChainClient", "ChainEvent", "LocalChainClient", "LocalSigner", "NullSigner", "StateClient"]


@dataclass(frozen=True)
class ChainEvent:
    """One applied operation: its position in the ledger's history, what it was, its receipt."""

    height: int
    operation: Operation
    receipt: Any


class ChainClient(ABC):
    @property
    @abstractmethod
    def state(self) -> State:
        """The rules' state at the head (a verified local replay; do not mutate)."""

    @abstractmethod
    def submit(self, proposal: Proposal, miner: Any) -> Any:
        """Put a drawn miner's block on the ledger; returns the rules' receipt. A block the
        rules reject raises and changes nothing."""

    def send(self, operation: Direct, sender: Any) -> Any:
        """An operation a participant sends straight to the ledger (not every ledger has one)."""
        raise NotImplementedError(f"{type(self).__name__} takes registrations and commitments only inside blocks")

    def wait_until(self, time: int) -> None:
        """Let the ledger's clock reach ``time`` (what a live chain does by itself while nobody
        sends anything): the next operation is stamped at least ``time``. A challenge window
        needs it (``Params.challenge_window``)."""
        raise NotImplementedError(f"{type(self).__name__} has no clock of its own: its blocks are its time")

    @abstractmethod
    def events(self, start: int = 0) -> Iterator[ChainEvent]:
        """What has been applied since position ``start``."""

    @abstractmethod
    def head(self) -> tuple[int, bytes]:
        """(height, hash or id of the newest block)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the ledger."""


# ---------------------------------------------------------------- signers


@dataclass(frozen=True)
class NullSigner:
    """An identity on a ledger that checks no signatures (``StateClient``)."""

    public: bytes

    def sign(self, message: Message) -> bytes:
        return b""

    def verify(self, public: bytes, message: Message, signature: bytes) -> bool:
        return True


@dataclass(frozen=True)
class LocalSigner:
    """Ed25519 over the local chain's canonical message bytes, bound to one chain id."""

    key: KeyPair
    chain_id: bytes

    @property
    def public(self) -> bytes:
        return self.key.public

    def sign(self, message: Message) -> bytes:
        return self.key.sign(message_bytes(self.chain_id, message))

    def verify(self, public: bytes, message: Message, signature: bytes) -> bool:
        return verify_signature(public, signature, message_bytes(self.chain_id, message))


# ---------------------------------------------------------------- implementations


class StateClient(ChainClient):
    """The protocol core in memory: blocks applied as proposed, no signatures, ledger time =
    count of operations applied (or later, after ``wait_until``)."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._log: list[ChainEvent] = []
        self._time = 0
        """The time of the last stamped operation."""

    def _tick(self) -> int:
        self._time = max(self._time + 1, len(self._log) + 1)
        return self._time

    @property
    def state(self) -> State:
        return self._state

    def submit(self, proposal: Proposal, miner: Any = None) -> Any:
        block = dataclasses.replace(proposal.block, time=self._tick())
        receipt = process_block(self._state, block)
        self._log.append(ChainEvent(len(self._log), block, receipt))
        return receipt

    def send(self, operation: Direct, sender: Any = None) -> Any:
        if isinstance(operation, Challenge):  # stamped by the ledger (no randomness here)
            operation = dataclasses.replace(operation, time=self._tick(), randomness=b"")
        receipt = process_operation(self._state, operation)
        self._log.append(ChainEvent(len(self._log), operation, receipt))
        return receipt

    def wait_until(self, time: int) -> None:
        self._time = max(self._time, time - 1)

    def events(self, start: int = 0) -> Iterator[ChainEvent]:
        yield from self._log[start:]

    def head(self) -> tuple[int, bytes]:
        return len(self._log), b""

    def signer(self, public: bytes) -> NullSigner:
        return NullSigner(public)


class LocalChainClient(ChainClient):
    """The signed SQLite (or memory) chain: every block sealed by its miner and appended with
    every check a verifier makes. A local chain has no randomness of its own (blocks carry
    none, so every draw follows from the genesis seed); ``randomness`` may supply each
    block's, e.g. to replay what an EVM chain's ``prevrandao`` gave."""

    def __init__(self, chain: Chain, randomness: Callable[[int], bytes] | None = None) -> None:
        self.chain = chain
        self.randomness = randomness

    @property
    def state(self) -> State:
        return self.chain.state

    def submit(self, proposal: Proposal, miner: LocalSigner) -> Any:
        if not isinstance(miner, LocalSigner):
            raise SignatureError("a local chain's blocks are signed with the miner's Ed25519 key")
        randomness = self.randomness(self.chain.height) if self.randomness is not None else b""
        return self.chain.submit(proposal, miner.key, randomness)

    def events(self, start: int = 0) -> Iterator[ChainEvent]:
        # blocks are re-decoded from storage; receipts are not kept (replay gives them)
        for stored in self.chain.ledger.blocks(max(start, 1)):
            header = decode_header(parse_header(stored), self.chain.state.n_participants)
            block = decode_block(header, jsonsafe.loads(stored.body), self.chain.chain_id, self.chain.state.keys)
            yield ChainEvent(stored.height, block, None)

    def head(self) -> tuple[int, bytes]:
        return self.chain.height, self.chain.head_hash

    def signer(self, key: KeyPair) -> LocalSigner:
        return LocalSigner(key, self.chain.chain_id)

    def close(self) -> None:
        self.chain.ledger.close()
