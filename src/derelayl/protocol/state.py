"""The one state object the rules read and write.

Participants are indexed in registration order; per-participant values live in
``numpy.int64`` arrays of that length. The state holds only what the rules still need:
balances, escrow, the live models (held by this round's model owners), this round's
matched pairs and commitments, and the lineage accounting. The full model history is the
chain of blocks (see ``derelayl.ledger``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from derelayl.protocol.lineage import LineageTree
from derelayl.protocol.params import Params
from derelayl.protocol.types import Phase

__all__ = ["KEY_SIZE", "Dispute", "Models", "Pairs", "Roles", "State", "empty_i64"]

KEY_SIZE = 32
I64 = NDArray[np.int64]


def empty_i64() -> I64:
    return np.zeros(0, dtype=np.int64)


@dataclass
class Roles:
    """Who does what this round. Block miners: one per block kind (deposit..settle)."""

    model_owners: I64
    trainers: I64
    miners: I64
    block_miners: tuple[int, int, int, int]
    testers: I64 = field(default_factory=empty_i64)
    """Who scores the round's models: the testing miner first, then co-testers (miners)."""


@dataclass
class Models:
    """A set of models as parallel arrays (the live ones, or this round's commitments)."""

    model_id: I64 = field(default_factory=empty_i64)
    owner: I64 = field(default_factory=empty_i64)
    """Holder: the trainer that produced it (genesis: the genesis owner)."""
    version: I64 = field(default_factory=empty_i64)
    score: I64 = field(default_factory=empty_i64)
    """Test score (an integer; higher is better). Zero until the model is tested."""

    def __len__(self) -> int:
        return int(self.model_id.size)

    def take(self, index: NDArray[np.int64]) -> Models:
        return Models(self.model_id[index], self.owner[index], self.version[index], self.score[index])


@dataclass
class Pairs:
    """Matched (model owner, trainer) pairs of the round and their escrowed deposits."""

    live_pos: I64 = field(default_factory=empty_i64)
    """Position of the model owner's model in ``State.live`` (the parent)."""
    model_owner: I64 = field(default_factory=empty_i64)
    mo_deposit: I64 = field(default_factory=empty_i64)
    trainer: I64 = field(default_factory=empty_i64)
    trainer_deposit: I64 = field(default_factory=empty_i64)

    def __len__(self) -> int:
        return int(self.trainer.size)


@dataclass
class Dispute:
    """The test rewards a test block holds until its settle block: in a round whose pooled
    reports disagreed (with appeals on), and in every round with challenges on. The appeal is
    ``open`` from the disagreement or from a challenge on."""

    testers: I64
    """Who reported, in block order (the testing miner first)."""
    rows: I64
    """Their reports, one row each (scores of the committed, then the live models)."""
    held: I64
    """Each one's test reward, held in escrow until the appeal decides."""
    appellants: I64
    """Drawn after the test block (or at the challenge) to re-score the pool, in draw order
    (may be empty; empty while no appeal is open)."""
    staked: I64
    """With ``tester_stake``: each one's stake (its balance, up to the stake), held in escrow
    with its reward (zeros without it)."""
    open: bool = True
    """Whether an appeal is open: the appellants must report in the settle block."""
    challenger: int = -1
    """Who challenged the round (-1: nobody); its ``bond`` is in escrow until the settlement."""
    bond: int = 0


@dataclass
class State:
    params: Params
    keys: list[bytes]
    key_index: dict[bytes, int]
    balances: I64
    beacon: bytes
    """The randomness every draw comes from (``protocol.beacon``); blocks mix theirs in."""
    held_version: I64
    """Statistic (no rule reads it): newest model version each participant holds (-1: none)."""
    trained_version: I64
    """Statistic: newest version each participant has trained and committed itself (-1: none)."""
    round: int = 0
    phase: Phase = Phase.DEPOSIT
    phase_start: int = 0
    """Ledger time (block number) at which the current phase began."""
    escrow: int = 0
    minted: int = 0
    burned: int = 0
    latest_version: int = 0
    next_model_id: int = 1
    live: Models = field(default_factory=Models)
    """Models held by this round's model owners, in the protocol's rank order (best first)."""
    roles: Roles | None = None
    pairs: Pairs = field(default_factory=Pairs)
    commits: Models = field(default_factory=Models)
    commit_pair: I64 = field(default_factory=empty_i64)
    """For each commitment: its position in ``pairs``."""
    commit_eligible: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """For each commitment, after the test block: may it be selected (with the improvement rule,
    its median score is at least its parent's + ``min_improvement``; without it, always)."""
    commitments: list[bytes] = field(default_factory=list)
    posted: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    """Commit phase: trainer -> (digest, signature) of the commitments posted straight to the
    ledger (``PostedCommitment``), which the commit block must carry."""
    case_digests: dict[int, bytes] = field(default_factory=dict)
    """With ``Params.case_commitments``, from the deposit block to the settlement: tester -> the
    digest of the cases it committed to in the deposit block (its report must name it)."""
    dispute: Dispute | None = None
    """Settle phase of a round whose testers disagreed (appeals on), or of any round with
    challenges on: the held test rewards, and what an open appeal decides."""
    lineage: LineageTree = field(default_factory=lambda: LineageTree(multipliers=(0,)))

    @property
    def n_participants(self) -> int:
        return len(self.keys)

    @property
    def appeal_open(self) -> bool:
        """Settle phase of a round whose appeal is open: its appellants re-score the pool."""
        return self.dispute is not None and self.dispute.open

    @property
    def supply(self) -> int:
        """Coins in circulation: minted - burned (= balances + escrow)."""
        return self.minted - self.burned

    def copy(self) -> State:
        return copy.deepcopy(self)
