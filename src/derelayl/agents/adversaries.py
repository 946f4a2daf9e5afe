"""Dishonest participants, for measuring what the rules let them get away with.

Each kind is one participant's behaviour, written once and used by the relay (an
``Adversary`` brain in place of a ``RelayBrain``) and by the federated baselines
(``run_fedavg(kinds=...)``), so an attack means the same thing in every method:

- ``free_rider``: trains nothing; commits its parent's weights unchanged (re-serialized, so
  the digest differs: a digest check alone cannot catch it). In FedAvg: uploads the global
  model it received.
- ``copier``: trains nothing; commits a copy of the best live model other than its parent,
  which it got from that model's owner (collusion) or as a past commit miner. In FedAvg: as a
  free-rider (there is one global model to copy).
- ``label_flip``: trains on its own data with every label shifted by one class (a poisoner).
- ``backdoor``: trains on its own data with half its samples stamped with a trigger (the last
  four features set to ``TRIGGER_VALUE``) and labelled ``TARGET``; measured by the share of
  stamped test inputs of other classes that the model puts in ``TARGET``.
- ``lying_tester``: trains honestly, but when it tests, it reports the best possible score for
  every model trained by a member of its own group and 0 for all others (a colluding
  tester+trainer group). In FedAvg there are no testers: it behaves honestly.
- ``strategic_liar``: a ``lying_tester`` that lies only in rounds where its group holds a
  majority of the tester seats (the draw is public), so that it is never off the medians
  and never unpaid; otherwise it scores honestly.
- ``inflating_liar``: a ``lying_tester`` that only raises its group's children to the best
  score and reports every other score as measured. No honest child or parent is scored wrong,
  so no trainer can show the lie with the models it holds (``Agent.challenge``); only an
  honest co-tester's disagreement or an appeal can. In FedAvg: behaves honestly.
- ``omitting_miner``: trains honestly, but as the commit miner it leaves out every commitment
  of a trainer outside its group that the rules let it leave out (all but those posted to the
  ledger): those trainers' deposits burn and its group's children face fewer rivals
  (``OmittingMiner``, an ``Agent``: the behaviour is a miner's, not a model's). In FedAvg there
  are no miners: it behaves honestly.
- ``case_picker``: trains and scores honestly, but as a tester publishes test cases it picks
  from its own data *after* seeing the committed models: samples on which a model of its
  group is right and every other child wrong, repeated to fill its share of the cases. Its
  scores are true for its cases, so honest co-testers scoring the pool agree with it, no
  appeal opens and ``derelayl audit`` finds nothing: the attack is on the cases, not the
  scores. Under case commitments (``Params.case_commitments``) picked cases would not match
  the digest it committed to before any child existed, so it publishes its committed cases
  and does the next best thing it can: it hands them to its group, whose trainers train on
  them as well ("teaching to the test"; in one process through ``share_group_cases``, a side
  channel the network nodes do not have). In FedAvg there are no testers: it behaves honestly.
- ``vexatious_challenger``: trains and scores honestly, but challenges every round it trains
  in and can pay the bond for, whatever the scores (``Params.challenge_bond``). It gains when
  the appeal upholds a challenge of an honest tester: the tester's stake is shared with it.
  Under encrypted scoring that happens if appellants report their own counts and noise tips a
  near-tied case (``agents.relay.confirmed`` is the defence). Without challenges, or in
  FedAvg: behaves honestly.

Who is dishonest is drawn from the seed (``assign``); participant 0 (the genesis owner)
stays honest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from derelayl.agents.agent import Agent, held_positions
from derelayl.agents.kinds import HONEST, KINDS, LIARS, UNTRAINED
from derelayl.agents.relay import RelayBrain
from derelayl.errors import ConfigError
from derelayl.learning.seeds import derive_seed
from derelayl.learning.serialization import Weights
from derelayl.learning.torch_models import TorchEvaluator
from derelayl.protocol.messages import CommitMessage, Proposal, Signed
from derelayl.protocol.state import State

__all__ = [
    "BRAIN_KINDS",
    "HONEST",
    "KINDS",
    "TARGET",
    "TRIGGER_VALUE",
    "Adversary",
    "OmittingMiner",
    "assign",
    "backdoor_success",
    "behaving",
    "poison",
    "share_group_cases",
    "stamp",
]

TARGET = 0
"""The class a backdoor trigger asks for."""
TRIGGER_VALUE = 4.0
"""The trigger: the last four features set to this (4 standard deviations after standardizing)."""
BACKDOOR_SHARE = 0.5
"""Share of a backdoor poisoner's samples that carry the trigger."""
BRAIN_KINDS = tuple(k for k in KINDS if k != "omitting_miner")
"""Kinds that are a model side's behaviour (``Adversary``); an omitting miner is an ``Agent``'s."""

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]


