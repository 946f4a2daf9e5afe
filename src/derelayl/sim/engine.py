"""One simulated run: the protocol core driven by in-process participants.

The rules are applied by ``derelayl.protocol.process_block`` (fast path) or by a signed
SQLite chain (``Chain.produce``, ``--ledger``): the same function either way, so the two
paths give the same balances. The participants are ``LatentPopulation`` (reference taker
bids, the abstract latent-score model). This module only decides *when* new participants
join and *what* is measured; it does not select, match or pay anyone.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from derelayl.agents.latent import LatentPopulation
from derelayl.errors import ConfigError
from derelayl.learning.latent import SCALE, LatentTrainer
from derelayl.protocol.blocks import Block, CommitReceipt, DepositReceipt, SettleReceipt
from derelayl.protocol.genesis import initialize_state
from derelayl.protocol.transition import process_block
from derelayl.protocol.types import UNIT, Phase
from derelayl.runtime.local import run_seed
from derelayl.sim.config import SimConfig
from derelayl.sim.metrics import Recorder

__all__ = ["RunResult", "joins_in_round", "run_one", "sim_keys"]

I64 = NDArray[np.int64]
OnRound = Callable[[int], None]


def sim_keys(seed: int, start: int, count: int) -> list[bytes]:
    """Cheap 32-byte participant keys for the unsigned fast path (no Ed25519 needed: the
    rules' randomness comes from the state seed, not from keys)."""
    return [hashlib.sha256(f"derelayl-sim-key/{seed}/{i}".encode()).digest() for i in range(start, start + count)]


def joins_in_round(rate: float, round_index: int) -> int:
    """Newcomers registering in round ``round_index``; fractional rates accumulate."""
    return int((round_index + 1) * rate) - int(round_index * rate)


@dataclass
class RunResult:
    scheme: str
    seed: int
    wall_seconds: float
    final_balances: I64
    """Units, participant order."""
    metrics: dict[str, Any]
    contribution: I64
    """Models each participant trained that lie on the lineage of a final live model."""
    reward: I64
    """Lineage payouts received over the run, units."""
    first_hold: I64
    join_row: I64
    initial: int
    head_hash: str | None = None
    sybil: NDArray[np.bool_] | None = None
    """Initial participants run by the Sybil operator."""
    slots: I64 | None = None
    """Training slots taken over the run: by honest participants, by Sybils."""


class _Applier:
    """Apply a block: straight to the state, or signed and stored on a chain."""

    def __init__(self, config: SimConfig, scheme: str, seed: int, ledger_dir: Path | None) -> None:
        self.chain: Any = None
        self.seed = seed
        self.pending: dict[bytes, Any] = {}
        params = config.params_for(scheme)
        n = config.participants
        if ledger_dir is None:
            self.state = initialize_state(params, run_seed(seed), sim_keys(seed, 0, n))
            return
        from derelayl.ledger.chain import Chain
        from derelayl.ledger.crypto import derive_keys
        from derelayl.ledger.sqlite import SQLiteLedger

        ledger_dir.mkdir(parents=True, exist_ok=True)
        path = ledger_dir / "chain.sqlite"
        ledger = SQLiteLedger(path)
        if ledger.height():
            ledger.close()
            raise ConfigError(f"{path} already holds a chain; give an empty --ledger folder")
        self.keypairs = dict(enumerate(derive_keys(seed, n)))
        self.chain = Chain.create(
            ledger, params, run_seed(seed), [k.public for k in self.keypairs.values()], self.keypairs[0]
        )
        self.state = self.chain.state

    def new_keys(self, start: int, count: int) -> tuple[bytes, ...]:
        if self.chain is None:
            return tuple(sim_keys(self.seed, start, count))
        from derelayl.ledger.crypto import derive_keys

        pairs = derive_keys(self.seed, count, start=start)
        self.pending = {kp.public: kp for kp in pairs}
        for offset, kp in enumerate(pairs):
            self.keypairs[start + offset] = kp
        return tuple(self.pending)

    def apply(self, block: Block) -> Any:
        if self.chain is None:
            return process_block(self.state, block)
        receipt = self.chain.produce(block, self.keypairs, join_keys=self.pending)
        self.pending = {}
        self.state = self.chain.state
        return receipt

    def close(self) -> str | None:
        if self.chain is None:
            return None
        self.chain.ledger.close()
        return str(self.chain.head_hash.hex())


def run_one(
    config: SimConfig,
    scheme: str,
    seed: int,
    trace_dir: Path | None = None,
    ledger_dir: Path | None = None,
    on_round: OnRound | None = None,
) -> RunResult:
    """Simulate ``config.rounds`` rounds of one (scheme, seed)."""
    start = time.perf_counter()
    applier = _Applier(config, scheme, seed, ledger_dir)
    sybil = sybil_mask(config.participants, config.sybil_share, seed)
    net = LatentPopulation(LatentTrainer(seed, config.success_rate, config.gain_mean, config.gain_std), sybil=sybil)
    slots = np.zeros(2, dtype=np.int64)  # training slots taken by honest participants, by Sybils
    width, rounds = config.width, config.rounds
    sample = np.unique(
        np.linspace(0, config.participants - 1, min(config.sample_lines, config.participants)).astype(np.int64)
    )
    traces: tuple[Any, Any] = (None, None)
    if trace_dir is not None:
        trace_dir.mkdir(parents=True, exist_ok=True)
        traces = (
            np.lib.format.open_memmap(trace_dir / "balances.npy", "w+", np.float64, (rounds, width)),
            np.lib.format.open_memmap(trace_dir / "versions.npy", "w+", np.int64, (rounds, width)),
        )
    rec = Recorder(rounds, width, sample, initial=config.participants, balance_trace=traces[0], version_trace=traces[1])
    reward = np.zeros(width, dtype=np.int64)
    selected = np.zeros(width, dtype=np.int64)
    generations: list[tuple[I64, I64, NDArray[np.int32]]] = []
    every = max(1, rounds // 200)
    try:
        for r in range(rounds):
            state = applier.state
            n_new = joins_in_round(config.join_rate, r)
            joins = applier.new_keys(state.n_participants, n_new) if n_new else ()
            commit: CommitReceipt | None = None
            settle: SettleReceipt | None = None
            for _ in range(4):
                state = applier.state
                block = net.next_block(state, joins) if state.phase == Phase.DEPOSIT else net.next_block(state)
                receipt = applier.apply(block)
                if isinstance(receipt, DepositReceipt):
                    trainers = receipt.pairs.trainer
                    rider = int(sybil[trainers[trainers < sybil.size]].sum())
                    slots += (trainers.size - rider, rider)
                elif isinstance(receipt, CommitReceipt):
                    commit = receipt
                elif isinstance(receipt, SettleReceipt):
                    settle = receipt
            state = applier.state
            assert commit is not None and settle is not None
            n = state.n_participants
            reward[:n] += settle.lineage_payout
            np.add.at(selected, settle.selected_owner, 1)
            if commit.model_id.size:
                pos = settle.selected_model - commit.model_id[0]
                generations.append(
                    (settle.selected_model, commit.parent_model[pos], settle.selected_owner.astype(np.int32))
                )
            else:
                generations.append(
                    (settle.selected_model, settle.selected_model, settle.selected_owner.astype(np.int32))
                )
            best = int(state.live.score.max()) / SCALE if len(state.live) else float("nan")
            rec.record(
                state.balances,
                state.held_version,
                state.trained_version,
                reward[:n],
                selected[:n],
                state.latest_version,
                state.minted,
                state.burned,
                len(state.live),
                best,
            )
            if on_round is not None and ((r + 1) % every == 0 or r + 1 == rounds):
                on_round(r + 1)
        rec.flush()
    finally:
        rec.close()
        head = applier.close()
    for trace in traces:
        if trace is not None:
            trace.flush()
    final = applier.state
    contribution = winning_lineage_counts(generations, final.live.model_id, width)
    return RunResult(
        scheme=scheme,
        seed=seed,
        wall_seconds=time.perf_counter() - start,
        final_balances=final.balances.copy(),
        metrics=rec.out,
        contribution=contribution,
        reward=reward,
        first_hold=rec.first_hold,
        join_row=rec.join_row,
        initial=config.participants,
        head_hash=head,
        sybil=sybil,
        slots=slots,
    )


def sybil_mask(participants: int, share: float, seed: int) -> NDArray[np.bool_]:
    """``round(share * participants)`` of participants 1.. (the genesis owner stays honest),
    drawn from the seed."""
    mask = np.zeros(participants, dtype=bool)
    count = min(round(share * participants), participants - 1)
    if count:
        rng = np.random.default_rng([seed, 0x5B1])
        mask[1 + rng.permutation(participants - 1)[:count]] = True
    return mask


def winning_lineage_counts(generations: list[tuple[I64, I64, NDArray[np.int32]]], live: I64, width: int) -> I64:
    """Per participant: how many of its models are ancestors (or are) of a final live model.

    ``generations[g]`` = (selected model ids, their parent ids, their owners) of round g.
    Walks back one generation per round, marking ancestors in a flag array indexed by model
    id (ids are dense): O(models selected), no sorting.
    """
    counts = np.zeros(width, dtype=np.int64)
    top = max([int(live.max(initial=0))] + [int(ids.max(initial=0)) for ids, _, _ in generations])
    marked = np.zeros(top + 1, dtype=bool)
    marked[live] = True
    for ids, parents, owners in reversed(generations):
        if ids.size == 0:
            continue
        on = marked[ids]
        if on.any():
            np.add.at(counts, owners[on], 1)
            marked[parents[on]] = True
    return counts


def balances_coins(result: RunResult) -> NDArray[np.float64]:
    return result.final_balances / UNIT
