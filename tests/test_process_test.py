"""Testing block: fresh test cases and one score per committed model."""

from __future__ import annotations

import pytest

from derelayl.protocol import Phase, process_block
from vector_cases import co_tester_cases, load, scoring_cases
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


def test_one_lying_tester_of_three_cannot_move_the_ranking() -> None:
    # Prepare: three testers; one co-tester inflates every score by 100
    cases = dict((name, (state, block)) for name, state, block in co_tester_cases())
    state, honest = cases["three_testers_valid"]
    _, lied = cases["three_testers_one_lies_median_holds"]
    after_honest, after_lie = state.copy(), state.copy()
    # Execute
    process_block(after_honest, honest)
    receipt = process_block(after_lie, lied)
    # Assert: the median ignores the outlier, and each co-tester is paid like the testing miner
    assert list(after_lie.commits.score) == list(after_honest.commits.score)
    assert receipt.co_tester_reward == 2 * receipt.miner_reward


def test_co_testers_are_distinct_miners() -> None:
    state, _ = co_tester_cases()[0][1:]
    testers = state.roles.testers.tolist()
    assert len(testers) == 3 and len(set(testers)) == 3
    assert testers[0] == state.roles.block_miners[2]
    assert set(testers) <= set(state.roles.miners.tolist())
