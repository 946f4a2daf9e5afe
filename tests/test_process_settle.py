"""Settlement block: selection, refunds, forfeits, lineage and miner rewards, next owners."""

from __future__ import annotations

import numpy as np
import pytest

from derelayl.protocol import Phase, process_block
from vector_cases import load, settle_cases
from vector_check import check_vector_replays, check_vectors_current


def test_vectors_are_current() -> None:
    check_vectors_current("settle")


@pytest.mark.parametrize("vector", load("settle"), ids=lambda v: v["name"])
def test_vector_replays(vector) -> None:
    check_vector_replays(vector)


def test_top_fraction_selected_and_become_owners() -> None:
    # Prepare
    _, state, block = settle_cases()[0]
    before = state.copy()
    n = len(before.commits)
    # Execute
    receipt = process_block(state, block)
    # Assert
    k = before.params.n_selected(n)
    assert receipt.selected_model.size == k
    best = np.sort(before.commits.score)[::-1][:k]
    chosen = before.commits.score[np.isin(before.commits.model_id, receipt.selected_model)]
    assert sorted(chosen) == sorted(best)
    assert list(state.live.model_id) == list(receipt.selected_model)
    assert set(state.roles.model_owners.tolist()) == set(receipt.selected_owner.tolist())
    assert state.phase == Phase.DEPOSIT and state.round == before.round + 1
    assert state.escrow == 0
    assert receipt.refunded + receipt.burned == before.escrow


def test_lineage_reward_pays_owner_and_every_ancestor() -> None:
    # Prepare: round 1 settlement; lineages are child -> round-0 model -> genesis
    _, state, block = settle_cases()[1]
    # Execute
    receipt = process_block(state, block)
    # Assert: each selected model pays 3 lineage nodes (itself, parent, genesis)
    assert receipt.lineage_minted == 3 * receipt.selected_model.size * state.params.lineage_reward
    assert receipt.lineage_payout[0] >= receipt.selected_model.size * state.params.lineage_reward
