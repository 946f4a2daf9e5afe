"""Participants of a one-process network whose models have the paper's abstract quality.

``LatentParticipants.next_block(state)`` plays every participant at once: trainers and model
owners bid (reference policy), matched trainers train (latent score) and commit, the testing
miner scores, the settlement miner settles. The block is then applied by whoever drives it:
the protocol core directly (simulator) or a signed chain (``derelayl run``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from derelayl.agents.policies import reference_bids
from derelayl.learning.latent import LatentTrainer
from derelayl.protocol.blocks import Block, CommitBlock, DepositBlock, SettleBlock, TestBlock, TesterReport
from derelayl.protocol.state import State
from derelayl.protocol.types import Phase

__all__ = ["LatentParticipants", "latent_commitments"]

_TAG = np.frombuffer(b"latent01", dtype=np.uint8)


def latent_commitments(round_index: int, trainers: NDArray[np.int64], z: NDArray[np.float64]) -> tuple[bytes, ...]:
    """An abstract model *is* (round, trainer, z): its 32-byte canonical encoding binds it."""
    n = trainers.size
    raw = np.zeros((n, 32), dtype=np.uint8)
    raw[:, :8] = _TAG
    raw[:, 8:16] = np.frombuffer(np.int64(round_index).byteswap().tobytes(), dtype=np.uint8)
    raw[:, 16:24] = trainers.astype(">i8").view(np.uint8).reshape(n, 8)
    raw[:, 24:32] = z.astype(">f8").view(np.uint8).reshape(n, 8)
    flat = raw.tobytes()
    return tuple(flat[i : i + 32] for i in range(0, 32 * n, 32))


@dataclass
class LatentParticipants:
    trainer: LatentTrainer
    fhe_public_key: bytes = b""
    _trained: dict[int, tuple[NDArray[np.int64], NDArray[np.float64]]] = field(default_factory=dict)

    def _train(self, state: State) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        cached = self._trained.get(state.round)
        if cached is None:
            pairs = state.pairs
            ok, z = self.trainer.train(
                state.round, pairs.trainer, state.live.score[pairs.live_pos], state.n_participants
            )
            cached = (pairs.trainer[ok], z[ok])
            self._trained = {state.round: cached}
        return cached

    def next_block(self, state: State, joins: tuple[bytes, ...] = ()) -> Block:
        assert state.roles is not None
        miner = state.roles.block_miners[int(state.phase)]
        if state.phase == Phase.DEPOSIT:
            trainer_bids, mo_bids = reference_bids(state)
            return DepositBlock(state.round, miner, trainer_bids, mo_bids, joins)
        if state.phase == Phase.COMMIT:
            # one submission per matched trainer, digests distinct by construction (they encode
            # the trainer), so no filtering is needed on this fast path
            trainers, z = self._train(state)
            return CommitBlock(
                state.round, miner, trainers, latent_commitments(state.round, trainers, z), self.fhe_public_key
            )
        if state.phase == Phase.TEST:
            trainers, z = self._train(state)
            # The abstract model's test score is its latent quality; the committed order is ours.
            # Every tester observes the latent quality: co-testers report the same scores.
            lookup = np.full(state.n_participants, np.nan)
            lookup[trainers] = z
            scores = lookup[state.commits.owner]

            def digest(tester: int) -> bytes:
                return hashlib.sha256(f"latent-tests/{self.trainer.seed}/{state.round}/{tester}".encode()).digest()

            reports = tuple(TesterReport(t, digest(t), scores) for t in state.roles.testers[1:].tolist())
            return TestBlock(state.round, miner, state.params.test_cases, digest(miner), scores, reports)
        return SettleBlock(state.round, miner)
