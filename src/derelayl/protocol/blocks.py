"""The contents of the round's four blocks, as the rules see them, and their receipts.

A block carries only what its producer decided or received (bids, commitments, scores) and
two inputs from the ledger: ``time`` (the ledger's block number, for phase deadlines) and
``randomness`` (mixed into the beacon; the EVM's ``prevrandao``, empty on a local chain).
Everything the rules derive from it (matching, selection, payouts) is returned as a receipt,
so that a verifier recomputes it instead of trusting it. Per-item lists are parallel
``numpy`` arrays, so that a block of 40,000 bids costs no Python loop.

Two operations happen outside the round's blocks: ``Join`` (register a key; also possible
inside a deposit block) and ``Transfer`` (coins between registered participants: the coin is
an ERC-20 on the contract backend).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from derelayl.protocol.state import Pairs, empty_i64
from derelayl.protocol.types import BlockKind

__all__ = [
    "Bids",
    "Block",
    "CaseCommitment",
    "Challenge",
    "CommitBlock",
    "CommitReceipt",
    "DepositBlock",
    "DepositReceipt",
    "Direct",
    "Join",
    "Operation",
    "PostedCommitment",
    "SettleBlock",
    "SettleReceipt",
    "TestBlock",
    "TestReceipt",
    "TesterReport",
    "Transfer",
    "is_block",
]

I64 = NDArray[np.int64]


@dataclass(frozen=True)
class Bids:
    """Bids as parallel arrays: who bids, and how many units (per trainer, for model owners)."""

    participant: I64 = field(default_factory=empty_i64)
    amount: I64 = field(default_factory=empty_i64)

    @classmethod
    def of(cls, pairs: dict[int, int] | list[tuple[int, int]]) -> Bids:
        items = list(pairs.items()) if isinstance(pairs, dict) else list(pairs)
        who = np.array([p for p, _ in items], dtype=np.int64)
        amount = np.array([a for _, a in items], dtype=np.int64)
        return cls(who, amount)

    def __len__(self) -> int:
        return int(self.participant.size)


@dataclass(frozen=True)
class CaseCommitment:
    """A tester's signed digest of the test cases it will publish this round (``Params.case_commitments``)."""

    tester: int
    digest: bytes


@dataclass(frozen=True)
class DepositBlock:
    round: int
    miner: int
    trainer_bids: Bids
    mo_bids: Bids
    joins: tuple[bytes, ...] = ()
    """Public keys registering now; they take part from the next round's role draw."""
    time: int = 0
    randomness: bytes = b""
    case_commitments: tuple[CaseCommitment, ...] = ()
    """With ``Params.case_commitments``: each of the round's testers' digest of the test cases
    it will publish, in tester order, fixed before any trainer is matched (once the phase has
    timed out, a silent tester's may be missing: it may then not report); otherwise none."""
    kind: BlockKind = BlockKind.DEPOSIT


@dataclass(frozen=True)
class CommitBlock:
    round: int
    miner: int
    trainers: I64
    commitments: tuple[bytes, ...]
    """SHA-256 of each trainer's (encrypted) model, committed before any test case is known."""
    fhe_public_key: bytes = b""
    time: int = 0
    randomness: bytes = b""
    kind: BlockKind = BlockKind.COMMIT


@dataclass(frozen=True)
class TesterReport:
    """A co-tester's scores of every committed model on its own test cases."""

    tester: int
    test_cases_digest: bytes
    scores: I64


@dataclass(frozen=True)
class TestBlock:
    round: int
    miner: int
    n_test_cases: int
    test_cases_digest: bytes
    scores: I64
    """One integer score per commitment, in commitment order (higher is better)."""
    co_testers: tuple[TesterReport, ...] = ()
    """Reports of the round's other testers (``params.testers - 1`` of them), in role order."""
    time: int = 0
    randomness: bytes = b""
    kind: BlockKind = BlockKind.TEST


@dataclass(frozen=True)
class SettleBlock:
    round: int
    miner: int
    appeals: tuple[TesterReport, ...] = ()
    """In a disputed round (appeals on): each appellant's scores on the round's pooled cases, in
    draw order (``State.dispute.appellants``); otherwise none."""
    time: int = 0
    randomness: bytes = b""
    kind: BlockKind = BlockKind.SETTLE


Block = DepositBlock | CommitBlock | TestBlock | SettleBlock


@dataclass(frozen=True)
class Join:
    """A key registering outside a deposit block (e.g. a direct contract call)."""

    key: bytes


@dataclass(frozen=True)
class Transfer:
    """Coins moved from one registered participant to another."""

    sender: int
    recipient: int
    amount: int


@dataclass(frozen=True)
class PostedCommitment:
    """A matched trainer's signed commitment sent straight to the ledger during the commit
    phase (a contract call), so that no commit miner can leave it out: the round's commit
    block must carry every posted commitment."""

    round: int
    trainer: int
    digest: bytes
    signature: bytes = b""
    """The trainer's signature of ``CommitMessage(round, trainer, digest)`` on this ledger
    (checked by the ledger, as a block's are; the commit miner copies it into its block)."""


@dataclass(frozen=True)
class Challenge:
    """A participant's challenge of the current round's test block, sent straight to the
    ledger in the settle phase (``Params.challenge_bond``): it stakes the bond and opens the
    round's appeal. ``time`` and ``randomness`` are the ledger's at the challenge (on the
    contract: the block number and ``prevrandao``); the appellants are drawn from them."""

    round: int
    challenger: int
    time: int = 0
    randomness: bytes = b""


Direct = Join | Transfer | PostedCommitment | Challenge
"""What a participant sends straight to a ledger that takes it (the contract), outside blocks."""
Operation = Block | Direct


def is_block(operation: Operation) -> bool:
    """Whether ``operation`` is one of a round's four blocks (not a direct operation)."""
    return isinstance(operation, DepositBlock | CommitBlock | TestBlock | SettleBlock)


@dataclass(frozen=True)
class DepositReceipt:
    pairs: Pairs
    parent_model: I64
    miner_reward: int


@dataclass(frozen=True)
class CommitReceipt:
    model_id: I64
    parent_model: I64
    miner_reward: int


@dataclass(frozen=True)
class TestReceipt:
    miner_reward: int
    co_tester_reward: int = 0
    """Paid to co-testers in all (each earns what the testing miner earns)."""
    held: int = 0
    """Disputed round: the testers' rewards held in escrow instead (nothing paid yet)."""


@dataclass(frozen=True)
class SettleReceipt:
    selected_model: I64
    selected_owner: I64
    refunded: int
    burned: int
    lineage_minted: int
    lineage_payout: I64
    """Units paid to each participant (full-length array)."""
    miner_reward: int
    appeal_reward: int = 0
    """Disputed round: paid to the appellants on their median (rewards + forfeited holds)."""
    forfeited: int = 0
    """Disputed round: held rewards (and stakes) of testers off the final medians."""
