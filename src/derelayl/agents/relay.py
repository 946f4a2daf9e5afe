"""One participant's model side with real models: ``RelayBrain`` (a ``Brain`` for ``Agent``).

- As a matched trainer it fetches its parent (the model owner's model) by digest, trains it
  on its *own* shard, serializes the child (safetensors) into the content-addressed store and
  returns the SHA-256 of those bytes for the agent to commit.
- As a tester it draws ``params.test_cases`` test cases from its own shard (with replacement
  if it has fewer), fetches every committed model by its digest (re-hashed on read) and
  scores each with the number of cases it predicts correctly (an int64, as the rules want).

What a brain may use: public chain data (the state; ``ModelBook``'s model id -> digest index,
which is read off the commit blocks), the models it is handed through the store, and its own
shard (``Shard.read`` refuses anyone else). Every draw is a pure function of (seed, purpose,
round, participant) and the stored models, so a restarted process trains and tests exactly
as the interrupted one would have.

Bytes moved and work done are counted where they happen, per brain (``Traffic``): a trainer
receives its parent (and, with ``merge_top_k``, the best other live models) and uploads a copy
of its child to the commit miner when the rules give that miner the new models; a tester
receives every committed model and publishes its test cases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from derelayl.agents.agent import held_positions
from derelayl.agents.books import ModelBook, Traffic
from derelayl.errors import ConfigError, ModelError
from derelayl.fhe.ckks import QuadMLP
from derelayl.fhe.scoring import FheScoring, Transcript, honest_counts
from derelayl.learning.data import Shard, case_bytes, case_digest
from derelayl.learning.seeds import derive_seed
from derelayl.learning.serialization import Weights, weights_from_bytes, weights_to_bytes
from derelayl.learning.setup import LearningSetup
from derelayl.learning.torch_models import TorchEvaluator, TorchTrainer, TrainConfig, average
from derelayl.protocol.copies import PREDICTIONS_NOT_ENCRYPTED, apply_copy_rule, apply_improvement_z
from derelayl.protocol.scores import lower_median
from derelayl.protocol.state import State

__all__ = [
    "MAX_RECHECKS",
    "MERGE_ALL",
    "RelayBrain",
    "check_rechecks",
    "clear_scores",
    "confirmed",
    "relay_brains",
    "scored_digests",
    "share_cases",
]

I64 = NDArray[np.int64]
MAX_RECHECKS = 16
"""The most other children a trainer re-scores (``RelayBrain.rechecks``)."""


def check_rechecks(rechecks: int, fhe: bool, challenge_bond: int | None) -> None:
    """Refuse a ``--rechecks`` out of range, or given without encrypted scoring and challenges."""
    if not 0 <= rechecks <= MAX_RECHECKS:
        raise ConfigError(f"--rechecks must be in 0..{MAX_RECHECKS}, got {rechecks}")
    if rechecks and not (fhe and challenge_bond):
        raise ConfigError("--rechecks needs --fhe on and --challenge-bond")


MERGE_ALL = 1 << 20
"""A ``merge_top_k`` that merges every live model."""


@dataclass
class RelayBrain:
    """Implements ``derelayl.agents.agent.Brain`` with PyTorch models and a private shard."""

    shard: Shard
    trainer: TorchTrainer
    evaluator: TorchEvaluator
    models: ModelBook
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)
    """Recorded with every model this brain trains (e.g. the model spec), nanoGPT-style."""
    merge_top_k: int = 1
    """Train from the average of the parent and the best ``merge_top_k - 1`` other live models."""
    traffic: Traffic = field(default_factory=Traffic)
    on_cases: Callable[[NDArray[np.float32], NDArray[np.int64]], None] | None = None
    """Called with the test cases this tester drew (a node publishes them)."""
    peer_cases: Callable[[State, int], tuple[NDArray[np.float32], NDArray[np.int64]]] | None = None
    """Where another tester's published cases come from (pooled cases): in one process, that
    tester's ``own_cases``."""
    fhe: FheScoring | None = None
    """Encrypted scoring: commit encrypted models, score others' without seeing their weights."""
    rechecks: int = 0
    """With encrypted scoring and challenges: how many of the round's other children a trainer
    re-scores under encryption in ``checkable``, drawn from its own seed among those the
    published scores rank at or above its own child (a lie that raises someone else's child
    pushes exactly these trainers' children down)."""
    ties_confirmed: int = 0
    """Appeal reports (as an appellant, under encryption) in which this brain's own count of
    some model differed from the tested score that its scoring allowed (``confirmed``):
    reports that would have differed from the test block's had it sent its own counts."""

    def train(self, state: State, me: int) -> bytes | None:
        pair = int(np.flatnonzero(state.pairs.trainer == me)[0])
        start, parent, received = self._start_weights(state, int(state.pairs.live_pos[pair]))
        x, y = self.training_data(state, me)
        child = self.trainer.train(start, x, y, seed=derive_seed(self.seed, "train", state.round, me))
        epochs = self.trainer.config.local_epochs
        self.traffic.local_epochs += epochs
        self.traffic.samples += epochs * len(y)
        return self.commit_child(state, me, child, parent, received)

    def training_data(self, state: State, me: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """What this participant trains on in the round ``state`` is in: its own shard."""
        return self.shard.read(me)

    def commit_child(self, state: State, me: int, child: Weights, parent: bytes, received: int) -> bytes:
        """Store the child (its metadata names round, trainer and parent) and count the bytes
        moved for it; returns the digest to commit."""
        meta = {**self.meta, "round": state.round, "trainer": me, "parent": parent.hex()}
        digest = self.models.store.put(weights_to_bytes(child, meta))
        size = self.models.model_bytes
        self.traffic.owner_to_trainer += received * size
        if self.fhe is not None:  # testers get the encrypted model; the commit miner needs no copy
            commitment = self.fhe.commit(me, child, digest)[0]
            self.models.committed_as[digest] = commitment
            return commitment
        if state.params.encryption_miner_holds_models:
            self.traffic.commit_miner_copies += size
        return digest

    def warm_up(self, me: int = 0) -> None:
        """Run each code path once on a few samples (train, serialize, load, score), results
        thrown away: a process's first training pays torch's one-off set-up, which otherwise
        lands in a round (measured: 16 fresh nodes on 2 cores made rounds 1-5 slow)."""
        x, y = self.shard.read(me)
        start = self.models.load(self.models.index[0])
        child = self.trainer.train(start, x[:8], y[:8], seed=0)
        weights_from_bytes(weights_to_bytes(child, self.meta))
        self.evaluator.correct(child, x[:8], y[:8])

    def _start_weights(self, state: State, live_pos: int) -> tuple[Weights, bytes, int]:
        """(weights to train from, parent digest, models received)."""
        parent = self.models.digest_of(int(state.live.model_id[live_pos]))
        if self.merge_top_k <= 1:
            return self.models.load(parent), parent, 1
        others = [int(m) for i, m in enumerate(state.live.model_id.tolist()) if i != live_pos]
        models = [self.models.load(parent), *(self.models.weights(m) for m in others[: self.merge_top_k - 1])]
        return average(models), parent, len(models)

    def own_cases(self, state: State, me: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The test cases this participant publishes as a tester this round (from its own data)."""
        return self.cases_for(state.round, me, state.params.test_cases)

    def cases_for(self, round_: int, me: int, n: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        return self.shard.draw_test_cases(me, n, derive_seed(self.seed, "tests", round_, me))

    def cases_digest(self, state: State, me: int) -> bytes:
        return case_digest(*self.own_cases(state, me))

    def score(self, state: State, me: int) -> tuple[bytes, I64]:
        x, y = self.own_cases(state, me)
        if self.on_cases is not None:
            self.on_cases(x, y)
        digest = case_digest(x, y)
        if state.params.pooled_cases:
            x, y = self._pool(state, me, (x, y))
        return digest, self._scores(state, me, x, y)

    def appeal(self, state: State, me: int) -> tuple[bytes, I64]:
        """Re-score the round's pooled cases (every tester's published cases, in tester order),
        as a tester scores: encrypted models under encryption. There, two honest scorings may
        differ on near-tied cases, so the appellant confirms the test block's score wherever its
        own scoring allows it (``confirmed``): otherwise a challenge of an honest tester would
        be upheld whenever CKKS noise tipped one case, and challenging every round could pay."""
        assert state.roles is not None
        x, y = self._pool(state, -1)
        digest = case_digest(x, y)
        if self.fhe is None or state.dispute is None or state.params.compares_predictions:
            return digest, self._scores(state, me, x, y)  # (compares_predictions: refused there)
        self.traffic.test_cases += case_bytes(x, y)
        own, allowed = [], []
        for i, d in enumerate(scored_digests(state, self.models)):
            if self.fhe.manifest(d) is None:
                own.append(self._correct(state, me, i, d, x, y))
                allowed.append((own[-1],))
            else:
                transcript = self._transcript(state, me, i, d, x, y)
                own.append(transcript.score)
                allowed.append(self.fhe.honest(transcript, y))
        tested = lower_median(state.dispute.rows)
        report = confirmed(tested, allowed)
        self.ties_confirmed += report.tolist() != own and report.tolist() == tested.tolist()
        return digest, report

    def _scores(self, state: State, me: int, x: NDArray[np.float32], y: I64) -> I64:
        """An honest report on cases ``(x, y)``: in the clear (``clear_scores``), or each
        encrypted commitment scored under encryption; the bytes this moves are counted."""
        digests = scored_digests(state, self.models)
        self.traffic.test_cases += case_bytes(x, y)
        if self.fhe is None:
            self.traffic.trainer_to_tester += len(digests) * self.models.model_bytes
            return clear_scores(state, self.models, self.evaluator, x, y)
        if state.params.compares_predictions:
            raise ModelError(PREDICTIONS_NOT_ENCRYPTED)
        return np.array([self._correct(state, me, i, d, x, y) for i, d in enumerate(digests)], dtype=np.int64)

    def checkable(self, state: State, me: int) -> dict[int, tuple[int, ...]]:
        """A trainer's check of the published scores: its child and (improvement rule) its
        parent, the models it holds, scored on the round's published cases, and with
        ``rechecks`` some other children, scored under encryption. A child's honest score is
        its count of correct cases, or 0 when the copy rule or the sign test (which compare it
        with live models it may not hold) fail it; under encryption, any count that CKKS noise
        on near-tied cases allows (``honest_counts``)."""
        x, y = self._pool(state, -1)
        self.traffic.test_cases += case_bytes(x, y)
        child, parent = held_positions(state, me)
        out = {child: self._held(state.commitments[child], x, y, state.params.compares_predictions)}
        if parent is not None:
            live = int(state.live.model_id[parent - len(state.commits)])
            out[parent] = self._held(self.models.digest_of(live), x, y, False)
        for j in self._rechecked(state, me, child):
            t = self.traffic
            before = (t.trainer_to_tester, t.fhe_exchange)
            transcript = self._transcript(state, me, j, state.commitments[j], x, y)
            t.rechecks += t.trainer_to_tester + t.fhe_exchange - sum(before)  # counted as re-checks, not testing
            t.trainer_to_tester, t.fhe_exchange = before
            assert self.fhe is not None
            out[j] = self.fhe.honest(transcript, y)
        return out

    def _held(self, digest: bytes, x: NDArray[np.float32], y: I64, zero_ok: bool) -> tuple[int, ...]:
        """The scores an honest tester may give a model this trainer holds (``checkable``)."""
        weights = self.models.load(digest)
        if self.fhe is not None and self.fhe.manifest(digest) is not None:
            counts = honest_counts(QuadMLP.from_weights(weights).logits(x), y)
        else:
            counts = (self.evaluator.correct(weights, x, y),)
        return (*counts, 0) if zero_ok else counts

    def _rechecked(self, state: State, me: int, child: int) -> list[int]:
        """The other children this trainer re-scores under encryption (``rechecks``)."""
        if not self.rechecks or self.fhe is None or state.dispute is None:
            return []
        published = lower_median(state.dispute.rows)
        above = [j for j in range(len(state.commits)) if j != child and published[j] >= published[child]]
        if not above:
            return []
        rng = np.random.default_rng(derive_seed(self.seed, "rechecks", state.round, me))
        return sorted(int(j) for j in rng.choice(above, size=min(self.rechecks, len(above)), replace=False))

    def _correct(self, state: State, me: int, i: int, digest: bytes, x: NDArray[np.float32], y: I64) -> int:
        """The score of one model: in the clear, or encrypted if it was committed that way."""
        if self.fhe is not None and self.fhe.manifest(digest) is not None:
            return self._transcript(state, me, i, digest, x, y).score
        self.traffic.trainer_to_tester += self.models.model_bytes
        return self.evaluator.correct(self.models.load(digest), x, y)

    def _transcript(self, state: State, me: int, i: int, digest: bytes, x: NDArray[np.float32], y: I64) -> Transcript:
        """Score encrypted commitment ``digest`` (position ``i`` of the report) under encryption."""
        assert self.fhe is not None
        masks = derive_seed(self.seed, "fhe-masks", state.round, me, i)
        order = derive_seed(self.seed, "fhe-order", state.round, me)  # one order per round: the cases encode once
        t = self.fhe.score(me, digest, x, y, masks, order)
        self.traffic.trainer_to_tester += t.bytes_moved["ciphertext"]
        self.traffic.fhe_exchange += t.bytes_moved["query"] + t.bytes_moved["reply"] + t.bytes_moved["key"]
        return t

    def _pool(
        self, state: State, me: int, own: tuple[NDArray[np.float32], NDArray[np.int64]] | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Every tester's published cases, in tester order (pooled cases); ``own``: this
        tester's (``me``'s) own, already drawn. With case commitments, each must be the cases
        its tester committed to."""
        if self.peer_cases is None:
            raise ModelError("pooled test cases need the other testers' cases (no peer_cases source)")
        assert state.roles is not None
        parts = []
        for t in state.roles.testers.tolist():
            x, y = own if t == me and own is not None else self.peer_cases(state, t)
            committed = state.case_digests.get(t) if state.params.case_commitments else None
            if committed is not None and case_digest(x, y) != committed:
                raise ModelError(f"tester {t} published other test cases than it committed to in the deposit block")
            parts.append((x, y))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def confirmed(tested: I64, allowed: list[tuple[int, ...]]) -> I64:
    """An appellant's report under encryption: each tested score where it is one this
    appellant's own scoring allows (``FheScoring.honest``), else the allowed score nearest to
    it. Honest appellants so agree with an honest tester exactly, and a lie beyond the
    near-tied cases is still reported as one."""
    return np.array(
        [min(max(int(t), min(ok)), max(ok)) for t, ok in zip(tested.tolist(), allowed, strict=True)], dtype=np.int64
    )


def scored_digests(state: State, models: ModelBook) -> list[bytes]:
    """What a tester scores, in the order of its report: the committed models, then (with the
    improvement rule) the live ones, the round's parents."""
    digests = list(state.commitments)
    if state.params.min_improvement is not None:
        digests += [models.digest_of(int(m)) for m in state.live.model_id.tolist()]
    return digests


def clear_scores(state: State, models: ModelBook, evaluator: TorchEvaluator, x: NDArray[np.float32], y: I64) -> I64:
    """An honest tester's report on cases ``(x, y)`` in the clear: the count of cases each model
    of ``scored_digests`` gets right, with the copy rule and the sign test applied when they
    are on (``derelayl.protocol.copies``). A tester computes it to score; anyone holding the
    models and the published cases recomputes it to check a report (``derelayl audit``)."""
    digests = scored_digests(state, models)
    if not digests:
        return np.zeros(0, dtype=np.int64)
    preds = np.stack([evaluator.predict(models.load(d), x) for d in digests])
    right = preds == y[None, :]
    scores: I64 = right.sum(axis=1).astype(np.int64)
    params = state.params
    if not params.compares_predictions:
        return scores
    n = len(state.commitments)
    position = dict(zip(state.pairs.trainer.tolist(), state.pairs.live_pos.tolist(), strict=True))
    compared = np.array([position[o] for o in state.commits.owner.tolist()], dtype=np.int64)  # the parents
    margin = params.min_improvement
    assert margin is not None  # both rules need it (Params)
    children = scores[:n]
    if params.copy_rule:
        children, compared = apply_copy_rule(children, scores[n:], preds[:n], preds[n:], compared, margin)
    if params.improvement_z:
        children = apply_improvement_z(children, right[:n], right[n:], compared, params.improvement_z)
    return np.concatenate([children, scores[n:]])


def share_cases(brains: list[RelayBrain]) -> None:
    """In one process, each brain reads another tester's published cases from that tester's
    own brain (what a network would fetch from its node)."""
    for brain in brains:
        brain.peer_cases = lambda state, t: brains[t].own_cases(state, t)


def relay_brains(
    setup: LearningSetup,
    models: ModelBook,
    seed: int,
    *,
    train_config: TrainConfig | None = None,
    merge_top_k: int = 1,
    meta: dict[str, Any] | None = None,
) -> list[RelayBrain]:
    """One brain per participant of ``setup``'s split: its own shard, trainer and evaluator."""
    return [
        RelayBrain(
            shard,
            setup.trainer(train_config),
            setup.evaluator(),
            models,
            seed,
            meta=dict(meta or {}),
            merge_top_k=merge_top_k,
        )
        for shard in setup.shards()
    ]
