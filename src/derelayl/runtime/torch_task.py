"""The ``digits`` task of ``derelayl run``: participants relay-train a real PyTorch model.

Set-up (the reference experiment's, with split, initial weights and training seeds taken
from ``--seed``): scikit-learn digits standardized with the training pool's statistics,
stratified 20 % global test set, Dirichlet(0.5) label partition over the participants, MLP
64-64-10, SGD lr 0.05, batch 32, one local epoch. Models live in ``OUT/models/<sha256>.safetensors`` with an index from
ledger model id to digest, written before the test block that makes the ids matter, so a
run killed between any two blocks resumes: committed models are found by the commitments
in the state, and training is a pure function of (seed, round, trainer).

Per round it records (``rounds.jsonl``) the accuracy on the global test set of the model the
protocol ranked first (measurement only), the share holding the newest version, and coins.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from derelayl.learning.participants import RelayParticipants
from derelayl.learning.setup import build_setup
from derelayl.learning.store import DirModelStore
from derelayl.protocol.blocks import Block
from derelayl.protocol.state import State
from derelayl.protocol.types import UNIT, Phase, format_units
from derelayl.runtime.local import RunConfig
from derelayl.stats import gini

__all__ = ["TorchTask", "gini"]

log = logging.getLogger(__name__)


class TorchTask:
    def __init__(self, config: RunConfig, out_dir: Path) -> None:
        torch.set_num_threads(1)  # determinism (same bytes on resume) and a fair share of the CPU
        self.setup = build_setup(
            "digits",
            participants=config.participants,
            partition="dirichlet",
            split_seed=config.seed,
            init_seed=config.seed,
            partition_options={"alpha": 0.5},
        )
        self.evaluator = self.setup.evaluator()
        self.participants = RelayParticipants(
            trainer=self.setup.trainer(),
            evaluator=self.setup.evaluator(),
            shards=self.setup.shards(),
            store=DirModelStore(out_dir / "models"),
            genesis=self.setup.init,
            seed=config.seed,
            meta={"spec": self.setup.spec.to_dict(), "task": "digits"},
        )
        self.setup.split.save(out_dir / "split.json")
        self.rounds_path = out_dir / "rounds.jsonl"
        self.records: dict[int, dict[str, Any]] = {}
        if self.rounds_path.exists():
            for line in self.rounds_path.read_text().splitlines():
                rec = json.loads(line)
                self.records[int(rec["round"])] = rec

    def next_block(self, state: State) -> Block:
        if state.phase == Phase.DEPOSIT:
            self._record(state)
        return self.participants.next_block(state)

    def _record(self, state: State) -> dict[str, Any]:
        """Metrics once round ``state.round - 1`` has settled (idempotent across restarts)."""
        rec = self.records.get(state.round)
        if rec is not None:
            return rec
        best = int(state.live.model_id[0])  # live is in the protocol's rank order, best first
        acc = self.setup.test_accuracy(self.evaluator, self.participants.weights(best))
        held = state.held_version
        rec = {
            "round": state.round,
            "best_model": best,
            "best_test_accuracy": acc,
            "latest_version": state.latest_version,
            "holding_latest": float((held >= state.latest_version).mean()),
            "holding_within_1": float((held >= state.latest_version - 1).mean()),
            "versions_behind": [int(state.latest_version - v) if v >= 0 else -1 for v in held.tolist()],
            "supply_coins": state.supply / UNIT,
            "gini": gini(state.balances),
        }
        self.records[state.round] = rec
        with self.rounds_path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        return rec

    def describe(self, state: State) -> str:
        rec = self._record(state)
        return (
            f"acc {rec['best_test_accuracy']:.3f} (model #{rec['best_model']})  v{state.latest_version} held by "
            f"{rec['holding_latest']:.0%}  supply {format_units(state.supply)}  gini {rec['gini']:.2f}"
        )

    def finish(self, state: State, out_dir: Path) -> dict[str, Any]:
        last = self._record(state)
        history = [self.records[r] for r in sorted(self.records) if r <= state.round]
        figures = _figures(history, state, out_dir)
        return {
            "task": "digits",
            "best_model": last["best_model"],
            "best_model_digest": self.participants.digest_of(last["best_model"]).hex(),
            "best_test_accuracy": last["best_test_accuracy"],
            "latest_version": state.latest_version,
            "accuracy_per_round": [r["best_test_accuracy"] for r in history],
            "figures": figures,
        }


def _figures(history: list[dict[str, Any]], state: State, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    rounds = [r["round"] for r in history]
    axes[0].plot(rounds, [r["best_test_accuracy"] for r in history], marker=".")
    axes[0].set(xlabel="rounds settled", ylabel="global test accuracy", title="model ranked first by the protocol")
    bins: dict[str, Callable[[int], bool]] = {
        "latest": lambda b: b == 0,
        "latest-1": lambda b: b == 1,
        "older": lambda b: b > 1,
        "none": lambda b: b < 0,
    }
    bottom = np.zeros(len(history))
    for name, test in bins.items():
        share = np.array([np.mean([test(b) for b in r["versions_behind"]]) for r in history])
        axes[1].bar(rounds, share, bottom=bottom, label=name, width=1.0)
        bottom += share
    axes[1].set(xlabel="rounds settled", ylabel="share of participants", title="newest version held")
    axes[1].legend(fontsize=8)
    axes[2].bar(np.arange(state.n_participants), state.balances / UNIT)
    axes[2].set(xlabel="participant", ylabel="coins", title=f"balances after round {state.round}")
    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    path = out_dir / "digits.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path.name]
