"""What one participant says to the round's miner: plain data, signed by its sender.

An agent (one key) produces these; the drawn miner collects them and puts the ones the rules
accept into its block. How a message is turned into signed bytes depends on the ledger (Ed25519
over canonical JSON on the local chain, secp256k1 over an EIP-191 hash on the EVM contract):
see ``derelayl.ledger.codec`` and ``derelayl.evm.signing``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from derelayl.protocol.blocks import (
    Bids,
    Block,
    CaseCommitment,
    CommitBlock,
    DepositBlock,
    SettleBlock,
    TestBlock,
    TesterReport,
)
from derelayl.protocol.types import BlockKind

__all__ = [
    "BidMessage",
    "CasesMessage",
    "CommitMessage",
    "JoinMessage",
    "Message",
    "Proposal",
    "ScoresMessage",
    "Signed",
    "block_from_messages",
    "block_messages",
]

Role = Literal["trainer", "model_owner"]


@dataclass(frozen=True)
class BidMessage:
    round: int
    participant: int
    role: Role
    amount: int


@dataclass(frozen=True)
class CommitMessage:
    round: int
    participant: int
    digest: bytes


@dataclass(frozen=True)
class CasesMessage:
    """A tester's commitment to the digest of the test cases it will publish this round."""

    round: int
    participant: int
    digest: bytes


@dataclass(frozen=True)
class ScoresMessage:
    round: int
    participant: int
    test_cases_digest: bytes
    scores: NDArray[np.int64]

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ScoresMessage)
            and (self.round, self.participant, self.test_cases_digest)
            == (other.round, other.participant, other.test_cases_digest)
            and np.array_equal(self.scores, other.scores)
        )

    def __hash__(self) -> int:
        return hash((self.round, self.participant, self.test_cases_digest, self.scores.tobytes()))


@dataclass(frozen=True)
class JoinMessage:
    key: bytes


Message = BidMessage | CommitMessage | CasesMessage | ScoresMessage | JoinMessage


@dataclass(frozen=True)
class Signed:
    """A message and its sender's signature (empty where the ledger needs none)."""

    message: Message
    signature: bytes = b""


@dataclass(frozen=True)
class Proposal:
    """A block as its miner assembled it, and the senders' signatures of its items in item
    order: deposit = trainer bids, model-owner bids, joins, case commitments; commit =
    commitments; test =
    co-tester reports; settle = appeal reports (a disputed round's; otherwise none)."""

    block: Block
    signatures: tuple[bytes, ...] = ()


def block_messages(block: Block) -> list[Message]:
    """The participant messages a block carries, in ``Proposal.signatures`` order."""
    r = block.round
    if isinstance(block, DepositBlock):
        out: list[Message] = []
        for bids, role in ((block.trainer_bids, "trainer"), (block.mo_bids, "model_owner")):
            out += [
                BidMessage(r, int(p), role, int(a))  # type: ignore[arg-type]
                for p, a in zip(bids.participant, bids.amount, strict=True)
            ]
        out += [JoinMessage(k) for k in block.joins]
        return out + [CasesMessage(r, c.tester, c.digest) for c in block.case_commitments]
    if isinstance(block, CommitBlock):
        return [CommitMessage(r, int(t), d) for t, d in zip(block.trainers, block.commitments, strict=True)]
    if isinstance(block, TestBlock):
        return [ScoresMessage(r, c.tester, c.test_cases_digest, c.scores) for c in block.co_testers]
    if isinstance(block, SettleBlock):
        return [ScoresMessage(r, c.tester, c.test_cases_digest, c.scores) for c in block.appeals]
    return []


@dataclass(frozen=True)
class BlockHeader:
    """What a block holds besides its participants' messages."""

    kind: BlockKind
    round: int
    miner: int
    time: int = 0
    randomness: bytes = b""
    fhe_public_key: bytes = b""
    """Commit blocks."""
    tester: ScoresMessage | None = None
    """Test blocks: the testing miner's own scores (its block signature covers them)."""
    n_test_cases: int = 0


def block_from_messages(header: BlockHeader, messages: list[Message]) -> Block:
    """The block carrying ``messages`` in the order given (the inverse of ``block_messages``;
    what a decoder builds once every message's signature has been checked)."""
    r, miner, t, rnd = header.round, header.miner, header.time, header.randomness
    if header.kind == BlockKind.DEPOSIT:
        bids = {
            role: [(m.participant, m.amount) for m in messages if isinstance(m, BidMessage) and m.role == role]
            for role in ("trainer", "model_owner")
        }
        joins = tuple(m.key for m in messages if isinstance(m, JoinMessage))
        cases = tuple(CaseCommitment(m.participant, m.digest) for m in messages if isinstance(m, CasesMessage))
        return DepositBlock(
            r,
            miner,
            Bids.of(bids["trainer"]),
            Bids.of(bids["model_owner"]),
            joins,
            time=t,
            randomness=rnd,
            case_commitments=cases,
        )
    if header.kind == BlockKind.COMMIT:
        commits = [m for m in messages if isinstance(m, CommitMessage)]
        trainers = np.array([m.participant for m in commits], dtype=np.int64)
        return CommitBlock(
            r, miner, trainers, tuple(m.digest for m in commits), header.fhe_public_key, time=t, randomness=rnd
        )
    if header.kind == BlockKind.TEST:
        own = header.tester
        assert own is not None, "a test block carries its miner's scores"
        reports = tuple(
            TesterReport(m.participant, m.test_cases_digest, m.scores) for m in messages if isinstance(m, ScoresMessage)
        )
        return TestBlock(
            r, miner, header.n_test_cases, own.test_cases_digest, own.scores, reports, time=t, randomness=rnd
        )
    appeals = tuple(
        TesterReport(m.participant, m.test_cases_digest, m.scores) for m in messages if isinstance(m, ScoresMessage)
    )
    return SettleBlock(r, miner, appeals, time=t, randomness=rnd)
