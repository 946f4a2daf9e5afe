"""The ``latent`` task of ``derelayl run``: the paper's abstract model quality."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from derelayl.learning.latent import LatentTrainer, sigmoid
from derelayl.protocol.blocks import Block
from derelayl.protocol.state import State
from derelayl.protocol.types import format_units
from derelayl.runtime.latent import LatentParticipants
from derelayl.runtime.local import RunConfig

__all__ = ["LatentTask"]


class LatentTask:
    def __init__(self, config: RunConfig, out_dir: Path) -> None:
        self.participants = LatentParticipants(LatentTrainer(seed=config.seed))

    def next_block(self, state: State) -> Block:
        return self.participants.next_block(state)

    def describe(self, state: State) -> str:
        z = float(state.live.score.max())
        best = float(sigmoid(np.array([z]))[0])
        holding = float((state.held_version >= state.latest_version - 1).mean())
        return (
            f"best z {z:.1f} (sigmoid {best:.3f})  owners {len(state.live)}  v{state.latest_version} held by "
            f"{holding:.0%} (≤1 behind)  supply {format_units(state.supply)}"
        )

    def finish(self, state: State, out_dir: Path) -> dict[str, Any]:
        return {
            "task": "latent",
            "best_model_performance": float(sigmoid(np.array([state.live.score.max()]))[0]),
            "latest_version": state.latest_version,
        }
