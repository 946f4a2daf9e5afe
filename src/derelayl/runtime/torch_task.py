"""The ``digits`` task of ``derelayl run``: participants relay-train a real PyTorch model.

Set-up (the reference experiment's, with split, initial weights and training seeds taken
from ``--seed``): scikit-learn digits standardized with the training pool's statistics,
stratified 20 % global test set, Dirichlet(0.5) label partition over the participants, MLP
64-64-10, SGD lr 0.05, batch 32, one local epoch. Each participant's brain is a
``RelayBrain`` with its own shard. Models live in ``OUT/models/<sha256>.safetensors`` and the
test cases testers publish in ``OUT/cases/<sha256>`` (``derelayl audit`` re-scores on them); which
model id a digest belongs to is read off the chain (``ModelBook.follow``, also while a stored
chain is replayed), so a run killed between any two blocks resumes: training and test draws
are pure functions of (seed, round, participant).

Per round it records (``rounds.jsonl``) the accuracy on the global test set of the model the
protocol ranked first (measurement only), the share holding the newest version, and coins.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch

from derelayl.agents.agent import Brain
from derelayl.agents.books import ModelBook
from derelayl.agents.relay import relay_brains, share_cases
from derelayl.errors import ConfigError
from derelayl.fhe.ckks import SCHEME
from derelayl.fhe.scoring import FheScoring, encrypted_scoring
from derelayl.folders import write_atomic
from derelayl.learning.data import case_blob, case_digest
from derelayl.learning.setup import LearningSetup, build_setup
from derelayl.learning.store import DirModelStore
from derelayl.protocol.state import State
from derelayl.protocol.types import Phase, format_units
from derelayl.runtime.audit import CASES_DIR
from derelayl.runtime.local import RunConfig
from derelayl.runtime.records import RecordingTask, RoundLog
from derelayl.runtime.tasks import is_config

__all__ = ["TorchTask", "configured_setup"]

log = logging.getLogger(__name__)


class TorchTask(RecordingTask):
    def __init__(self, config: RunConfig, out_dir: Path) -> None:
        torch.set_num_threads(1)  # determinism (same bytes on resume) and a fair share of the CPU
        self.name = "digits"
        _check_fhe_mode(config, out_dir)
        if is_config(config.task):
            self.setup, self.name = _configured(config, out_dir)
        else:
            self.setup = build_setup(
                "digits",
                participants=config.participants,
                partition="dirichlet",
                split_seed=config.seed,
                init_seed=config.seed,
                partition_options={"alpha": 0.5},
                activation="quad" if config.fhe else "relu",
            )
        self.evaluator = self.setup.evaluator()
        meta = {"spec": self.setup.spec.to_dict(), "task": self.name}
        self.models = ModelBook.of_genesis(DirModelStore(out_dir / "models"), self.setup.init, meta)
        self.brains = relay_brains(self.setup, self.models, config.seed, meta=meta)
        share_cases(self.brains)
        self.cases_dir = out_dir / CASES_DIR
        for brain in self.brains:  # testers publish their cases, content-addressed (derelayl audit)
            brain.on_cases = self._publish_cases
        self.fhe: FheScoring | None = None
        if config.fhe:
            self.fhe = encrypted_scoring(self.setup.spec, self.models, out_dir)
            for brain in self.brains:
                brain.fhe, brain.rechecks = self.fhe, config.rechecks
            write_atomic(out_dir / FHE_FILE, json.dumps(SCHEME.to_dict(), indent=1) + "\n")
        self.setup.split.save(out_dir / "split.json")
        self.log = RoundLog(out_dir / "rounds.jsonl")

    def _publish_cases(self, x: Any, y: Any) -> None:
        path = self.cases_dir / case_digest(x, y).hex()
        if not path.exists():
            self.cases_dir.mkdir(exist_ok=True)
            write_atomic(path, case_blob(x, y))

    def brain(self, participant: int) -> Brain:
        return self.brains[participant]

    def follow(self, state: State) -> None:
        self.models.follow(state)
        if self.fhe is not None and state.phase == Phase.DEPOSIT:  # a round settled
            self.fhe.prune([self.models.digest_of(m) for m in state.live.model_id.tolist()])

    def quality(self, state: State) -> dict[str, Any]:
        best = int(state.live.model_id[0])  # live is in the protocol's rank order, best first
        return {
            "best_model": best,
            "best_test_accuracy": self.setup.test_accuracy(self.evaluator, self.models.weights(best)),
        }

    def line(self, state: State, rec: dict[str, Any]) -> str:
        return (
            f"acc {rec['best_test_accuracy']:.3f} (model #{rec['best_model']})  v{state.latest_version} held by "
            f"{rec['holding_latest']:.0%}  supply {format_units(state.supply)}  gini {rec['gini']:.2f}"
        )

    def finish(self, state: State, out_dir: Path) -> dict[str, Any]:
        last = self.record(state)
        history = self.log.history(state.round)
        figure = self.log.figure(state, out_dir / f"{self.name}.png", "best_test_accuracy", "global test accuracy")
        return {
            "task": self.name,
            "best_model": last["best_model"],
            "best_model_digest": self.models.digest_of(last["best_model"]).hex(),
            "best_test_accuracy": last["best_test_accuracy"],
            "latest_version": state.latest_version,
            "accuracy_per_round": [r["best_test_accuracy"] for r in history],
            "figures": [figure],
        }


TASK_FILE = "task.json"
FHE_FILE = "fhe.json"


def _check_fhe_mode(config: RunConfig, out_dir: Path) -> None:
    """A resumed run keeps its scoring mode: its commitments are encrypted or they are not."""
    if (out_dir / "split.json").exists() and (out_dir / FHE_FILE).exists() != config.fhe:
        held = "with" if config.fhe is False else "without"
        raise ConfigError(f"{out_dir} holds a run {held} encrypted scoring; use another --out or the same --fhe")


def configured_setup(task: str, participants: int, seed: int) -> tuple[LearningSetup, str, dict[str, Any]]:
    """The learning set-up of an experiment config file (a task given as ``FILE.toml``) with
    ``participants`` and ``seed`` as its participants, split seed and initial-weight seed: the
    same for ``derelayl run --task FILE.toml`` and for every node of a network started with
    ``--data FILE.toml:I/N``. Returns the set-up, the task's name and its resolved form."""
    from derelayl.experiments.config import load_config
    from derelayl.experiments.runner import build_experiment_setup

    loaded = load_config(Path(task))
    chosen = dataclasses.replace(
        loaded,
        seed=seed,
        data={**loaded.data, "participants": participants, "split_seed": seed},
        model={**loaded.model, "init_seed": seed},
    )
    resolved = {k: chosen.resolved()[k] for k in ("name", "data", "model", "train")}
    name = str(resolved["name"]) if str(resolved["name"]).isidentifier() else "task"
    return build_experiment_setup(chosen), name, resolved


def _configured(config: RunConfig, out_dir: Path) -> tuple[LearningSetup, str]:
    """``configured_setup`` for ``run``; the resolved config is kept in OUT/task.json: a resumed
    run must name the same one (refused before any file is written otherwise)."""
    setup, name, resolved = configured_setup(config.task, config.participants, config.seed)
    path = out_dir / TASK_FILE
    if path.exists():
        try:
            held = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable ({type(exc).__name__}); use another --out") from exc
        if held != json.loads(json.dumps(resolved)):
            raise ConfigError(f"{out_dir} holds a run of another task ({path}); use another --out or the same config")
    write_atomic(path, json.dumps(resolved, indent=1) + "\n")
    return setup, name
