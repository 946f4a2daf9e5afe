"""Commit (encryption) block: commitments before any test case is known."""

from __future__ import annotations

import pytest

from derelayl.protocol import Phase, process_block
from vector_cases import commit_cases, load
from vector_check import check_vector_replays, check_vectors_current


def test_vectors_are_current() -> None:
    check_vectors_current("commit")


@pytest.mark.parametrize("vector", load("commit"), ids=lambda v: v["name"])
def test_vector_replays(vector) -> None:
    check_vector_replays(vector)


def test_commit_registers_models_with_parents_and_versions() -> None:
    # Prepare
    _, state, block = commit_cases()[0]
    before = state.copy()
    # Execute
    receipt = process_block(state, block)
    # Assert
    assert state.phase == Phase.TEST
    assert list(state.commits.owner) == list(block.trainers)
    assert (state.commits.version == before.round + 1).all()
    assert (state.held_version[block.trainers] == before.round + 1).all()
    assert state.held_version[block.miner] == before.round + 1  # reference: encryption miner holds copies
    pair = {int(t): i for i, t in enumerate(before.pairs.trainer)}
    for trainer, parent in zip(block.trainers, receipt.parent_model, strict=True):
        assert parent == before.live.model_id[before.pairs.live_pos[pair[int(trainer)]]]
    assert state.commitments == list(block.commitments)
