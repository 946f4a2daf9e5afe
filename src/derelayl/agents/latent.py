"""The paper's abstract model, for one agent and for a whole population at once.

``LatentBrain`` is one participant's model side: training draws its own slot of the round's
abstract draws (``LatentTrainer``); a latent model is its integer score, encoded in its
commitment, so testing reads the scores back from the commitments.

``LatentPopulation`` is the simulator's fast path: it produces, with numpy over all
participants at once, exactly the block that the round's agents (``Agent`` + ``LatentBrain``,
reference policy) and the drawn miner would produce — the same policy functions, vectorised.
``tests/test_agents.py`` drives both side by side and checks every block is identical.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from derelayl.agents.agent import held_positions
from derelayl.agents.policies import OwnVersion, mo_bid, taker_bid
from derelayl.learning.latent import LatentTrainer, latent_commitments, latent_scores
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
from derelayl.protocol.producer import order_bids
from derelayl.protocol.state import State
from derelayl.protocol.types import Phase

__all__ = ["LatentBrain", "LatentPopulation", "latent_test_digest"]

I64 = NDArray[np.int64]


def latent_test_digest(seed: int, round_index: int, tester: int) -> bytes:
    """Stands for the digest of a tester's test cases (the abstract model needs none)."""
    return hashlib.sha256(f"latent-tests/{seed}/{round_index}/{tester}".encode()).digest()


def latent_round_scores(state: State) -> I64:
    """What a latent tester reports: the committed models' scores, then (improvement rule) the
    live models' (a latent model is its score)."""
    scores = latent_scores(state.commitments)
    if state.params.min_improvement is None:
        return scores
    return np.concatenate([scores, state.live.score]).astype(np.int64)


def _train_pairs(trainer: LatentTrainer, state: State, pairs: I64) -> tuple[NDArray[np.bool_], I64]:
    """(success, child score) of the given pair positions: parent score + the trainer's draw."""
    parent = state.live.score[state.pairs.live_pos[pairs]]
    return trainer.train(state.round, state.pairs.trainer[pairs], parent, state.n_participants)


@dataclass(frozen=True)
class LatentBrain:
    trainer: LatentTrainer

    def train(self, state: State, me: int) -> bytes | None:
        pair = np.flatnonzero(state.pairs.trainer == me)
        ok, score = _train_pairs(self.trainer, state, pair)
        if not bool(ok[0]):
            return None
        return latent_commitments(state.round, np.array([me], dtype=np.int64), score)[0]

    def cases_digest(self, state: State, me: int) -> bytes:
        return latent_test_digest(self.trainer.seed, state.round, me)

    def score(self, state: State, me: int) -> tuple[bytes, I64]:
        return self.cases_digest(state, me), latent_round_scores(state)

    def appeal(self, state: State, me: int) -> tuple[bytes, I64]:
        return self.score(state, me)

    def checkable(self, state: State, me: int) -> dict[int, tuple[int, ...]]:
        honest = latent_round_scores(state)
        return {i: (int(honest[i]),) for i in held_positions(state, me) if i is not None}


@dataclass
class LatentPopulation:
    """Every participant of a latent network, vectorised: the block the drawn miner would
    assemble from all agents' messages this phase."""

    trainer: LatentTrainer
    basis: OwnVersion = "trained"
    sybil: NDArray[np.bool_] | None = None
    """Participants run by one Sybil operator (newcomers beyond the mask are honest): as
    trainers they bid the least the rules allow (0, or ``min_trainer_bid`` if they can afford
    it) and free-ride, committing their parent's score unchanged."""

    def _sybils(self, who: I64) -> NDArray[np.bool_]:
        if self.sybil is None:
            return np.zeros(who.size, dtype=bool)
        return (who < self.sybil.size) & self.sybil[np.minimum(who, self.sybil.size - 1)]

    def next_block(self, state: State, joins: tuple[bytes, ...] = ()) -> Block:
        assert state.roles is not None
        roles = state.roles
        miner = roles.block_miners[int(state.phase)]
        if state.phase == Phase.DEPOSIT:
            trainers, owners = roles.trainers, roles.model_owners
            bids = taker_bid(state, trainers, self.basis)
            least = np.minimum(state.balances[trainers], state.params.min_trainer_bid)
            bids = np.where(self._sybils(trainers), least, bids)
            afford = bids >= state.params.min_trainer_bid  # (below the minimum deposit: no bid)
            trainer_bids, mo_bids = order_bids(
                state,
                Bids(trainers[afford], bids[afford]),
                Bids(owners, mo_bid(state, owners)),
            )
            cases = tuple(
                CaseCommitment(t, latent_test_digest(self.trainer.seed, state.round, t))
                for t in (roles.testers.tolist() if state.params.case_commitments else [])
            )
            return DepositBlock(state.round, miner, trainer_bids, mo_bids, joins, case_commitments=cases)
        if state.phase == Phase.COMMIT:
            # every matched trainer trains; those that succeed commit, in pair order (digests
            # are distinct by construction: they encode the trainer)
            pairs = np.arange(len(state.pairs), dtype=np.int64)
            ok, score = _train_pairs(self.trainer, state, pairs)
            rider = self._sybils(state.pairs.trainer)
            ok = ok | rider
            score = np.where(rider, state.live.score[state.pairs.live_pos], score)
            trainers = state.pairs.trainer[ok]
            return CommitBlock(state.round, miner, trainers, latent_commitments(state.round, trainers, score[ok]))
        if state.phase == Phase.TEST:
            scores = latent_round_scores(state)
            seed = self.trainer.seed
            reports = tuple(
                TesterReport(t, latent_test_digest(seed, state.round, t), scores) for t in roles.testers[1:].tolist()
            )
            return TestBlock(
                state.round,
                miner,
                state.params.test_cases,
                latent_test_digest(seed, state.round, miner),
                scores,
                reports,
            )
        # a disputed round (somebody lied in the test block): every appellant re-scores honestly
        appellants = [] if state.dispute is None else state.dispute.appellants.tolist()
        scores = latent_round_scores(state)
        seed = self.trainer.seed
        appeals = tuple(TesterReport(a, latent_test_digest(seed, state.round, a), scores) for a in appellants)
        return SettleBlock(state.round, miner, appeals)
