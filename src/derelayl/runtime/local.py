"""A local DeRelayL network in one process, on a signed SQLite chain (``derelayl run``).

One ``Agent`` per participant, each with its own Ed25519 key (derived from the run's seed:
fine for a local network, never for real funds) and its own ``Brain`` from a ``Task`` (the
abstract latent model, or real PyTorch training). A ``RoundDriver`` moves the agents'
signed messages to the drawn miner, whose block goes to the chain through
``LocalChainClient``: no code here signs with anyone's key but its owner's. Re-running on
the same folder replays the stored chain (the task follows it) and resumes from the last
stored block.
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

from derelayl import jsonsafe
from derelayl.agents.agent import Agent, Brain
from derelayl.errors import ConfigError, DerelaylError
from derelayl.folders import FolderLock, write_atomic
from derelayl.ledger.chain import Chain
from derelayl.ledger.client import ChainClient, LocalChainClient
from derelayl.ledger.crypto import KeyPair, derive_keys, sha256
from derelayl.ledger.sqlite import SQLiteLedger
from derelayl.protocol.appeals import CHALLENGES_NEED_A_LEDGER
from derelayl.protocol.copies import PREDICTIONS_NOT_ENCRYPTED
from derelayl.protocol.params import Params, preset
from derelayl.protocol.state import State
from derelayl.protocol.types import UNIT, Phase, format_units
from derelayl.runtime.driver import RoundDriver

__all__ = ["RunConfig", "Task", "run_network", "run_seed"]

log = logging.getLogger(__name__)


class Task(Protocol):
    """The model side of a local network's participants, and what the run records."""

    def brain(self, participant: int) -> Brain:
        """The model side of one participant (its own data, its own trainer)."""
        ...

    def follow(self, state: State) -> None:
        """After every applied block, also while a stored chain is replayed on resume."""
        ...

    def settled(self, state: State) -> str:
        """A round has settled (or the run starts at a round boundary): record it; one line
        of progress."""
        ...

    def finish(self, state: State, out_dir: Path) -> dict[str, Any]:
        """Extra results (figures, metrics) once the run ends; merged into summary.json."""
        ...


LEDGERS = ("sqlite", "evm")
SEED_MAX = 2**32 - 1
"""Seeds reach numpy and scikit-learn, which take 32-bit seeds."""
MAX_PARTICIPANTS = 100_000
MAX_ROUNDS = 10_000_000
CHALLENGE_WINDOW = 5
"""Blocks an unchallenged round waits when a challenge bond is given without a window."""


