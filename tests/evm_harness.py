"""The Python core and the contract side by side: every operation is applied to both, and
their outcomes (accepted, or the class of error) and states are compared.

The core applies the operation with ``process_operation``; the contract receives it as a
signed transaction from the right account. A block or a challenge is stamped with the block
number it will land in (each transaction is mined alone) and no randomness (the contract is
deployed with ``mix_randomness=False``; a separate test covers mixing).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from derelayl import errors
from derelayl.evm.client import ContractClient
from derelayl.evm.compare import contract_snapshot, differences, state_snapshot
from derelayl.evm.node import Node, TxFailed
from derelayl.evm.signing import EvmKey, EvmSigner, derive_evm_keys
from derelayl.protocol import Params, Phase, initialize_state
from derelayl.protocol.blocks import Block, Challenge, Join, Operation, PostedCommitment, Transfer
from derelayl.protocol.messages import CommitMessage, JoinMessage, Proposal, block_messages
from derelayl.protocol.state import State
from derelayl.protocol.transition import process_operation

__all__ = ["Pair", "mine", "wait_out_the_window"]

UNENCODABLE = "unencodable"
REVERTED = "reverted"


def mine(node: Node, blocks: int) -> None:
    """Advance the node's block number without transactions."""
    node.mine(blocks)


@dataclass
class Pair:
    node: Node
    params: Params
    participants: int
    seed: int
    extra_keys: int = 8
    mix_randomness: bool = False
    """Deploy mixing ``prevrandao`` (then drive the client alone: ``apply`` stamps no randomness)."""
    mismatches: list[str] = field(default_factory=list)
    log: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        keys = derive_evm_keys(self.seed, self.participants + self.extra_keys)
        self.node.fund([k.address for k in keys])
        self.keys = keys
        self.beacon = self.seed.to_bytes(32, "big")
        publics = [k.public for k in keys[: self.participants]]
        self.client = ContractClient.deploy(
            self.node, self.params, self.beacon, publics, keys[0], mix_randomness=self.mix_randomness
        )
        self.ref: State = initialize_state(self.params, self.beacon, publics)
        self.signers: dict[bytes, EvmSigner] = {k.public: self.client.signer(k) for k in keys}
        self.newcomers = [k for k in keys[self.participants :]]

    # ------------------------------------------------------------ one operation on both

    def apply(self, op: Operation, what: str) -> tuple[str, str]:
        """Apply to both; record a mismatch of outcome or of state. Returns the outcomes."""
        if isinstance(op, PostedCommitment):  # signed by its trainer (a stranger for unknown ones)
            message = CommitMessage(op.round, op.trainer, op.digest)
            op = dataclasses.replace(op, signature=self._signer_of_index(op.trainer).sign(message))
        elif not isinstance(op, Join | Transfer):
            op = dataclasses.replace(op, time=self.node.block_number() + 1, randomness=b"")
        candidate = self.ref.copy()
        try:
            process_operation(candidate, op)
            ours = "ok"
        except errors.ProtocolError as exc:
            ours = type(exc).__name__
        theirs = self._theirs(op)
        self.log.append((what, ours, theirs))
        if not _agree(ours, theirs):
            self.mismatches.append(f"{what}: rules {ours}, contract {theirs}")
            raise AssertionError(f"outcomes differ at {what}: rules {ours}, contract {theirs}")
        if ours == "ok":
            self.ref = candidate
            if isinstance(op, Join | Transfer | PostedCommitment):
                return ours, theirs  # compared with the next block's state (views are slow on py-evm)
            diff = differences(state_snapshot(self.ref), contract_snapshot(self.client.contract))
            if diff:
                self.mismatches.append(f"{what}: states differ: {diff}")
                raise AssertionError(f"states differ after {what}: {diff}")
        return ours, theirs

    def _theirs(self, op: Operation) -> str:
        try:
            if isinstance(op, Join):
                sender = self._signer_of_key(op.key)
                self.client.send(op, sender)
            elif isinstance(op, Transfer):
                self.client.send(op, self._signer_of_index(op.sender))
            elif isinstance(op, PostedCommitment):  # anyone may send it: the signature is the trainer's
                self.client.send(op, self._signer_of_index(0))
            elif isinstance(op, Challenge):  # from the challenger's account (a stranger's for unknown ones)
                self.client.send(op, self._signer_of_index(op.challenger))
            else:
                self.client.submit(self.proposal(op), self._signer_of_index(op.miner))
        except TxFailed as exc:
            return exc.reason.split(":", 1)[0] if ":" in exc.reason else REVERTED
        except errors.LedgerError:
            raise  # the client's replay disagreeing with the contract is a finding, not a rejection
        except (errors.DerelaylError, ValueError, TypeError, OverflowError) as exc:
            return f"{UNENCODABLE} ({type(exc).__name__})"
        return "ok"

    # ------------------------------------------------------------ signing

    def _signer_of_index(self, index: int) -> EvmSigner:
        if 0 <= index < self.ref.n_participants:
            return self.signers[self.ref.keys[index]]
        return self.signers[self.newcomers[-1].public]  # an unregistered account

    def _signer_of_key(self, key: bytes) -> EvmSigner:
        signer = self.signers.get(key)
        if signer is None:
            raise errors.MalformedError("no account for that key")
        return signer

    def proposal(self, block: Block) -> Proposal:
        """Every item signed by its sender (a stranger signs for unknown participants)."""
        sigs = []
        for message in block_messages(block):
            if isinstance(message, JoinMessage):
                signer = self.signers.get(message.key) or self._signer_of_index(-1)
            else:
                signer = self._signer_of_index(message.participant)
            sigs.append(signer.sign(message))
        return Proposal(block, tuple(sigs))

    def newcomer(self) -> EvmKey | None:
        for key in self.newcomers[:-1]:
            if key.public not in self.ref.key_index:
                return key
        return None

    def replay_matches(self) -> list[str]:
        """The client's verified replay of the contract's logs equals the reference."""
        self.client.sync()
        return differences(state_snapshot(self.ref), state_snapshot(self.client.state))


def wait_out_the_window(pair: Pair) -> None:
    """Mine until a settle block of an unchallenged round lands past its challenge window
    (``Params.challenge_window``): the next transaction's block is the block number + 1."""
    s = pair.ref
    if s.phase == Phase.SETTLE and not s.appeal_open and s.params.challenge_window:
        mine(pair.node, s.phase_start + s.params.challenge_window - (pair.node.block_number() + 1))


def _agree(ours: str, theirs: str) -> bool:
    if ours == "ok" or theirs == "ok":
        return ours == theirs
    if theirs.startswith(UNENCODABLE) or theirs == REVERTED:
        return True  # the contract cannot even be called with it: rejected either way
    return ours == theirs


def scores_like(block: Any, values: list[int]) -> np.ndarray:
    return np.array(values[: block.scores.size], dtype=np.int64)
