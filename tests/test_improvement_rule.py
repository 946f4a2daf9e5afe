"""The improvement rule (``min_improvement``): testers also score the live models, and a child
is selected only if its median score is at least its parent's + the margin. Off by default:
then testers score the committed models only, and states, roots and vectors are as before."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from derelayl.agents.latent import LatentPopulation
from derelayl.errors import ConfigError, MalformedError
from derelayl.learning.latent import LatentTrainer
from derelayl.protocol import Params, Phase, blocks, initialize_state, process_block
from derelayl.protocol.digest import compute_state_root
from derelayl.protocol.serialize import state_from_dict, state_to_dict
from derelayl.protocol.state import State


def _at_test(params: Params, participants: int = 16, seed: int = 3) -> tuple[State, blocks.TestBlock, LatentPopulation]:
    """A state at a test phase whose children have at least two different parents."""
    keys = [hashlib.sha256(f"k{i}".encode()).digest() for i in range(participants)]
    state = initialize_state(params, b"\x05" * 32, keys)
    population = LatentPopulation(LatentTrainer(seed=seed))
    while True:
        if state.phase == Phase.TEST and len(set(state.pairs.live_pos[state.commit_pair].tolist())) >= 2:
            block = population.next_block(state)
            assert isinstance(block, blocks.TestBlock)
            return state, block, population
        process_block(state, population.next_block(state))


def _scores(state: State, child: int, parent_of_first: int, margin_gap: int) -> np.ndarray:
    """Children 10, parents 3; children of the first child's parent score parent + gap and that
    parent ``parent_of_first``."""
    n = len(state.commits)
    parent = state.pairs.live_pos[state.commit_pair]
    scores = np.full(n + len(state.live), 3, dtype=np.int64)
    scores[:n] = child
    scores[n + parent[0]] = parent_of_first
    scores[np.flatnonzero(parent == parent[0])] = parent_of_first + margin_gap
    return scores


@pytest.mark.parametrize(("gap", "selected"), [(0, False), (1, False), (2, True)])
def test_a_child_needs_its_parent_plus_the_margin(gap: int, selected: bool) -> None:
    # Prepare: margin 2; the first parent's children score parent + gap, above everyone else
    state, honest, population = _at_test(Params(k=4, test_cases=5, min_improvement=2))
    n = len(state.commits)
    scores = _scores(state, 10, 100, gap)
    riders = {
        int(o)
        for o, p in zip(state.commits.owner, state.pairs.live_pos[state.commit_pair], strict=True)
        if p == state.pairs.live_pos[state.commit_pair[0]]
    }
    # Execute
    process_block(state, dataclasses.replace(honest, scores=scores))
    eligible = state.commit_eligible.copy()
    receipt = process_block(state, population.next_block(state))
    # Assert: passing children (the best scores) are selected, failing ones never
    assert eligible.sum() == (n if selected else n - len(riders))
    assert bool(riders & set(receipt.selected_owner.tolist())) is selected
    assert receipt.selected_model.size == min(Params().n_selected(n), int(eligible.sum()))


def test_reports_must_score_the_live_models_too() -> None:
    state, honest, _ = _at_test(Params(k=4, test_cases=5, min_improvement=1))
    n = len(state.commits)
    with pytest.raises(MalformedError, match=f"scores for {n} committed models and {len(state.live)} live models"):
        process_block(state.copy(), dataclasses.replace(honest, scores=honest.scores[:n]))


def test_without_the_rule_reports_score_the_committed_models_only() -> None:
    state, honest, _ = _at_test(Params(k=4, test_cases=5))
    n = len(state.commits)
    assert honest.scores.size == n
    longer = np.concatenate([honest.scores, np.zeros(len(state.live), dtype=np.int64)])
    with pytest.raises(MalformedError):
        process_block(state.copy(), dataclasses.replace(honest, scores=longer))


def test_eligibility_is_in_the_state_root_and_survives_serialization() -> None:
    state, honest, _ = _at_test(Params(k=4, test_cases=5, min_improvement=1))
    a = state.copy()
    process_block(a, dataclasses.replace(honest, scores=_scores(a, 10, 100, 0)))
    # same scores of children, different eligibility: different roots
    c = state.copy()
    scores = _scores(c, 10, 100, 0)
    scores[len(c.commits) :] = -(10**6)
    process_block(c, dataclasses.replace(honest, scores=scores))
    assert (c.commits.score == a.commits.score).all() and (c.commit_eligible != a.commit_eligible).any()
    assert compute_state_root(c) != compute_state_root(a)
    again = state_from_dict(state_to_dict(a))
    assert (again.commit_eligible == a.commit_eligible).all() and compute_state_root(again) == compute_state_root(a)


@pytest.mark.parametrize("value", [0, -1, True, 2.5, 2**63])
def test_the_margin_is_a_positive_integer(value: object) -> None:
    with pytest.raises(ConfigError, match="min_improvement must be an integer"):
        Params(min_improvement=value)  # type: ignore[arg-type]


def test_params_without_the_rule_do_not_name_it() -> None:
    assert "min_improvement" not in Params().to_dict()
    assert Params.from_dict(Params(min_improvement=3).to_dict()).min_improvement == 3


@pytest.mark.parametrize("value", [-1, True, 2.5, 2**63])
def test_the_minimum_deposit_is_an_amount(value: object) -> None:
    with pytest.raises(ConfigError, match="min_trainer_bid must be an integer of units"):
        Params(min_trainer_bid=value)  # type: ignore[arg-type]


def test_new_defences_are_named_only_when_set() -> None:
    names = set(Params().to_dict())
    assert not names & {"min_improvement", "pooled_cases", "min_trainer_bid"}
    on = Params(min_improvement=1, pooled_cases=True, min_trainer_bid=5)
    assert Params.from_dict(on.to_dict()) == on


def test_a_trainer_who_cannot_afford_the_minimum_deposit_does_not_bid() -> None:
    keys = [hashlib.sha256(f"m{i}".encode()).digest() for i in range(12)]
    state = initialize_state(Params(k=2, test_cases=5, min_trainer_bid=1000), b"\x01" * 32, keys)
    population = LatentPopulation(LatentTrainer(seed=1))
    first = population.next_block(state)  # round 0: nobody has coins yet
    assert isinstance(first, blocks.DepositBlock) and len(first.trainer_bids) == 0
    while state.round < 6:
        block = population.next_block(state)
        if isinstance(block, blocks.DepositBlock):
            assert (block.trainer_bids.amount >= 1000).all()
        process_block(state, block)
    assert state.latest_version > 0  # testers' and miners' rewards let trainers in later