@dataclass(frozen=True)
class RunConfig:
    participants: int = 64
    rounds: int = 50
    seed: int = 42
    task: str = "latent"
    preset: str = "reference"
    ledger: str = "sqlite"
    """``sqlite``: the signed local chain; ``evm``: the contract (``runtime/evm_run.py``)."""
    rpc: str | None = None
    """With ``evm``: None = embedded py-evm, ``anvil`` = our own anvil, or a JSON-RPC URL."""
    chain_randomness: bool = True
    """With ``evm``: mix the chain's ``prevrandao`` into the beacon."""
    min_improvement: int | None = None
    """The improvement rule's margin on top of the preset (None: the preset's)."""
    testers: int | None = None
    pooled_cases: bool | None = None
    copy_rule: bool | None = None
    improvement_z: int | None = None
    """The sign test's threshold in hundredths of a standard deviation (``Params.improvement_z``)."""
    appeal_testers: int | None = None
    """Appellants drawn when pooled reports disagree (``Params.appeal_testers``; None: the preset's)."""
    case_commitments: bool | None = None
    """Testers commit to their cases' digest in the deposit block (``Params.case_commitments``)."""
    tester_stake: int | None = None
    """Units a tester must hold, at stake in a disputed round (``Params.tester_stake``)."""
    challenge_bond: int | None = None
    """Units a challenge stakes (``Params.challenge_bond``; ``--ledger evm`` only)."""
    challenge_window: int | None = None
    """Blocks an unchallenged round waits before it settles (``Params.challenge_window``;
    ``CHALLENGE_WINDOW`` when only a bond is given)."""
    post_commitments: bool = False
    """Trainers also send their commitments straight to the contract (``--ledger evm`` only)."""
    fhe: bool = False
    """Testers score encrypted models (CKKS, ``derelayl.fhe``); the model must be a
    one-hidden-layer MLP with the ``quad`` activation (the digits task switches to it)."""
    rechecks: int = 0
    """With ``fhe`` and challenges: other children each trainer re-scores under encryption
    before it decides to challenge (``RelayBrain.rechecks``)."""

    def params(self) -> Params:
        """The preset, with the options given on top of it."""
        given = {
            "min_improvement": self.min_improvement,
            "testers": self.testers,
            "pooled_cases": self.pooled_cases,
            "copy_rule": self.copy_rule,
            "improvement_z": self.improvement_z,
            "appeal_testers": self.appeal_testers,
            "case_commitments": self.case_commitments,
            "tester_stake": self.tester_stake,
            "challenge_bond": self.challenge_bond,
            "challenge_window": self.challenge_window
            if self.challenge_window is not None or not self.challenge_bond
            else CHALLENGE_WINDOW,
        }
        changed = {k: v for k, v in given.items() if v is not None}
        base = preset(self.preset)
        return Params.from_dict({**base.to_dict(), **changed}) if changed else base

    def validate(self) -> None:
        from derelayl.runtime.tasks import TASKS, is_config

        if is_config(self.task):
            from derelayl.experiments.config import load_config

            load_config(Path(self.task))  # a bad file or plugin name stops here
        elif self.task not in TASKS:
            raise ConfigError(f"--task must be one of {', '.join(TASKS)} or a config .toml, got {self.task!r}")
        if not 0 <= self.seed <= SEED_MAX:
            raise ConfigError(f"--seed must be in 0..{SEED_MAX}, got {self.seed}")
        if not 2 <= self.participants <= MAX_PARTICIPANTS:
            raise ConfigError(f"--participants must be in 2..{MAX_PARTICIPANTS}, got {self.participants}")
        if not 0 <= self.rounds <= MAX_ROUNDS:
            raise ConfigError(f"--rounds must be in 0..{MAX_ROUNDS}, got {self.rounds}")
        if self.participants < 2:
            raise ConfigError(f"--participants must be at least 2, got {self.participants}")
        if self.rounds < 0:
            raise ConfigError(f"--rounds must be non-negative, got {self.rounds}")
        if self.ledger not in LEDGERS:
            raise ConfigError(f"--ledger must be sqlite or evm, got {self.ledger!r}")
        if self.rpc is not None and self.ledger != "evm":
            raise ConfigError("--rpc needs --ledger evm")
        if self.fhe and self.task == "latent":
            raise ConfigError("--fhe on needs real models (--task digits or a config .toml); latent has none")
        if self.task == "latent" and self.params().compares_predictions:
            raise ConfigError(
                "--copy-rule and --improvement-z compare models' predictions: "
                "they need real models (--task digits or a .toml)"
            )
        if self.post_commitments and self.ledger != "evm":
            raise ConfigError("--post-commitments needs --ledger evm (a SQLite chain takes commitments only in blocks)")
        if self.fhe and self.params().compares_predictions:
            raise ConfigError(PREDICTIONS_NOT_ENCRYPTED)
        if (self.challenge_bond or self.challenge_window) and self.ledger != "evm":
            raise ConfigError(f"--{CHALLENGES_NEED_A_LEDGER.replace('_', '-')}")
        if self.rechecks:
            from derelayl.agents.relay import check_rechecks  # (torch: only when asked for)

            check_rechecks(self.rechecks, self.fhe, self.params().challenge_bond)


def run_seed(seed: int) -> bytes:
    """The genesis beacon of a run with ``--seed seed`` (simulate uses it too, so that a
    simulated chain equals ``derelayl run``'s)."""
    return sha256(f"derelayl-run/{seed}".encode())


def _check_resumable(ledger: SQLiteLedger, config: RunConfig, publics: list[bytes], path: Path) -> None:
    """Refuse a stored chain of another run before anything is replayed or written. (A
    malformed genesis passes here; ``Chain.open`` then names the problem.)"""
    try:
        genesis = jsonsafe.loads(ledger.get(0).body)
        keys = [bytes.fromhex(k) for k in genesis["keys"]]
        same = keys == publics and Params.from_dict(genesis["params"]) == config.params()
    except (ValueError, TypeError, KeyError, DerelaylError):
        return
    if not same:
        ledger.close()
        raise ConfigError(
            f"{path} holds a run with other participants, seed or parameters; "
            "use another --out or the same settings to resume"
        )


def _open_chain(ledger: SQLiteLedger, config: RunConfig, keys: list[KeyPair], task: Task) -> Chain:
    if ledger.height() == 0:
        return Chain.create(ledger, config.params(), run_seed(config.seed), [k.public for k in keys], keys[0])
    return Chain.open(ledger, on_block=lambda _stored, _block, _receipt, state: task.follow(state))


