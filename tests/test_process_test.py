"""Testing block: fresh test cases and one score per committed model."""

from __future__ import annotations

import pytest

from derelayl.protocol import Phase, process_block
from vector_cases import load, scoring_cases
from vector_check import check_vector_replays, check_vectors_current


def test_vectors_are_current() -> None:
    check_vectors_current("test")


@pytest.mark.parametrize("vector", load("test"), ids=lambda v: v["name"])
def test_vector_replays(vector) -> None:
    check_vector_replays(vector)


def test_scores_recorded_and_tester_paid() -> None:
    # Prepare
    _, state, block = scoring_cases()[0]
    before = state.copy()
    # Execute
    receipt = process_block(state, block)
    # Assert
    assert state.phase == Phase.SETTLE
    assert list(state.commits.score) == list(block.scores)
    p = state.params
    assert receipt.miner_reward == p.reward_per_test_case * p.test_cases + p.reward_per_tested_model * len(
        state.commits
    )
    assert state.balances[block.miner] == before.balances[block.miner] + receipt.miner_reward
