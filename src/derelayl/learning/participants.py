"""Participants of a relay-learning network with real models: each phase's block.

``RelayParticipants.next_block(state)`` plays every participant, like
``derelayl.runtime.latent.LatentPopulation`` does for the abstract model:

- deposit: reference bids (``derelayl.agents.policies``);
- commit: each matched trainer loads its parent (the model owner's model), trains it on its
  own shard, serializes it (safetensors) and commits to the SHA-256 of those bytes; the
  bytes go to a content-addressed ``ModelStore``;
- test: the testing miner draws ``params.test_cases`` test cases from its own shard (with
  replacement if it has fewer), loads every committed model by its digest (re-hashed on
  read) and reports its accuracy; the block carries the SHA-256 of the test cases;
- settle: an empty settle block; the rules select and pay.

Everything is a deterministic function of (seed, round, participant) and the stored models,
so a restarted process produces the same block it would have produced before the crash.
The variant ``merge_top_k`` starts training from the average of the parent and the best
other live models (each extra model is counted as received).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from derelayl.agents.policies import reference_bids
from derelayl.errors import ModelError
from derelayl.learning.data import Shard, case_bytes, case_digest
from derelayl.learning.serialization import Weights, param_bytes, weights_from_bytes, weights_to_bytes
from derelayl.learning.store import ModelStore
from derelayl.learning.torch_models import TorchEvaluator, TorchTrainer, average
from derelayl.protocol.blocks import Block, CommitBlock, DepositBlock, SettleBlock, TestBlock, TesterReport
from derelayl.protocol.producer import compute_includable_commitments
from derelayl.protocol.state import State
from derelayl.protocol.types import Phase

__all__ = ["RelayParticipants", "Traffic", "derive_seed"]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from labelled parts, e.g. ``derive_seed(seed, "train", round, trainer)``."""
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


@dataclass
class Traffic:
    """Bytes moved and work done, cumulative (this process's view)."""

    owner_to_trainer: int = 0
    trainer_to_tester: int = 0
    commit_miner_copies: int = 0
    test_cases: int = 0
    local_epochs: int = 0
    samples: int = 0

    @property
    def total_bytes(self) -> int:
        return self.owner_to_trainer + self.trainer_to_tester + self.commit_miner_copies + self.test_cases


@dataclass
class RelayParticipants:
    trainer: TorchTrainer
    evaluator: TorchEvaluator
    shards: list[Shard]
    store: ModelStore
    genesis: Weights
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)
    """Recorded with every model (e.g. the model spec), nanoGPT-style."""
    merge_top_k: int = 1
    traffic: Traffic = field(default_factory=Traffic)
    _cache: OrderedDict[bytes, Weights] = field(default_factory=OrderedDict, repr=False)
    _index: dict[int, bytes] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        genesis = weights_to_bytes(self.genesis, {**self.meta, "round": -1, "trainer": 0, "parent": ""})
        self._index = {**self.store.index(), 0: self.store.put(genesis)}
        self.store.record({0: self._index[0]})
        self.model_bytes = param_bytes(self.genesis)

    # ---------------------------------------------------------------- models

    def digest_of(self, model_id: int) -> bytes:
        digest = self._index.get(int(model_id))
        if digest is None:
            raise ModelError(f"model id {model_id} is not in the model store's index")
        return digest

    def load(self, digest: bytes) -> Weights:
        cached = self._cache.get(digest)
        if cached is None:
            cached, _ = weights_from_bytes(self.store.get(digest), name=f"model {digest.hex()[:16]}")
            self._cache[digest] = cached
            if len(self._cache) > 64:
                self._cache.popitem(last=False)
        return cached

    def weights(self, model_id: int) -> Weights:
        return self.load(self.digest_of(model_id))

    def _record_commits(self, state: State) -> None:
        entries = {int(m): d for m, d in zip(state.commits.model_id, state.commitments, strict=True)}
        if any(self._index.get(m) != d for m, d in entries.items()):
            self._index.update(entries)
            self.store.record(entries)

    # ---------------------------------------------------------------- blocks

    def next_block(self, state: State) -> Block:
        assert state.roles is not None
        miner = state.roles.block_miners[int(state.phase)]
        if state.phase == Phase.DEPOSIT:
            trainer_bids, mo_bids = reference_bids(state)
            return DepositBlock(state.round, miner, trainer_bids, mo_bids)
        if state.phase == Phase.COMMIT:
            # the commit miner keeps what the rules accept (first submission per trainer/digest)
            trainers, digests = compute_includable_commitments(state, *self.train_round(state))
            if state.params.encryption_miner_holds_models:
                self.traffic.commit_miner_copies += len(digests) * self.model_bytes
            return CommitBlock(state.round, miner, trainers, digests)
        if state.phase == Phase.TEST:
            return self.test_round(state, miner)
        return SettleBlock(state.round, miner)

    def _start_weights(self, state: State, pair: int) -> tuple[Weights, bytes, int]:
        """(weights to train from, parent digest, models received)."""
        live_pos = int(state.pairs.live_pos[pair])
        parent = self.digest_of(int(state.live.model_id[live_pos]))
        if self.merge_top_k <= 1:
            return self.load(parent), parent, 1
        others = [int(m) for i, m in enumerate(state.live.model_id) if i != live_pos][: self.merge_top_k - 1]
        models = [self.load(parent), *(self.weights(m) for m in others)]
        return average(models), parent, len(models)

    def train_round(self, state: State) -> tuple[np.ndarray, tuple[bytes, ...]]:
        """Every matched trainer trains on its own shard and commits to its model's digest."""
        pairs = state.pairs
        digests: list[bytes] = []
        for i, trainer in enumerate(pairs.trainer.tolist()):
            start, parent, received = self._start_weights(state, i)
            x, y = self.shards[trainer].read(trainer)
            child = self.trainer.train(start, x, y, seed=derive_seed(self.seed, "train", state.round, trainer))
            meta = {**self.meta, "round": state.round, "trainer": trainer, "parent": parent.hex()}
            digests.append(self.store.put(weights_to_bytes(child, meta)))
            self.traffic.owner_to_trainer += received * self.model_bytes
            self.traffic.local_epochs += self.trainer.config.local_epochs
            self.traffic.samples += self.trainer.config.local_epochs * len(y)
        return pairs.trainer.copy(), tuple(digests)

    def test_round(self, state: State, tester: int) -> TestBlock:
        """Every tester of the round (the testing miner, then any co-testers) scores every
        committed model on cases drawn from its own data."""
        self._record_commits(state)
        assert state.roles is not None
        reports = [self._score(state, int(t)) for t in state.roles.testers.tolist()]
        first = reports[0]
        return TestBlock(
            state.round, tester, state.params.test_cases, first.test_cases_digest, first.scores, tuple(reports[1:])
        )

    def _score(self, state: State, tester: int) -> TesterReport:
        n = state.params.test_cases
        x, y = self.shards[tester].draw_test_cases(tester, n, derive_seed(self.seed, "tests", state.round, tester))
        scores = np.array([self.evaluator.evaluate(self.load(d), x, y) for d in state.commitments], dtype=np.float64)
        self.traffic.trainer_to_tester += len(state.commitments) * self.model_bytes
        self.traffic.test_cases += case_bytes(x, y)
        return TesterReport(tester, case_digest(x, y), scores)
