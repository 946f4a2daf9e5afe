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

import numpy as np

from derelayl.agents.agent import Agent
from derelayl.agents.relay import ModelBook, RelayBrain, Traffic, relay_brains
from derelayl.baselines.curve import Curve, Point
from derelayl.learning.setup import LearningSetup
from derelayl.learning.store import MemoryModelStore
from derelayl.learning.torch_models import TrainConfig
from derelayl.ledger.client import StateClient
from derelayl.protocol import CommitReceipt, DepositReceipt, Params, SettleReceipt
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
) -> Curve:
    """Rounds until ``rounds`` have settled or ``byte_budget`` bytes have moved."""
    n = len(setup.split.participants)
    keys = [hashlib.sha256(f"derelayl-experiment/{seed}/{i}".encode()).digest() for i in range(n)]
    genesis_seed = hashlib.sha256(f"derelayl-experiment/{seed}".encode()).digest()
    client = StateClient(initialize_state(params, genesis_seed, keys))
    models = ModelBook.of_genesis(MemoryModelStore(), setup.init, {"spec": setup.spec.to_dict()})
    brains = relay_brains(setup, models, seed, train_config=train_config, merge_top_k=merge_top_k)
    driver = RoundDriver(client, [Agent(client.signer(k), b) for k, b in zip(keys, brains, strict=True)])
    state = client.state
    evaluator = setup.evaluator()
    accuracy = {0: setup.test_accuracy(evaluator, setup.init)}
    # Per participant: newest version held, and the best global accuracy among held models of
    # that version (a participant keeps every model it trains or is given; we credit its newest).
    held = _Holdings(n)
    held.give(0, 0, accuracy[0])
    trained, selected = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    curve = Curve(
        name,
        info={
            "model_bytes": models.model_bytes,
            "merge_top_k": merge_top_k,
            "params": params.to_dict(),
            "shard_sizes": [len(b.shard) for b in brains],
        },
    )
    curve.add(Point(0, accuracy[0], 0, 0, 0, {"supply_coins": 0.0, "gini": 0.0, "within_2pp": 1 / n}))
    limit = rounds if rounds is not None else max_rounds
    while state.round < limit and (byte_budget is None or _traffic(brains).total_bytes < byte_budget):
        deposit = driver.step()
        assert isinstance(deposit, DepositReceipt)
        if params.trainer_holds_parent:
            live_version = dict(zip(state.live.model_id.tolist(), state.live.version.tolist(), strict=True))
            for t, parent in zip(deposit.pairs.trainer.tolist(), deposit.parent_model.tolist(), strict=True):
                held.give(t, live_version[parent], accuracy[parent])
        commit_miner = state.roles.block_miners[1] if state.roles else -1
        commit = driver.step()
        assert isinstance(commit, CommitReceipt)
        models.follow(state)
        for model, owner in zip(commit.model_id.tolist(), state.commits.owner.tolist(), strict=True):
            accuracy[model] = setup.test_accuracy(evaluator, models.weights(model))
            held.give(owner, state.round + 1, accuracy[model])
            trained[owner] += 1
            if params.encryption_miner_holds_models:
                held.give(commit_miner, state.round + 1, accuracy[model])
        driver.step()
        settle = driver.step()
        assert isinstance(settle, SettleReceipt)
        np.add.at(selected, settle.selected_owner, 1)
        top = int(state.live.model_id[0])  # the protocol's first-ranked model (live is in rank order)
        t = _traffic(brains)
        curve.add(
            Point(
                state.round,
                accuracy[top],
                t.total_bytes,
                t.local_epochs,
                t.samples,
                {
                    "top_model": top,
                    "models": len(commit.model_id),
                    "supply_coins": state.supply / UNIT,
                    "gini": gini(state.balances),
                    "within_2pp": float((held.accuracy >= accuracy[top] - 0.02).mean()),
                    "best_committed": max(accuracy[m] for m in commit.model_id.tolist())
                    if commit.model_id.size
                    else None,
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
            },
            "balances_coins": (state.balances / UNIT).tolist(),
            "models_trained": trained.tolist(),
            "models_selected": selected.tolist(),
            "shard_reads_by_others": sum(sum(r != b.shard.owner for r in b.shard.reads) for b in brains),
        }
    )
    return curve


def _traffic(brains: list[RelayBrain]) -> Traffic:
    return Traffic.total(b.traffic for b in brains)


class _Holdings:
    def __init__(self, n: int) -> None:
        self.version = np.full(n, -1, dtype=np.int64)
        self.accuracy = np.full(n, -1.0)

    def give(self, p: int, version: int, accuracy: float) -> None:
        if version > self.version[p]:
            self.version[p], self.accuracy[p] = version, accuracy
        elif version == self.version[p]:
            self.accuracy[p] = max(self.accuracy[p], accuracy)
