"""Deposit block: bids, auction, escrow, registration."""

from __future__ import annotations

import numpy as np
import pytest

from derelayl.protocol import Phase, process_block
from vector_cases import deposit_cases, load
from vector_check import check_vector_replays, check_vectors_current


def test_vectors_are_current() -> None:
    check_vectors_current("deposit")


@pytest.mark.parametrize("vector", load("deposit"), ids=lambda v: v["name"])
def test_vector_replays(vector) -> None:
    check_vector_replays(vector)


def test_valid_deposit_escrows_and_matches() -> None:
    # Prepare
    _, state, block = deposit_cases()[0]
    before = state.copy()
    # Execute
    receipt = process_block(state, block)
    # Assert
    pairs = receipt.pairs
    assert state.phase == Phase.COMMIT
    assert state.escrow == int(pairs.trainer_deposit.sum() + pairs.mo_deposit.sum())
    assert len(pairs) == min(len(block.trainer_bids), state.params.k * len(before.live))
    assert (state.balances[pairs.trainer] == before.balances[pairs.trainer] - pairs.trainer_deposit).all()
    # trainers with the highest bids are matched first
    bids = dict(zip(block.trainer_bids.participant.tolist(), block.trainer_bids.amount.tolist(), strict=True))
    unmatched = [bids[t] for t in bids if t not in set(pairs.trainer.tolist())]
    if unmatched:
        assert max(unmatched) <= pairs.trainer_deposit.min()
    # miner paid per deposit
    assert receipt.miner_reward == state.params.reward_per_deposit * len(pairs)


def test_auction_ranks_owners_by_model_score() -> None:
    # Prepare
    _, state, block = deposit_cases()[0]
    # Execute
    receipt = process_block(state, block)
    # Assert: the first owner in matching order holds the best live model
    first = receipt.pairs.live_pos[0]
    assert state.live.score[first] == state.live.score[np.isin(state.live.owner, block.mo_bids.participant)].max()
