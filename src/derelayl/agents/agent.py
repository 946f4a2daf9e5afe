"""One participant: one key, its own data and model side, the reference policy.

An ``Agent`` does what its role asks in each phase, using only public state and what is its
own (its key, its data, the models it trained or was handed):

- deposit: bid (trainer: the taker bid; model owner: its budget per trainer); a newcomer asks
  to join; a drawn tester commits to its test cases' digest (with case commitments);
- commit: if matched, train the parent on its own data and commit to the child's digest;
- test: if drawn as a co-tester, score every committed model on its own test cases;
- settle: with challenges on, a trainer challenges a round whose published scores of the
  models it holds are wrong (``challenge``); if drawn as an appellant of a disputed round,
  re-score the round's pooled cases;
- as the drawn miner of any phase: assemble the block from the messages it received (only
  what the rules accept, in the order they require), plus its own scores as testing miner.

Messages are signed with the agent's own ``Signer``; nothing here needs another key. The
learning side is a ``Brain`` (the paper's abstract model, or real PyTorch training). A round
driver (``derelayl.runtime.driver``) moves messages between agents over a transport and hands
the miner's proposal to the chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from derelayl.agents.policies import OwnVersion, mo_bid, taker_bid
from derelayl.errors import DerelaylError, MalformedError
from derelayl.protocol.blocks import (
    Bids,
    CaseCommitment,
    Challenge,
    CommitBlock,
    DepositBlock,
    PostedCommitment,
    SettleBlock,
    TestBlock,
    TesterReport,
)
from derelayl.protocol.messages import (
    BidMessage,
    CasesMessage,
    CommitMessage,
    JoinMessage,
    Message,
    Proposal,
    ScoresMessage,
    Signed,
)
from derelayl.protocol.producer import compute_includable_bids, compute_includable_commitments
from derelayl.protocol.scores import lower_median
from derelayl.protocol.state import State
from derelayl.protocol.types import Phase
from derelayl.protocol.validate import DIGEST_SIZE, phase_timed_out, scores_expected, verify_committed_cases

__all__ = ["Agent", "Brain", "Signer", "held_positions"]

I64 = NDArray[np.int64]


class Signer(Protocol):
    """A participant's identity on one ledger: its registered 32-byte key and how it signs."""

    @property
    def public(self) -> bytes: ...

    def sign(self, message: Message) -> bytes: ...

    def verify(self, public: bytes, message: Message, signature: bytes) -> bool:
        """Whether ``signature`` is ``public``'s signature of ``message`` on this ledger."""
        ...


class Brain(Protocol):
    """The model side of one participant."""

    def train(self, state: State, me: int) -> bytes | None:
        """As a matched trainer: train the pair's parent on own data; the child's digest, or
        None if training failed (the agent then commits nothing)."""
        ...

    def cases_digest(self, state: State, me: int) -> bytes:
        """As a tester, in the deposit phase (with case commitments): the digest of the test
        cases it will publish this round."""
        ...

    def score(self, state: State, me: int) -> tuple[bytes, I64]:
        """As a tester: (digest of own test cases, one integer score per commitment)."""
        ...

    def appeal(self, state: State, me: int) -> tuple[bytes, I64]:
        """As an appellant of a disputed round: (digest of the cases scored, the scores) on the
        round's pooled cases, the testers' published ones."""
        ...

    def checkable(self, state: State, me: int) -> dict[int, tuple[int, ...]]:
        """As a trainer, after the test block (challenges on): for each position of the test
        report this participant can score itself (its own child, its parent: the models it
        holds) on the published cases, the scores an honest tester may give there."""
        ...


