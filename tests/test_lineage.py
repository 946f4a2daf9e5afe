"""Lineage rewards: the depth-independent accounting equals the naive ancestor walk."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_state
from derelayl.agents.latent import LatentPopulation
from derelayl.learning.latent import LatentTrainer
from derelayl.protocol import CommitReceipt, Params, SettleReceipt, process_block
from derelayl.protocol.lineage import LineageTree, compute_multipliers


def naive_payout(
    parent: dict[int, int], owner: dict[int, int], selected: list[int], mults: tuple[int, ...], n: int
) -> np.ndarray:
    out = np.zeros(n, dtype=np.int64)
    for model in selected:
        distance, current = 0, model
        while current >= 0:
            out[owner[current]] += mults[min(distance, len(mults) - 1)]
            current, distance = parent[current], distance + 1
    return out


@st.composite
def generations(draw: st.DrawFn) -> tuple[int, list[tuple[list[int], list[int]]]]:
    """Random forests: each generation picks parents among the previous live generation."""
    n = draw(st.integers(2, 12))
    gens = []
    width = 1
    for _ in range(draw(st.integers(1, 25))):
        size = draw(st.integers(0, 6))
        parents = [draw(st.integers(0, width - 1)) for _ in range(size)]
        owners = [draw(st.integers(0, n - 1)) for _ in range(size)]
        gens.append((owners, parents))
        if size:
            width = size
    return n, gens


@settings(max_examples=200, deadline=None)
@given(generations(), st.sampled_from(["lineage", "decay"]), st.sampled_from([(1, 2), (2, 3), (9, 10)]))
def test_tree_payouts_equal_naive_walk(case, scheme, decay) -> None:
    # Prepare
    n, gens = case
    mults = compute_multipliers(scheme, 1000, *decay)
    tree = LineageTree.genesis(0, n, mults)
    parent, owner = {0: -1}, {0: 0}
    live_ids, next_id = [0], 1
    for owners, parents in gens:
        ids = list(range(next_id, next_id + len(owners)))
        next_id += len(owners)
        for i, o, p in zip(ids, owners, parents, strict=True):
            parent[i], owner[i] = live_ids[p], o
        # Execute
        got = tree.settle(np.array(owners, dtype=np.int64), np.array(parents, dtype=np.int64))
        # Assert
        assert np.array_equal(got, naive_payout(parent, owner, ids, mults, n))
        if owners:
            live_ids = ids


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(4, 40),
    k=st.integers(1, 4),
    s=st.sampled_from(["1/4", "1/2", "3/4", "1"]),
    scheme=st.sampled_from(["lineage", "decay"]),
    payee=st.sampled_from(["model_owner", "trainer"]),
    seed=st.integers(0, 2**16),
)
def test_protocol_lineage_equals_naive_walk(n, k, s, scheme, payee, seed) -> None:
    # Prepare
    params = Params(
        k=k, select_fraction=s, test_cases=5, reward_scheme=scheme, royalty_decay="3/4", lineage_payee=payee
    )
    state = make_state(n, params, seed.to_bytes(32, "big"))
    net = LatentPopulation(LatentTrainer(seed=seed))
    # payee of each model: its trainer, or the model owner who handed out its parent (the
    # parent's holder); the genesis owner for the genesis model
    parent, holder, paid = {0: -1}, {0: 0}, {0: 0}
    for _ in range(4 * 30):
        # Execute
        receipt = process_block(state, net.next_block(state))
        if isinstance(receipt, CommitReceipt):
            for mid, pid, trainer in zip(receipt.model_id, receipt.parent_model, state.commits.owner, strict=True):
                parent[int(mid)], holder[int(mid)] = int(pid), int(trainer)
                paid[int(mid)] = int(trainer) if payee == "trainer" else holder[int(pid)]
        # Assert
        if isinstance(receipt, SettleReceipt):
            expected = naive_payout(
                parent, paid, [int(m) for m in receipt.selected_model], state.lineage.multipliers, state.n_participants
            )
            assert np.array_equal(receipt.lineage_payout, expected)


def test_decay_multipliers_reach_zero() -> None:
    assert compute_multipliers("decay", 1_000_000, 1, 2)[-1] == 0
    assert compute_multipliers("decay", 1_000_000, 1, 2)[:3] == (1_000_000, 500_000, 250_000)
    assert compute_multipliers("lineage", 7, 1, 2) == (7,)


def test_kept_levels_stay_bounded_over_long_runs() -> None:
    # Prepare: the reference parameters on 64 participants for 400 rounds
    state = make_state(64, Params(test_cases=5))
    net = LatentPopulation(LatentTrainer(seed=1))
    depths = []
    # Execute
    while state.round < 400:
        process_block(state, net.next_block(state))
        depths.append(state.lineage.depth_kept)
    # Assert: lineage depth grows to 400 but the kept part does not
    assert max(depths[-400:]) < 60
    assert state.lineage.trunk.sum() > 300


def test_huge_rewards_stay_exact_beyond_float_precision() -> None:
    # Prepare: a reward so large that per-round sums pass 2**53 units
    reward = 2**52
    tree = LineageTree.genesis(0, 3, compute_multipliers("lineage", reward, 1, 2))
    tree.settle(np.array([1, 2]), np.array([0, 0]))
    # Execute
    got = tree.settle(np.array([1, 2, 1]), np.array([0, 1, 1]))
    # Assert: genesis owner 0 gets 3 rewards, owner 1: 1 (own) + 1 (parent of #1) + 1 (own #3), owner 2: 1 + 2
    assert got.tolist() == [3 * reward, 3 * reward, 3 * reward]
