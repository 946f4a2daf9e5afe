"""The tester stake (``tester_stake``): testers are drawn from the miners holding it, a drawn
tester's coins stay put until its round settles, and a tester the appeal finds lying forfeits
its stake with its held reward to the appellants who showed it."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import numpy as np
import pytest

from derelayl.agents.latent import LatentPopulation
from derelayl.errors import BalanceError, ConfigError
from derelayl.learning.latent import LatentTrainer
from derelayl.protocol import Params, Phase, blocks, initialize_state, process_block
from derelayl.protocol.accounts import process_transfer
from derelayl.protocol.digest import compute_state_root
from derelayl.protocol.roles import assign_roles
from derelayl.protocol.serialize import state_from_dict, state_to_dict
from derelayl.protocol.state import State
from derelayl.protocol.transition import total_money
from test_appeals import _lie

STAKE = 5_000_000
PARAMS = Params(k=2, test_cases=5, testers=5, pooled_cases=True, appeal_testers=3, tester_stake=STAKE)
KEYS = [hashlib.sha256(f"s{i}".encode()).digest() for i in range(24)]


def _give(state: State, who: np.ndarray, balance: int) -> None:
    """Set balances as if minted (the books stay balanced)."""
    state.minted += int(balance * len(who) - state.balances[who].sum())
    state.balances[who] = balance


def _at_test(
    params: Params = PARAMS, apply: Callable[[State, blocks.Block], object] = process_block
) -> tuple[State, blocks.TestBlock, LatentPopulation]:
    """A state at a test phase with committed models, every participant holding 2 stakes (so
    every tester is staked in full); ``apply`` applies each block on the way."""
    state = initialize_state(params, b"\x07" * 32, KEYS)
    _give(state, np.arange(state.n_participants), 2 * STAKE)
    population = LatentPopulation(LatentTrainer(seed=4))
    while state.phase != Phase.TEST or len(state.commits) < 2:
        apply(state, population.next_block(state))
    block = population.next_block(state)
    assert isinstance(block, blocks.TestBlock) and len(block.co_testers) == 4
    return state, block, population


def test_the_stake_needs_appeals_and_is_an_amount() -> None:
    with pytest.raises(ConfigError, match="tester_stake needs appeal_testers"):
        Params(testers=3, pooled_cases=True, tester_stake=1)
    for bad in (-1, 1.5, "5", True, 2**63):
        with pytest.raises(ConfigError, match="tester_stake must be an integer of units"):
            Params(testers=3, pooled_cases=True, appeal_testers=3, tester_stake=bad)
    assert "tester_stake" not in Params().to_dict()  # chains without the stake keep their params
    assert Params.from_dict(PARAMS.to_dict()) == PARAMS


def test_testers_are_drawn_from_the_miners_holding_the_stake_once_enough_do() -> None:
    state = initialize_state(PARAMS, b"\x03" * 32, KEYS)
    unstaked = dataclasses.replace(state, params=dataclasses.replace(PARAMS, tester_stake=0))
    # nobody holds the stake: the draw is the one without it
    assert assign_roles(state).testers.tolist() == assign_roles(unstaked).testers.tolist()
    miners = assign_roles(state).miners
    rich = miners[::2][: PARAMS.testers]  # exactly `testers` miners hold it
    _give(state, rich, STAKE)
    roles = assign_roles(state)
    assert sorted(roles.testers.tolist()) == sorted(rich.tolist())
    assert roles.block_miners[2] == roles.testers[0]
    # one fewer than the seats: back to every miner
    _give(state, rich[:1], STAKE - 1)
    assert assign_roles(state).testers.tolist() == assign_roles(unstaked).testers.tolist()


def test_a_drawn_tester_cannot_move_its_coins_until_the_round_settles() -> None:
    state, _, _ = _at_test()
    assert state.roles is not None
    tester = int(state.roles.testers[1])
    other = int(np.setdiff1d(np.arange(state.n_participants), state.roles.testers)[0])
    before = state.balances.copy()
    with pytest.raises(BalanceError, match=f"participant {tester} tests this round"):
        process_transfer(state, blocks.Transfer(tester, other, 1))
    assert (state.balances == before).all()
    process_transfer(state, blocks.Transfer(other, tester, 1))  # to a tester, or between others: fine
    assert state.balances[tester] == before[tester] + 1


def test_a_tester_the_appeal_finds_lying_forfeits_its_stake_to_the_appellants() -> None:
    # Prepare: 3 of 5 testers lie for the worst model; a twin state sees the honest test block
    state, honest, population = _at_test()
    n = len(state.commits)
    lying = _lie(honest, 3, int(np.argmin(honest.scores[:n])))
    liars = [r.tester for r in lying.co_testers[1:]]
    truthful = [lying.miner, lying.co_testers[0].tester]
    fair, before, escrow = state.copy(), state.balances.copy(), state.escrow  # (escrow: the deposits)
    process_block(fair, honest)
    process_block(fair, population.next_block(fair))
    # Execute: the test block holds every reward and every stake
    receipt = process_block(state, lying)
    assert state.dispute is not None and state.dispute.staked.tolist() == [STAKE] * 5
    assert all(state.balances[t] == before[t] - STAKE for t in (*truthful, *liars))
    assert state.escrow == escrow + receipt.held + 5 * STAKE
    again = state_from_dict(state_to_dict(state))  # the stakes survive a round trip
    assert again.dispute is not None and again.dispute.staked.tolist() == [STAKE] * 5
    assert compute_state_root(again) == compute_state_root(state)
    appellants = state.dispute.appellants.tolist()
    result = process_block(state, population.next_block(state))
    # Assert: truthful testers end as in the honest round; each liar a reward and its stake
    # short; each appellant a reward and a third of the three liars' rewards and stakes up
    amount = PARAMS.reward_per_test_case * PARAMS.test_cases + PARAMS.reward_per_tested_model * n
    gained, fair_gained = state.balances - before, fair.balances - before
    assert result.forfeited == 3 * (amount + STAKE)
    assert all(gained[t] == fair_gained[t] for t in truthful)
    assert all(gained[t] == fair_gained[t] - amount - STAKE for t in liars)
    assert all(gained[a] == fair_gained[a] + amount + amount + STAKE for a in appellants)
    assert state.escrow == 0 and state.dispute is None
    supply, held = total_money(state)
    assert supply == held


def test_a_tester_with_less_than_the_stake_risks_what_it_has() -> None:
    # Prepare: fewer than the seats hold the stake (early rounds): testers are drawn from
    # every miner, and one liar holds a single unit
    params = dataclasses.replace(PARAMS, tester_stake=10**15)
    state, honest, population = _at_test(params)
    lying = _lie(honest, 1, 0)
    liar = lying.co_testers[-1].tester
    _give(state, np.array([liar]), 1)
    # Execute
    process_block(state, lying)
    # Assert: every stake is the tester's whole balance; the liar's single unit is forfeited
    assert state.dispute is not None
    assert state.dispute.staked[-1] == 1 and state.balances[liar] == 0
    process_block(state, population.next_block(state))
    assert state.balances[liar] == 0
    assert total_money(state)[0] == total_money(state)[1]
