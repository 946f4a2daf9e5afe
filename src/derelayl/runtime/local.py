"""A local DeRelayL network in one process, on a signed SQLite chain (``derelayl run``).

Every participant has its own Ed25519 key (derived from the run's seed: fine for a local
network, never for real funds); the participants' decisions come from a ``Task`` (the
abstract latent model, or real PyTorch training). Re-running on the same folder resumes
from the last stored block.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from derelayl.errors import ConfigError
from derelayl.ledger.chain import Chain
from derelayl.ledger.crypto import derive_keys, sha256
from derelayl.ledger.sqlite import SQLiteLedger
from derelayl.protocol.blocks import Block
from derelayl.protocol.params import Params, preset
from derelayl.protocol.state import State
from derelayl.protocol.types import UNIT, Phase, format_units

__all__ = ["RunConfig", "Task", "run_network", "run_seed"]

log = logging.getLogger(__name__)


class Task(Protocol):
    """What the participants of a local network do: produce the next block for the state."""

    def next_block(self, state: State) -> Block: ...

    def describe(self, state: State) -> str:
        """One line of progress for the round that just settled."""
        ...

    def finish(self, state: State, out_dir: Path) -> dict[str, Any]:
        """Extra results (figures, metrics) once the run ends; merged into summary.json."""
        ...


@dataclass(frozen=True)
class RunConfig:
    participants: int = 64
    rounds: int = 50
    seed: int = 42
    task: str = "latent"
    preset: str = "reference"

    def params(self) -> Params:
        return preset(self.preset)

    def validate(self) -> None:
        if self.participants < 2:
            raise ConfigError(f"--participants must be at least 2, got {self.participants}")
        if self.rounds < 0:
            raise ConfigError(f"--rounds must be non-negative, got {self.rounds}")


def run_seed(seed: int) -> bytes:
    """The protocol seed kept in state for a run with ``--seed seed`` (simulate uses it too,
    so that a simulated chain equals ``derelayl run``'s)."""
    return sha256(f"derelayl-run/{seed}".encode())


def _open_chain(config: RunConfig, path: Path) -> Chain:
    keys = derive_keys(config.seed, config.participants)
    publics = [k.public for k in keys]
    ledger = SQLiteLedger(path)
    if ledger.height() == 0:
        return Chain.create(ledger, config.params(), run_seed(config.seed), publics, keys[0])
    chain = Chain.open(ledger)
    if chain.state.keys[: config.participants] != publics or chain.state.params != config.params():
        ledger.close()
        raise ConfigError(
            f"{path} holds a run with other participants, seed or parameters; "
            "use another --out or the same settings to resume"
        )
    return chain


def run_network(
    config: RunConfig,
    out_dir: Path,
    task_factory: Callable[[RunConfig, Path], Task],
    on_round: Callable[[State, str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) until ``config.rounds`` rounds have settled; write summary.json."""
    config.validate()
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    chain = _open_chain(config, out_dir / "chain.sqlite")
    resumed_at = chain.height
    keys = dict(enumerate(derive_keys(config.seed, chain.state.n_participants)))
    task = task_factory(config, out_dir)
    try:
        while chain.state.round < config.rounds:
            block = task.next_block(chain.state)
            chain.produce(block, keys)
            if chain.state.phase == Phase.DEPOSIT and on_round is not None:
                on_round(chain.state, task.describe(chain.state))
        extra = task.finish(chain.state, out_dir)
    finally:
        chain.ledger.close()
    state = chain.state
    summary = {
        "config": asdict(config),
        "params": state.params.to_dict(),
        "rounds": state.round,
        "height": chain.height,
        "resumed_from_height": resumed_at,
        "head_hash": chain.head_hash.hex(),
        "wall_seconds": round(time.perf_counter() - start, 3),
        "money": {
            "minted": format_units(state.minted),
            "burned": format_units(state.burned),
            "supply": format_units(state.supply),
        },
        "balances": [format_units(int(b)) for b in state.balances],
        "balance_quantiles_coins": dict(
            zip(
                ("min", "p10", "p50", "p90", "max"),
                (float(q) for q in np.percentile(state.balances / UNIT, [0, 10, 50, 90, 100])),
                strict=True,
            )
        ),
        **extra,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("run finished at round %d, head %s", state.round, chain.head_hash.hex()[:16])
    return summary
