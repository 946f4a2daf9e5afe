"""The ``latent`` task of ``derelayl run``: the paper's abstract model quality.

Every participant's brain is a ``LatentBrain``: a latent model is its integer score
``round(z * SCALE)``, so the quality of a model is ``z = score / SCALE`` and its accuracy-like
performance ``sigmoid(z)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from derelayl.agents.agent import Brain
from derelayl.agents.latent import LatentBrain
from derelayl.learning.latent import SCALE, LatentTrainer, sigmoid
from derelayl.protocol.state import State
from derelayl.protocol.types import format_units
from derelayl.runtime.local import RunConfig
from derelayl.runtime.records import RecordingTask, RoundLog

__all__ = ["LatentTask"]


class LatentTask(RecordingTask):
    def __init__(self, config: RunConfig, out_dir: Path) -> None:
        self.trainer = LatentTrainer(seed=config.seed)
        self.log = RoundLog(out_dir / "rounds.jsonl")

    def brain(self, participant: int) -> Brain:
        return LatentBrain(self.trainer)

    def quality(self, state: State) -> dict[str, Any]:
        z = int(state.live.score[0]) / SCALE  # live is in the protocol's rank order, best first
        return {"best_model": int(state.live.model_id[0]), "best_z": z, "best_sigmoid": float(sigmoid(np.array(z)))}

    def line(self, state: State, rec: dict[str, Any]) -> str:
        return (
            f"best z {rec['best_z']:.1f} (sigmoid {rec['best_sigmoid']:.3f})  owners {len(state.live)}  "
            f"v{state.latest_version} held by {rec['holding_within_1']:.0%} (≤1 behind)  "
            f"supply {format_units(state.supply)}  gini {rec['gini']:.2f}"
        )

    def finish(self, state: State, out_dir: Path) -> dict[str, Any]:
        last = self.record(state)
        figure = self.log.figure(state, out_dir / "latent.png", "best_z", "latent score z (sigmoid = performance)")
        return {
            "task": "latent",
            "best_model": last["best_model"],
            "best_model_performance": last["best_sigmoid"],
            "latest_version": state.latest_version,
            "figures": [figure],
        }