def run_network(
    config: RunConfig,
    out_dir: Path,
    task_factory: Callable[[RunConfig, Path], Task],
    on_round: Callable[[State, str], None] | None = None,
    *,
    funder: Any = None,
) -> dict[str, Any]:
    """Run (or resume) until ``config.rounds`` rounds have settled; write summary.json.
    ``funder`` (an ``EvmKey``) pays the participants' gas on an external EVM node. The folder
    is locked while the run writes to it."""
    config.validate()
    config.params()  # an unknown preset stops here, before any folder or file is made
    with FolderLock(out_dir, "derelayl run"):
        return _run_locked(config, out_dir, task_factory, on_round, funder)


def _run_locked(
    config: RunConfig,
    out_dir: Path,
    task_factory: Callable[[RunConfig, Path], Task],
    on_round: Callable[[State, str], None] | None,
    funder: Any,
) -> dict[str, Any]:
    start = time.perf_counter()
    if config.ledger == "evm":
        return _run_on_contract(config, out_dir, task_factory, on_round, funder, start)
    keys = derive_keys(config.seed, config.participants)
    path = out_dir / "chain.sqlite"
    fresh = not path.exists()
    ledger = SQLiteLedger(path)
    if ledger.height():
        _check_resumable(ledger, config, [k.public for k in keys], path)
    try:
        task = task_factory(config, out_dir)
        chain = _open_chain(ledger, config, keys, task)
    except BaseException:
        ledger.close()
        if fresh and ledger.height() == 0:
            path.unlink()  # nothing of ours in it: a corrected command starts clean
        raise
    resumed_at = chain.height
    client = LocalChainClient(chain)
    signers = [client.signer(key) for key in keys]
    try:
        extra = _play(client, signers, task, config, out_dir, on_round)
    finally:
        client.close()
    ledger_info = {"height": chain.height, "resumed_from_height": resumed_at, "head_hash": chain.head_hash.hex()}
    return _finish(config, chain.state, out_dir, start, {"ledger": {"kind": "sqlite"}, **ledger_info, **extra})


def _run_on_contract(
    config: RunConfig,
    out_dir: Path,
    task_factory: Callable[[RunConfig, Path], Task],
    on_round: Callable[[State, str], None] | None,
    funder: Any,
    start: float,
) -> dict[str, Any]:
    from derelayl.runtime.evm_run import open_evm_ledger

    task = task_factory(config, out_dir)
    evm = open_evm_ledger(
        out_dir,
        params=config.params(),
        seed=run_seed(config.seed),
        key_seed=config.seed,
        participants=config.participants,
        rpc=config.rpc,
        funder=funder,
        chain_randomness=config.chain_randomness,
        follow=task.follow,
    )
    try:
        extra = _play(evm.client, evm.signers, task, config, out_dir, on_round)
        ledger_info = evm.summary()
    finally:
        evm.client.close()
    ledger_info["resumed_from_height"] = evm.resumed_blocks
    return _finish(config, evm.client.state, out_dir, start, {**ledger_info, **extra})


def _play(
    client: ChainClient,
    signers: list[Any],
    task: Task,
    config: RunConfig,
    out_dir: Path,
    on_round: Callable[[State, str], None] | None,
) -> dict[str, Any]:
    """Drive one agent per participant until ``config.rounds`` rounds have settled."""
    posting = config.post_commitments
    agents = [Agent(signer, task.brain(i), post_commitments=posting) for i, signer in enumerate(signers)]
    driver = RoundDriver(client, agents)
    state = client.state
    if state.phase == Phase.DEPOSIT:
        task.settled(state)  # genesis, or a run resumed at a round boundary
    while client.state.round < config.rounds:
        driver.step()
        task.follow(client.state)
        if client.state.phase == Phase.DEPOSIT:
            line = task.settled(client.state)
            if on_round is not None:
                on_round(client.state, line)
    return task.finish(client.state, out_dir)


def _finish(config: RunConfig, state: State, out_dir: Path, start: float, extra: dict[str, Any]) -> dict[str, Any]:
    summary = {
        "config": asdict(config),
        "params": state.params.to_dict(),
        "rounds": state.round,
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
    write_atomic(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    log.info("run finished at round %d, head %s", state.round, str(summary.get("head_hash", ""))[:16])
    return summary
