"""What a ``derelayl devnet`` runs: its options, checked before any process starts.

``DevnetConfig`` turns them into the contract's ``Params`` (the rules' own checks apply), each
node's data shard and behaviour (``--adversaries``: who is dishonest, drawn from the seed), and
refuses combinations that cannot run (encrypted scoring with the copy rule or appeals).
``derelayl.node.devnet`` starts the network from it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from derelayl.agents.relay import check_rechecks
from derelayl.errors import ConfigError
from derelayl.node.runner import DataSpec
from derelayl.protocol.copies import PREDICTIONS_NOT_ENCRYPTED
from derelayl.protocol.params import Params, preset

__all__ = ["CHAINS", "DevnetConfig"]

CHAINS = ("auto", "anvil", "embedded")
CHALLENGE_WINDOW = 10
"""Blocks an unchallenged round waits on a devnet when only a bond is given (5 s of empty
blocks at 0.5 s, time for every trainer to check its scores)."""


@dataclass(frozen=True)
class DevnetConfig:
    nodes: int = 8
    rounds: int = 10
    seed: int = 42
    task: str = "digits"
    base_port: int = 8700
    block_time: float = 0.5
    phase_timeout: int = 40
    """Blocks; at ``block_time`` 0.5 s, a silent miner is replaced after ~20 s of silence."""
    chain_randomness: bool = False
    """Off by default so a devnet equals ``derelayl run`` with the same seed."""
    local_epochs: int = 1
    """Epochs of local training; 0 passes the parent on (measures the protocol alone)."""
    chain: str = "auto"
    """anvil; embedded (py-evm served over JSON-RPC, kept in memory); auto: anvil if installed."""
    min_improvement: int | None = None
    """The improvement rule's margin (correct test cases a child must gain over its parent)."""
    testers: int = 1
    pooled_cases: bool = False
    """Testers score on all testers' cases, fetched from their nodes."""
    copy_rule: bool = False
    """Testers apply the copy rule (``derelayl.protocol.copies``)."""
    improvement_z: int = 0
    """Testers apply the sign test at this many hundredths of a standard deviation (0: off)."""
    appeal_testers: int = 0
    """Appellants drawn when pooled reports disagree (``derelayl.protocol.appeals``)."""
    case_commitments: bool = False
    """Testers commit to their cases' digest in the deposit block (``Params.case_commitments``)."""
    tester_stake: int = 0
    """Units a tester must hold, at stake in a disputed round (``Params.tester_stake``)."""
    challenge_bond: int = 0
    """Units a challenge stakes (``Params.challenge_bond``; 0: no challenges)."""
    challenge_window: int | None = None
    """Blocks an unchallenged round waits before it settles (``Params.challenge_window``;
    ``CHALLENGE_WINDOW`` blocks when only a bond is given)."""
    post_commitments: bool = False
    """Nodes send their commitments straight to the contract too."""
    adversaries: str = ""
    """Dishonest nodes: ``kind=share,…`` (``derelayl.agents.adversaries``; drawn from the seed,
    node 0 stays honest); empty: all honest."""
    fhe: bool = False
    """Encrypted scoring between the nodes (``derelayl.node.fhe``)."""
    rechecks: int = 0
    """With encrypted scoring and challenges: other children each trainer's node re-scores
    under encryption before it decides to challenge (``RelayBrain.rechecks``)."""

    def params(self) -> Params:
        """The reference rules with the options given (a bad combination: ``ConfigError``)."""
        return replace(
            preset("reference"),
            phase_timeout=self.phase_timeout,
            min_improvement=self.min_improvement,
            testers=self.testers,
            pooled_cases=self.pooled_cases,
            copy_rule=self.copy_rule,
            improvement_z=self.improvement_z,
            appeal_testers=self.appeal_testers,
            case_commitments=self.case_commitments,
            tester_stake=self.tester_stake,
            challenge_bond=self.challenge_bond,
            challenge_window=self.challenge_window
            if self.challenge_window is not None
            else (CHALLENGE_WINDOW if self.challenge_bond else 0),
        )

    def kinds(self) -> list[str]:
        """Each node's behaviour (``--adversaries``)."""
        from derelayl.agents.adversaries import BRAIN_KINDS, assign

        shares: dict[str, float] = {}
        for item in (p.strip() for p in self.adversaries.split(",") if p.strip()):
            kind, _, share = item.partition("=")
            try:
                value = float(share)
            except ValueError:
                raise ConfigError(f"--adversaries: {item!r} is not kind=share") from None
            if kind not in BRAIN_KINDS or not 0 < value <= 0.5:
                kinds = ", ".join(BRAIN_KINDS)
                raise ConfigError(f"--adversaries: {item!r}: the kind must be one of {kinds}, the share in (0, 0.5]")
            shares[kind] = value
        return assign(self.nodes, shares, self.seed)

    def data_spec(self, shard: int = 0) -> DataSpec:
        """Shard ``shard`` of the network's data (the task's split over the nodes)."""
        task = self.task if self.task == "digits" else str(Path(self.task).resolve())
        return DataSpec(shard, self.nodes, self.seed, task=task, fhe=self.fhe)

    def validate(self) -> None:
        if not 2 <= self.nodes <= 256:
            raise ConfigError(f"--nodes must be in 2..256, got {self.nodes}")
        if self.rounds < 1:
            raise ConfigError(f"--rounds must be at least 1, got {self.rounds}")
        from derelayl.runtime.tasks import is_config

        if self.task != "digits" and not is_config(self.task):
            raise ConfigError(f"--task must be digits or an experiment config .toml, got {self.task!r}")
        if is_config(self.task):
            from derelayl.experiments.config import load_config

            load_config(Path(self.task))  # a bad file or plugin name stops here
        if not 1024 <= self.base_port <= 65535 - self.nodes:
            raise ConfigError(f"--base-port must leave room for {self.nodes} ports below 65536")
        if not 0 <= self.local_epochs <= 1000:
            raise ConfigError(f"--local-epochs must be in 0..1000, got {self.local_epochs}")
        if self.chain not in CHAINS:
            raise ConfigError(f"--chain must be one of {', '.join(CHAINS)}, got {self.chain!r}")
        self.params()  # the rules' own checks of the protocol options
        if not 0 < self.block_time <= 60:
            raise ConfigError(f"--block-time must be in (0, 60] seconds, got {self.block_time}")
        if self.fhe and self.params().compares_predictions:
            raise ConfigError(PREDICTIONS_NOT_ENCRYPTED)
        self.kinds()  # a bad --adversaries stops here
        check_rechecks(self.rechecks, self.fhe, self.challenge_bond)
        if self.fhe and self.task != "digits":
            from derelayl.fhe.scoring import check_model

            check_model(self.data_spec().learning()[0].spec)  # a model CKKS cannot score stops here
