"""The DeRelayL arm of an experiment: one agent per participant, driven by the protocol core.

Each participant is an ``Agent`` with a ``RelayBrain`` (its own shard, trainer and
evaluator); a ``RoundDriver`` moves their messages to each phase's drawn miner, and the
blocks are applied by a ``StateClient`` (the rules in memory, no signatures: the experiment
measures learning and money, and signing adds nothing to either). Matching, selection and
rewards are the rules' own. The round's accuracy is that of the model the protocol ranked
first (``SettleReceipt.selected_model[0]``, i.e. ``state.live.model_id[0]``) on the global
test set, which no participant ever sees.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from derelayl.agents.adversaries import (
    HONEST,
    KINDS,
    OmittingMiner,
    assign,
    backdoor_success,
    behaving,
    share_group_cases,
)
from derelayl.agents.agent import Agent
from derelayl.agents.books import ModelBook, Traffic
from derelayl.agents.relay import RelayBrain, relay_brains, share_cases
from derelayl.baselines.curve import Budget, Curve, Point
from derelayl.errors import ConfigError
from derelayl.fhe.scoring import encrypted_scoring
from derelayl.learning.setup import LearningSetup
from derelayl.learning.store import MemoryModelStore
from derelayl.learning.torch_models import TrainConfig, average
from derelayl.ledger.client import StateClient
from derelayl.ledger.codec import wire_size
from derelayl.protocol import CommitReceipt, DepositReceipt, Params, SettleReceipt
from derelayl.protocol.blocks import Block
from derelayl.protocol.genesis import initialize_state
from derelayl.protocol.types import UNIT
from derelayl.runtime.driver import RoundDriver
from derelayl.stats import gini

__all__ = ["run_derelayl"]


def run_derelayl(
    setup: LearningSetup,
    params: Params,
    seed: int,
    *,
    name: str = "derelayl",
    train_config: TrainConfig | None = None,
    merge_top_k: int = 1,
    rounds: int | None = None,
    byte_budget: int | None = None,
    max_rounds: int = 1000,
    adversaries: dict[str, float] | None = None,
    measure_backdoor: bool = False,
    stop: Budget | None = None,
    fhe: bool = False,
    post_commitments: bool = False,
    soup: bool = False,
    rechecks: int = 0,
) -> Curve:
    """Rounds until ``rounds`` have settled or ``byte_budget`` bytes have moved (or as
    ``stop`` says). Bytes count every model and test-case transfer and every block sent to
    every other node (``wire_size``: the block as a node sends it). With
    ``adversaries`` (kind -> share of participants, ``derelayl.agents.adversaries``), those
    participants behave dishonestly; the curve's info then reports each group's rewards. The
    backdoor's success on the first-ranked model is measured each round when a backdoor
    poisoner takes part or ``measure_backdoor``. With ``fhe``, testers score encrypted models
    (``derelayl.fhe``; the model must be a one-hidden-layer quad MLP) and the bytes include
    the ciphertexts, queries, replies and public keys. With ``post_commitments`` every trainer
    also posts its commitment to the ledger, so no commit miner can leave it out. With
    ``soup``, each round is read as the average of its live models (a "model soup" any
    participant can build after settlement), the bytes count one reader fetching the live
    models it does not hold, and ``first_ranked`` records the protocol's first-ranked model.
    With ``rechecks`` (encrypted scoring and challenges only), every trainer also re-scores
    that many of the round's other children under encryption before it decides whether to
    challenge (``RelayBrain.rechecks``)."""
    if rechecks and not (fhe and params.challenge_bond):
        raise ConfigError("rechecks need encrypted scoring (fhe) and challenges (challenge_bond)")
    n = len(setup.split.participants)
    keys = [hashlib.sha256(f"derelayl-experiment/{seed}/{i}".encode()).digest() for i in range(n)]
    genesis_seed = hashlib.sha256(f"derelayl-experiment/{seed}".encode()).digest()
    client = StateClient(initialize_state(params, genesis_seed, keys))
    models = ModelBook.of_genesis(MemoryModelStore(), setup.init, {"spec": setup.spec.to_dict()})
    brains = relay_brains(setup, models, seed, train_config=train_config, merge_top_k=merge_top_k)
    scoring = encrypted_scoring(setup.spec, models, None) if fhe else None
    for brain in brains:
        brain.fhe, brain.rechecks = scoring, rechecks
    kinds = assign(n, adversaries or {}, seed)
    brains = [
        behaving(b, kind, frozenset(p for p, k in enumerate(kinds) if k == kind), setup.dataset.n_classes)
        for b, kind in zip(brains, kinds, strict=True)
    ]
    share_cases(brains)
    share_group_cases(brains)
    backdoor = measure_backdoor or "backdoor" in kinds
    agents = [_agent(client.signer(k), b, kinds, post_commitments) for k, b in zip(keys, brains, strict=True)]
    driver = RoundDriver(client, agents)
    state = client.state
    evaluator = setup.evaluator()
    accuracy = {0: setup.test_accuracy(evaluator, setup.init)}
    # Per participant: newest version held, and the best global accuracy among held models of
    # that version (a participant keeps every model it trains or is given; we credit its newest).
    held = _Holdings(n)
    held.give(0, 0, accuracy[0])
    trained, selected = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    lineage_paid = np.zeros(n, dtype=np.int64)  # units each participant earned from lineages
    curve = Curve(
        name,
        info={
            "model_bytes": models.model_bytes,
            "merge_top_k": merge_top_k,
            "params": params.to_dict(),
            "shard_sizes": [len(b.shard) for b in brains],
        },
    )
    start = {"supply_coins": 0.0, "gini": 0.0, "within_2pp": 1 / n}
    if backdoor:
        start["backdoor_success"] = backdoor_success(evaluator, setup.init, setup.x_test, setup.y_test)
    curve.add(Point(0, accuracy[0], 0, 0, 0, start))
    budget = stop or Budget(rounds=rounds, bytes=byte_budget, max_rounds=max_rounds)
    curve.info["byte_budget"] = budget.bytes
    blocks = _Broadcast(client, n)
    lineage: dict[int, int] = {0: 0}
    soup_bytes = 0  # with ``soup``: the live models a reader fetches to average them
    while budget.more(curve.final):
        deposit = driver.step()
        assert isinstance(deposit, DepositReceipt)
        if params.trainer_holds_parent:
            live_version = dict(zip(state.live.model_id.tolist(), state.live.version.tolist(), strict=True))
            for t, parent in zip(deposit.pairs.trainer.tolist(), deposit.parent_model.tolist(), strict=True):
                held.give(t, live_version[parent], accuracy[parent])
        commit_miner = state.roles.block_miners[1] if state.roles else -1
        parent_of = dict(zip(deposit.pairs.trainer.tolist(), deposit.parent_model.tolist(), strict=True))
        before = [b.traffic.samples for b in brains]
        commit = driver.step()
        assert isinstance(commit, CommitReceipt)
        models.follow(state)
        for model, owner in zip(commit.model_id.tolist(), state.commits.owner.tolist(), strict=True):
            # training samples spent on this model's whole lineage, back to genesis
            lineage[model] = lineage.get(parent_of.get(owner, 0), 0) + brains[owner].traffic.samples - before[owner]
            accuracy[model] = setup.test_accuracy(evaluator, models.weights(model))
            held.give(owner, state.round + 1, accuracy[model])
            trained[owner] += 1
            if params.encryption_miner_holds_models:
                held.give(commit_miner, state.round + 1, accuracy[model])
        driver.step()
        settle = driver.step()
        assert isinstance(settle, SettleReceipt)
        np.add.at(selected, settle.selected_owner, 1)
        lineage_paid += settle.lineage_payout[:n]
        if scoring is not None:
            scoring.prune([models.digest_of(m) for m in state.live.model_id.tolist()])
        top = int(state.live.model_id[0])  # the protocol's first-ranked model (live is in rank order)
        t = _traffic(brains)
        blocks.follow()
        extra = {}
        measured = accuracy[top]
        if soup:
            live = state.live.model_id.tolist()
            soup_bytes += (len(live) - 1) * models.model_bytes
            measured = setup.test_accuracy(evaluator, average([models.weights(m) for m in live]))
            extra["first_ranked"] = accuracy[top]
        if backdoor:
            extra["backdoor_success"] = backdoor_success(evaluator, models.weights(top), setup.x_test, setup.y_test)
        curve.add(
            Point(
                state.round,
                measured,
                t.total_bytes + blocks.bytes + soup_bytes,
                t.local_epochs,
                t.samples,
                {
                    "top_model": top,
                    "lineage_samples": lineage.get(top, 0),
                    "models": len(commit.model_id),
                    "supply_coins": state.supply / UNIT,
                    "gini": gini(state.balances),
                    "within_2pp": float((held.accuracy >= accuracy[top] - 0.02).mean()),
                    "best_committed": max(accuracy[m] for m in commit.model_id.tolist())
                    if commit.model_id.size
                    else None,
                    **extra,
                },
            )
        )
    t = _traffic(brains)
    curve.info.update(
        {
            "bytes_breakdown": {
                "owner_to_trainer": t.owner_to_trainer,
                "trainer_to_tester": t.trainer_to_tester,
                "commit_miner_copies": t.commit_miner_copies,
                "test_cases": t.test_cases,
                "fhe_exchange": t.fhe_exchange,
                **({"rechecks": t.rechecks} if rechecks else {}),
                "blocks": blocks.bytes,
                **({"soup_readers": soup_bytes} if soup else {}),
            },
            "balances_coins": (state.balances / UNIT).tolist(),
            "models_trained": trained.tolist(),
            "models_selected": selected.tolist(),
            "shard_reads_by_others": sum(sum(r != b.shard.owner for r in b.shard.reads) for b in brains),
            "challenges": driver.challenges,
            "ties_confirmed": sum(b.ties_confirmed for b in brains),
        }
    )
    if scoring is not None:
        curve.info["fhe_seconds"] = dict(scoring.seconds)
    if adversaries:
        curve.info["groups"] = group_report(kinds, state.balances, trained, selected, lineage_paid)
    return curve


def _agent(signer: Any, brain: RelayBrain, kinds: list[str], post_commitments: bool) -> Agent:
    """The participant: an ``Agent``, or an ``OmittingMiner`` if its brain's kind says so."""
    kind = getattr(brain, "kind", HONEST)
    if kind == "omitting_miner":
        group = frozenset(p for p, k in enumerate(kinds) if k == kind)
        return OmittingMiner(signer, brain, post_commitments=post_commitments, group=group)
    return Agent(signer, brain, post_commitments=post_commitments)


