"""Commit (encryption) block: commitments before any test case is known."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from derelayl.protocol import Phase, process_block
from derelayl.protocol.producer import compute_includable_commitments
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


def test_miner_filter_keeps_a_block_valid_despite_duplicate_submissions() -> None:
    # Prepare: honest submissions plus a second trainer resubmitting the first one's digest,
    # a trainer submitting twice, and an unmatched participant
    _, state, block = commit_cases()[0]
    trainers = [int(t) for t in block.trainers]
    unmatched = next(i for i in range(state.n_participants) if i not in set(state.pairs.trainer.tolist()))
    submitted_t = np.array([*trainers, trainers[0], unmatched], dtype=np.int64)
    digests = list(block.commitments)
    digests[1] = digests[0]  # trainer 2 copies trainer 1's model
    submitted_d = (*digests, b"\x07" * 32, b"\x08" * 32)
    # Execute
    keep_t, keep_d = compute_includable_commitments(state, submitted_t, submitted_d)
    receipt = process_block(state, dataclasses.replace(block, trainers=keep_t, commitments=keep_d))
    # Assert: the copy, the second submission and the outsider are left out; the block is valid
    assert keep_t.tolist() == [trainers[0], *trainers[2:]]
    assert receipt.model_id.size == len(trainers) - 1