@dataclass
class Agent:
    signer: Signer
    brain: Brain
    basis: OwnVersion = "trained"
    """Reference taker bid: value a slot against the newest version trained (or held)."""
    wants_to_join: bool = False
    post_commitments: bool = False
    """Also send each commitment straight to the ledger (``posts``; the contract takes it), so
    that no commit miner can leave it out and have the deposit burned."""

    @property
    def public(self) -> bytes:
        return self.signer.public

    def index(self, state: State) -> int | None:
        return state.key_index.get(self.signer.public)

    # ---------------------------------------------------------------- as a participant

    def messages(self, state: State) -> list[Signed]:
        """What this participant sends to the round's miner in the current phase."""
        me = self.index(state)
        if me is None:
            join = JoinMessage(self.signer.public)
            return [self._signed(join)] if self.wants_to_join and state.phase == Phase.DEPOSIT else []
        assert state.roles is not None
        roles = state.roles
        out: list[Message] = []
        if state.phase == Phase.DEPOSIT:
            if _has(roles.trainers, me):
                bid = int(taker_bid(state, me, self.basis))
                if bid >= state.params.min_trainer_bid:  # (below the minimum deposit: cannot afford it)
                    out.append(BidMessage(state.round, me, "trainer", bid))
            if _has(roles.model_owners, me):
                out.append(BidMessage(state.round, me, "model_owner", int(mo_bid(state, me))))
            if state.params.case_commitments and me in roles.testers.tolist():
                out.append(CasesMessage(state.round, me, self.brain.cases_digest(state, me)))
        elif state.phase == Phase.COMMIT and me in state.pairs.trainer.tolist():
            digest = self.brain.train(state, me)
            if digest is not None:
                out.append(CommitMessage(state.round, me, digest))
        elif state.phase == Phase.TEST and me in roles.testers[1:].tolist():
            digest, scores = self.brain.score(state, me)
            out.append(ScoresMessage(state.round, me, digest, scores))
        elif state.phase == Phase.SETTLE and state.appeal_open and me in _appellants(state):
            digest, scores = self.brain.appeal(state, me)
            out.append(ScoresMessage(state.round, me, digest, scores))
        return [self._signed(m) for m in out]

    def challenge(self, state: State) -> Challenge | None:
        """With challenges on, in the settle phase of a round whose testers agreed: challenge
        the round if the published scores of a model this participant holds are not what an
        honest tester could give (``Brain.checkable``) and it holds the bond."""
        me = self.index(state)
        bond = state.params.challenge_bond
        dispute = state.dispute
        if me is None or not bond or state.phase != Phase.SETTLE or dispute is None or dispute.open:
            return None
        if me not in state.commits.owner.tolist() or int(state.balances[me]) < bond:
            return None
        published = lower_median(dispute.rows)
        wrong = any(int(published[i]) not in honest for i, honest in self.brain.checkable(state, me).items())
        return Challenge(state.round, me) if wrong else None

    def posts(self, sent: Sequence[Signed]) -> list[PostedCommitment]:
        """What this participant sends straight to the ledger besides ``sent`` (its messages of
        this phase): with ``post_commitments``, its signed commitment."""
        if not self.post_commitments:
            return []
        return [
            PostedCommitment(s.message.round, s.message.participant, s.message.digest, s.signature)
            for s in sent
            if isinstance(s.message, CommitMessage)
        ]

    def _signed(self, message: Message) -> Signed:
        return Signed(message, self.signer.sign(message))

    # ---------------------------------------------------------------- as the drawn miner

    def propose(self, state: State, inbox: Sequence[Signed], now: int | None = None) -> Proposal:
        """The block of the current phase from the messages received (those whose signature
        verifies and that the rules accept), with their senders' signatures. ``now`` is the
        ledger's block number: once the phase has timed out, a test block leaves out the
        co-testers that sent nothing (the rules allow it then, and only then)."""
        me = self.index(state)
        assert me is not None and state.roles is not None
        valid = [s for s in inbox if self._verifies(state, s)]
        if state.phase == Phase.DEPOSIT:
            return self._deposit(state, me, valid, now)
        if state.phase == Phase.COMMIT:
            return self._commit(state, me, valid)
        if state.phase == Phase.TEST:
            return self._test(state, me, valid, now)
        if not state.appeal_open:
            return Proposal(SettleBlock(state.round, me))
        chosen = self._reports(state, valid, state.dispute.appellants.tolist(), now, "settle block", "appellant(s)")
        appeals = tuple(TesterReport(t, s.message.test_cases_digest, s.message.scores) for t, s in chosen)  # type: ignore[union-attr]
        return Proposal(SettleBlock(state.round, me, appeals), tuple(s.signature for _, s in chosen))

    def _verifies(self, state: State, signed: Signed) -> bool:
        message = signed.message
        if isinstance(message, JoinMessage):
            public = message.key
        elif message.round != state.round or not 0 <= message.participant < state.n_participants:
            return False
        else:
            public = state.keys[message.participant]
        return self.signer.verify(public, message, signed.signature)

    def _deposit(self, state: State, me: int, inbox: list[Signed], now: int | None) -> Proposal:
        by_role: dict[str, list[tuple[int, int]]] = {"trainer": [], "model_owner": []}
        sigs: dict[tuple[str, int, int], bytes] = {}
        joins: dict[bytes, bytes] = {}
        for s in inbox:
            m = s.message
            if isinstance(m, BidMessage):
                by_role[m.role].append((m.participant, m.amount))
                sigs.setdefault((m.role, m.participant, m.amount), s.signature)
            elif isinstance(m, JoinMessage) and m.key not in state.key_index:
                joins.setdefault(m.key, s.signature)
        trainer_bids, mo_bids = compute_includable_bids(
            state, Bids.of(by_role["trainer"]), Bids.of(by_role["model_owner"])
        )
        signatures = [
            sigs[(role, int(p), int(a))]
            for bids, role in ((trainer_bids, "trainer"), (mo_bids, "model_owner"))
            for p, a in zip(bids.participant, bids.amount, strict=True)
        ]
        cases: list[tuple[int, Signed]] = []
        if state.params.case_commitments:
            assert state.roles is not None
            committed = [
                s for s in inbox if isinstance(s.message, CasesMessage) and len(s.message.digest) == DIGEST_SIZE
            ]
            testers = state.roles.testers.tolist()
            cases = self._first_of_each(
                state, committed, testers, now, "deposit block", "case commitment from tester(s)"
            )
        block = DepositBlock(
            state.round,
            me,
            trainer_bids,
            mo_bids,
            tuple(joins),
            case_commitments=tuple(CaseCommitment(t, s.message.digest) for t, s in cases),  # type: ignore[union-attr]
        )
        return Proposal(block, (*signatures, *joins.values(), *(s.signature for _, s in cases)))

    def _commit(self, state: State, me: int, inbox: list[Signed]) -> Proposal:
        # commitments posted straight to the ledger first: the rules require every one of them
        posted = [(CommitMessage(state.round, t, d), sig) for t, (d, sig) in sorted(state.posted.items())]
        received = posted + [(s.message, s.signature) for s in inbox if isinstance(s.message, CommitMessage)]
        trainers = np.array([m.participant for m, _ in received], dtype=np.int64)
        kept, digests = compute_includable_commitments(state, trainers, tuple(m.digest for m, _ in received))
        sigs: dict[tuple[int, bytes], bytes] = {}
        for m, sig in received:
            sigs.setdefault((m.participant, m.digest), sig)
        signatures = tuple(sigs[(int(t), d)] for t, d in zip(kept, digests, strict=True))
        return Proposal(CommitBlock(state.round, me, kept, digests), signatures)

    def _test(self, state: State, me: int, inbox: list[Signed], now: int | None) -> Proposal:
        assert state.roles is not None
        digest, scores = self.brain.score(state, me)
        if state.params.case_commitments:  # a report on other cases than its sender committed to is refused
            inbox = [s for s in inbox if _names_committed_cases(state, s.message)]
        chosen = self._reports(state, inbox, state.roles.testers[1:].tolist(), now, "test block", "co-tester(s)")
        block_reports = tuple(TesterReport(t, s.message.test_cases_digest, s.message.scores) for t, s in chosen)  # type: ignore[union-attr]
        block = TestBlock(state.round, me, state.params.test_cases, digest, scores, block_reports)
        return Proposal(block, tuple(s.signature for _, s in chosen))

    @classmethod
    def _reports(
        cls, state: State, inbox: list[Signed], expected: list[int], now: int | None, block: str, who: str
    ) -> list[tuple[int, Signed]]:
        """The first well-formed report of each ``expected`` sender, in that order; once the
        phase has timed out, silent ones are left out (they forfeit), before that they are
        waited for."""
        reports = [
            s for s in inbox if isinstance(s.message, ScoresMessage) and s.message.scores.size == scores_expected(state)
        ]
        return cls._first_of_each(state, reports, expected, now, block, f"report from {who}")

    @staticmethod
    def _first_of_each(
        state: State, inbox: list[Signed], expected: list[int], now: int | None, block: str, what: str
    ) -> list[tuple[int, Signed]]:
        """The first of ``inbox`` from each ``expected`` sender, in that order; once the phase
        has timed out, silent ones are left out, before that they are waited for (``what``:
        what is missing, for the error)."""
        reports: dict[int, Signed] = {}
        for s in inbox:
            reports.setdefault(s.message.participant, s)  # type: ignore[union-attr]
        missing = [t for t in expected if t not in reports]
        if missing and now is not None and phase_timed_out(state, now + 1):
            expected = [t for t in expected if t in reports]
        elif missing:
            raise DerelaylError(f"{block} of round {state.round}: no {what} {missing}")
        return [(t, reports[t]) for t in expected]


def _names_committed_cases(state: State, message: Message) -> bool:
    """Whether the rules take ``message`` as a report on the cases its sender committed to."""
    if not isinstance(message, ScoresMessage):
        return False
    try:
        verify_committed_cases(state, message.participant, message.test_cases_digest)
    except MalformedError:
        return False
    return True


def held_positions(state: State, me: int) -> tuple[int, int | None]:
    """Where the models a trainer of the round holds stand in a test report: its child (one
    per trainer), and (with the improvement rule, which scores the live models) its parent."""
    child = int(np.flatnonzero(state.commits.owner == me)[0])
    if state.params.min_improvement is None:
        return child, None
    return child, len(state.commits) + int(state.pairs.live_pos[state.commit_pair[child]])


def _appellants(state: State) -> list[int]:
    return [] if state.dispute is None else state.dispute.appellants.tolist()


def _has(sorted_ids: I64, who: int) -> bool:
    i = int(np.searchsorted(sorted_ids, who))
    return i < sorted_ids.size and int(sorted_ids[i]) == who