def assign(n: int, shares: dict[str, float], seed: int) -> list[str]:
    """The kind of each of ``n`` participants: ``round(share * n)`` of each kind, drawn from
    the seed among participants 1..n-1; the rest honest."""
    unknown = sorted(set(shares) - set(KINDS))
    if unknown:
        raise ConfigError(f"unknown adversary kind(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    counts = {k: round(v * n) for k, v in shares.items()}
    if sum(counts.values()) > n - 1:
        raise ConfigError(f"adversary shares {shares} take more than the {n - 1} participants besides genesis's owner")
    order = 1 + np.random.default_rng(derive_seed(seed, "adversaries")).permutation(n - 1)
    kinds = [HONEST] * n
    at = 0
    for kind in KINDS:
        for p in order[at : at + counts.get(kind, 0)].tolist():
            kinds[p] = kind
        at += counts.get(kind, 0)
    return kinds


def stamp(x: F32) -> F32:
    """``x`` with the backdoor trigger."""
    out = np.array(x, dtype=np.float32, copy=True)
    out[:, -4:] = TRIGGER_VALUE
    return out


def poison(kind: str, x: F32, y: I64, n_classes: int, seed: int) -> tuple[F32, I64]:
    """The training data a poisoner of ``kind`` uses instead of its own (others: unchanged)."""
    if kind == "label_flip":
        return x, ((y + 1) % n_classes).astype(np.int64)
    if kind == "backdoor":
        pick = np.random.default_rng(seed).random(len(y)) < BACKDOOR_SHARE
        x, y = np.array(x, copy=True), np.array(y, copy=True)
        x[pick], y[pick] = stamp(x[pick]), TARGET
        return x, y
    return x, y


def backdoor_success(evaluator: TorchEvaluator, weights: Weights, x: F32, y: I64) -> float:
    """Share of test inputs not of class ``TARGET`` that, stamped, the model puts in ``TARGET``."""
    other = y != TARGET
    if not other.any():
        return 0.0
    stamped = stamp(x[other])
    return evaluator.correct(weights, stamped, np.full(int(other.sum()), TARGET, dtype=np.int64)) / int(other.sum())


@dataclass
class Adversary(RelayBrain):
    """A ``RelayBrain`` that behaves as ``kind`` (see the module's docstring)."""

    kind: str = HONEST
    group: frozenset[int] = field(default_factory=frozenset)
    """Participants of the same kind (a lying tester favours their models)."""
    n_classes: int = 2
    group_cases: Callable[[State, int], tuple[F32, I64]] | None = None
    """A case picker's side channel to its group's testers: their committed cases (``share_group_cases``)."""

    def training_data(self, state: State, me: int) -> tuple[F32, I64]:
        x, y = super().training_data(state, me)
        if self.kind == "case_picker" and state.params.case_commitments and self.group_cases is not None:
            return self._with_leaked_cases(state, me, x, y)
        return poison(self.kind, x, y, self.n_classes, derive_seed(self.seed, "poison", me))

    def _with_leaked_cases(self, state: State, me: int, x: F32, y: I64) -> tuple[F32, I64]:
        """Own data plus the cases this round's testers of the group committed to, repeated to
        as many samples as its own (so that training fits them)."""
        assert state.roles is not None and self.group_cases is not None
        leaked = [self.group_cases(state, t) for t in state.roles.testers.tolist() if t in self.group and t != me]
        if not leaked:
            return x, y
        lx, ly = np.concatenate([c[0] for c in leaked]), np.concatenate([c[1] for c in leaked])
        pick = np.resize(np.arange(len(ly)), max(len(y), len(ly)))
        return np.concatenate([x, lx[pick]]), np.concatenate([y, ly[pick]])

    def train(self, state: State, me: int) -> bytes | None:
        if self.kind not in UNTRAINED:
            return super().train(state, me)
        pair = int(np.flatnonzero(state.pairs.trainer == me)[0])
        live_pos = int(state.pairs.live_pos[pair])
        parent = self.models.digest_of(int(state.live.model_id[live_pos]))
        source = parent
        if self.kind == "copier":
            others = [int(m) for i, m in enumerate(state.live.model_id.tolist()) if i != live_pos]
            if others:  # live models are in rank order: the best one that is not its parent
                source = self.models.digest_of(others[0])
        return self.commit_child(state, me, self.models.load(source), parent, 1 + (source != parent))

    def own_cases(self, state: State, me: int) -> tuple[F32, I64]:
        """The cases this participant publishes as a tester: a case picker's are picked
        (``_pick``) once the models are committed, unless it committed to its cases before;
        every other kind's are honest."""
        x, y = super().own_cases(state, me)
        picking = self.kind == "case_picker" and state.commitments and not state.params.case_commitments
        return self._pick(state, me, len(y)) if picking else (x, y)

    def _pick(self, state: State, me: int, n: int) -> tuple[F32, I64]:
        """``n`` cases from this participant's data that favour its group's children most: the
        samples on which the most favourable difference (some child of the group right, minus
        some other child right) is reached, in data order, repeated to fill ``n``."""
        xs, ys = self.shard.read(me)
        owners = state.commits.owner.tolist()
        right = np.stack([self.evaluator.predict(self.models.load(d), xs) == ys for d in state.commitments])
        ours = np.array([o in self.group for o in owners], dtype=bool)
        gain = right[ours].any(axis=0).astype(np.int64) - right[~ours].any(axis=0).astype(np.int64)
        best = np.flatnonzero(gain == gain.max())
        pick = np.resize(best, n)
        return xs[pick], ys[pick]

    def score(self, state: State, me: int) -> tuple[bytes, I64]:
        digest, scores = super().score(state, me)
        assert state.roles is not None
        return digest, self._lie(state, scores, state.roles.testers.tolist())

    def appeal(self, state: State, me: int) -> tuple[bytes, I64]:
        """As an appellant, the same behaviour as a tester (the seats are the appellants')."""
        digest, scores = super().appeal(state, me)
        assert state.dispute is not None
        return digest, self._lie(state, scores, state.dispute.appellants.tolist())

    def checkable(self, state: State, me: int) -> dict[int, tuple[int, ...]]:
        """A liar never challenges (its group's lies are what it would show); a vexatious
        challenger finds no score of its child honest, so it always challenges."""
        if self.kind == "vexatious_challenger":
            return {held_positions(state, me)[0]: ()}
        return {} if self.kind in LIARS else super().checkable(state, me)

    def _lie(self, state: State, scores: I64, seats: list[int]) -> I64:
        """A lying tester's report for honest ``scores``: its group's models the best score, all
        others 0 (a strategic liar only with a majority of ``seats``, else honest)."""
        if self.kind not in LIARS:
            return scores
        if self.kind == "strategic_liar" and 2 * sum(t in self.group for t in seats) <= len(seats):
            return scores  # no majority of the seats: lying would show
        owners = state.commits.owner.tolist()
        ours = [o in self.group for o in owners] + [False] * (scores.size - len(owners))
        if self.kind == "inflating_liar":  # the most a model can score, every other score as measured
            assert state.roles is not None
            pooled = len(state.roles.testers) if state.params.pooled_cases else 1
            return np.where(ours, state.params.test_cases * pooled, scores).astype(np.int64)
        return np.where(ours, state.params.test_cases, 0).astype(np.int64)


def share_group_cases(brains: list[RelayBrain]) -> None:
    """In one process, give every case picker its group testers' committed cases (the side
    channel a colluding group would use; read from each tester's own brain)."""
    for brain in brains:
        if isinstance(brain, Adversary) and brain.kind == "case_picker":
            brain.group_cases = lambda state, t: brains[t].own_cases(state, t)


def behaving(brain: RelayBrain, kind: str, group: frozenset[int], n_classes: int) -> RelayBrain:
    """``brain``, or an ``Adversary`` of ``kind`` with the same shard, trainer and store,
    colluding with ``group`` (the participants of its kind): how the experiments and a node
    alike make a participant dishonest. (An ``omitting_miner``'s brain is honest; its agent is
    an ``OmittingMiner``.)"""
    if kind == HONEST:
        return brain
    if kind not in KINDS:
        raise ConfigError(f"unknown adversary kind {kind!r}; choose from {', '.join(KINDS)}")
    fields = {f.name: getattr(brain, f.name) for f in dataclasses.fields(RelayBrain)}
    return Adversary(**fields, kind=kind, group=group, n_classes=n_classes)


@dataclass
class OmittingMiner(Agent):
    """An ``Agent`` that, as the commit miner, drops the commitments of trainers outside
    ``group``; the ones posted to the ledger it must carry (the rules refuse its block
    otherwise), and ``Agent._commit`` adds those from the state."""

    group: frozenset[int] = field(default_factory=frozenset)

    def _commit(self, state: State, me: int, inbox: list[Signed]) -> Proposal:
        kept = [s for s in inbox if not isinstance(s.message, CommitMessage) or s.message.participant in self.group]
        return super()._commit(state, me, kept)