def group_report(
    kinds: list[str], balances: np.ndarray, trained: np.ndarray, selected: np.ndarray, lineage: np.ndarray
) -> dict[str, Any]:
    """Per group (honest and each adversary kind): members, share of all coins held at the end
    (every coin is a reward: balances start at 0), share of the lineage rewards alone (what
    models earn, as against miners' and testers' fees), models committed and selected, and the
    share of its committed models that the rules turned away ("caught")."""
    total, total_lineage = int(balances.sum()), int(lineage.sum())
    out: dict[str, Any] = {}
    for kind in [HONEST, *(k for k in KINDS if k in kinds)]:
        members = [p for p, k in enumerate(kinds) if k == kind]
        committed, chosen = int(trained[members].sum()), int(selected[members].sum())
        out[kind] = {
            "participants": len(members),
            "reward_share": int(balances[members].sum()) / total if total else 0.0,
            "lineage_share": int(lineage[members].sum()) / total_lineage if total_lineage else 0.0,
            "models_committed": committed,
            "models_selected": chosen,
            "turned_away": 1 - chosen / committed if committed else None,
        }
    return out


def _traffic(brains: list[RelayBrain]) -> Traffic:
    return Traffic.total(b.traffic for b in brains)


class _Broadcast:
    """Bytes of every block applied so far, each sent to the ``n - 1`` other nodes."""

    def __init__(self, client: StateClient, n: int) -> None:
        self.client, self.receivers, self.seen, self.bytes = client, n - 1, 0, 0

    def follow(self) -> None:
        for event in self.client.events(self.seen):
            if isinstance(event.operation, Block):
                self.bytes += self.receivers * wire_size(event.operation, event.height)
            self.seen = event.height + 1


class _Holdings:
    def __init__(self, n: int) -> None:
        self.version = np.full(n, -1, dtype=np.int64)
        self.accuracy = np.full(n, -1.0)

    def give(self, p: int, version: int, accuracy: float) -> None:
        if version > self.version[p]:
            self.version[p], self.accuracy[p] = version, accuracy
        elif version == self.version[p]:
            self.accuracy[p] = max(self.accuracy[p], accuracy)
