"""The DeRelayL arm of an experiment: real models, driven by the protocol core.

Blocks come from ``RelayParticipants`` and are applied with ``process_block`` to a
``State`` (no signatures: the experiment measures learning and money, and the chain's
signing adds nothing to either). Selection, matching and rewards are the rules' own. The
round's accuracy is that of the model the protocol ranked first
(``SettleReceipt.selected_model[0]``) on the global test set, which the protocol never sees.
"""

from __future__ import annotations

import hashlib

import numpy as np

from derelayl.baselines.curve import Curve, Point
from derelayl.learning.participants import RelayParticipants
from derelayl.learning.setup import LearningSetup
from derelayl.learning.store import MemoryModelStore
from derelayl.learning.torch_models import TrainConfig
from derelayl.protocol import CommitReceipt, DepositReceipt, Params, SettleReceipt, State, process_block
from derelayl.protocol.genesis import initialize_state
from derelayl.protocol.types import UNIT
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
    state = initialize_state(params, hashlib.sha256(f"derelayl-experiment/{seed}".encode()).digest(), keys)
    net = RelayParticipants(
        setup.trainer(train_config),
        setup.evaluator(),
        setup.shards(),
        MemoryModelStore(),
        setup.init,
        seed,
        meta={"spec": setup.spec.to_dict()},
        merge_top_k=merge_top_k,
    )
    evaluator = setup.evaluator()
    accuracy = {0: setup.test_accuracy(evaluator, setup.init)}
    # Per participant: newest version held, and the best global accuracy among held models of
    # that version (a participant keeps every model it receives or trains; we credit its newest).
    held = _Holdings(n)
    held.give(0, 0, accuracy[0])
    trained, selected = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    curve = Curve(
        name,
        info={
            "model_bytes": net.model_bytes,
            "merge_top_k": merge_top_k,
            "params": params.to_dict(),
            "shard_sizes": [len(s) for s in net.shards],
        },
    )
    curve.add(Point(0, accuracy[0], 0, 0, 0, {"supply_coins": 0.0, "gini": 0.0, "within_2pp": 1 / n}))
    limit = rounds if rounds is not None else max_rounds
    while state.round < limit and (byte_budget is None or net.traffic.total_bytes < byte_budget):
        deposit = process_block(state, net.next_block(state))
        assert isinstance(deposit, DepositReceipt)
        live_version = dict(zip(state.live.model_id.tolist(), state.live.version.tolist(), strict=True))
        for t, parent in zip(deposit.pairs.trainer.tolist(), deposit.parent_model.tolist(), strict=True):
            held.give(t, live_version[parent], accuracy[parent])
        commit_miner = state.roles.block_miners[1] if state.roles else -1
        commit = process_block(state, net.next_block(state))
        assert isinstance(commit, CommitReceipt)
        for model, owner in zip(commit.model_id.tolist(), state.commits.owner.tolist(), strict=True):
            accuracy[model] = setup.test_accuracy(evaluator, net.load(net_digest(state, model)))
            held.give(owner, state.round + 1, accuracy[model])
            trained[owner] += 1
            if params.encryption_miner_holds_models:
                held.give(commit_miner, state.round + 1, accuracy[model])
        process_block(state, net.next_block(state))
        settle = process_block(state, net.next_block(state))
        assert isinstance(settle, SettleReceipt)
        np.add.at(selected, settle.selected_owner, 1)
        top = int(state.live.model_id[0])  # the protocol's first-ranked model (live is in rank order)
        t = net.traffic
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
    t = net.traffic
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
            "shard_reads_by_others": sum(sum(r != s.owner for r in s.reads) for s in net.shards),
        }
    )
    return curve


class _Holdings:
    def __init__(self, n: int) -> None:
        self.version = np.full(n, -1, dtype=np.int64)
        self.accuracy = np.full(n, -1.0)

    def give(self, p: int, version: int, accuracy: float) -> None:
        if version > self.version[p]:
            self.version[p], self.accuracy[p] = version, accuracy
        elif version == self.version[p]:
            self.accuracy[p] = max(self.accuracy[p], accuracy)


def net_digest(state: State, model_id: int) -> bytes:
    """Digest of a model committed this round, straight from the state's commitments."""
    pos = int(np.flatnonzero(state.commits.model_id == model_id)[0])
    return state.commitments[pos]
