"""The tester stake (``tester_stake``) on the contract, against the core (directed cases;
random sequences with a stake are in ``tests/test_contract_differential.py``): testers drawn
from the miners holding the stake, a drawn tester's transfers refused by both, a lying
majority's stakes held with their rewards and forfeited to the appellants identically, money
exact on the contract. Every operation goes to both (``evm_harness.Pair``), which compare
outcomes and, after each block, their states field by field (roles, balances, escrow, the
dispute's held rewards and stakes)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest

from derelayl.agents.latent import LatentPopulation
from derelayl.evm.client import ContractClient
from derelayl.evm.compare import contract_snapshot
from derelayl.evm.node import Node, TxFailed, anvil, anvil_path, embedded
from derelayl.evm.signing import derive_evm_keys
from derelayl.learning.latent import LatentTrainer
from derelayl.protocol import Params, Phase, blocks, process_block
from derelayl.protocol.blocks import SettleBlock, Transfer
from derelayl.protocol.roles import assign_roles
from evm_harness import Pair

STAKE = 2000
"""Units: a few test rewards; after a couple of rounds some miners hold it and some do not."""
PARAMS = Params(k=2, test_cases=5, testers=5, pooled_cases=True, appeal_testers=3, tester_stake=STAKE)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    made = anvil() if anvil_path() is not None else embedded()
    yield made
    made.close()


def _money_is_exact(pair: Pair) -> None:
    """On the contract: minted - burned = every balance + escrow, and the escrow is what the
    contract holds of its own coin."""
    snap = contract_snapshot(pair.client.contract)
    assert snap["minted"] - snap["burned"] == sum(snap["balances"]) + snap["escrow"]
    assert pair.client.contract.functions.balanceOf(pair.client.address).call() == snap["escrow"]


def _staked_miners(pair: Pair) -> list[int]:
    s = pair.ref
    assert s.roles is not None
    return [int(m) for m in s.roles.miners if s.balances[m] >= s.params.tester_stake]


def test_a_lying_majority_forfeits_its_stakes_in_both(node: Node) -> None:
    # Prepare: five pooled testers drawn from the staked miners, three appellants; the round at
    # a test phase with models, every tester holding the stake
    pair = Pair(node, PARAMS, participants=24, seed=12)
    population = LatentPopulation(LatentTrainer(seed=12))

    def ready() -> bool:
        s = pair.ref
        assert s.roles is not None
        return (
            s.phase == Phase.TEST
            and len(s.commits) >= 2
            and all(s.balances[t] >= STAKE for t in s.roles.testers.tolist())
        )

    while not ready():
        assert pair.ref.round < 30
        pair.apply(population.next_block(pair.ref), "honest")
    honest = population.next_block(pair.ref)
    assert isinstance(honest, blocks.TestBlock) and len(honest.co_testers) == 4
    n = len(pair.ref.commits)
    lying_scores = np.zeros_like(honest.scores)
    lying_scores[int(np.argmin(honest.scores[:n]))] = 10**6
    liars = [r.tester for r in honest.co_testers[1:]]
    truthful = [honest.miner, honest.co_testers[0].tester]
    lying = dataclasses.replace(
        honest,
        co_testers=(
            *honest.co_testers[:1],
            *(dataclasses.replace(r, scores=lying_scores) for r in honest.co_testers[1:]),
        ),
    )
    # a twin of the core that sees the honest test block instead
    fair = pair.ref.copy()
    process_block(fair, dataclasses.replace(honest, time=pair.node.block_number() + 1, randomness=b""))
    process_block(fair, dataclasses.replace(population.next_block(fair), time=fair.phase_start, randomness=b""))
    before, escrow = pair.ref.balances.copy(), pair.ref.escrow
    # Execute: both hold every reward and every stake, and draw the same appellants
    assert pair.apply(lying, "three lying co-testers") == ("ok", "ok")
    dispute = pair.ref.dispute
    assert dispute is not None and dispute.staked.tolist() == [STAKE] * 5
    assert all(pair.ref.balances[t] == before[t] - STAKE for t in (*truthful, *liars))
    assert pair.ref.escrow == escrow + int(dispute.held.sum()) + 5 * STAKE
    assert contract_snapshot(pair.client.contract)["dispute"][1] == [
        (int(t), int(h), STAKE) for t, h in zip(dispute.testers, dispute.held, strict=True)
    ]
    _money_is_exact(pair)
    # a tester's coins stay put while its round is disputed
    assert pair.apply(Transfer(liars[0], truthful[0], 1), "a liar moves a unit") == ("BalanceError", "BalanceError")
    appellants = dispute.appellants.tolist()
    settle = population.next_block(pair.ref)
    assert isinstance(settle, SettleBlock) and len(settle.appeals) == 3
    assert pair.apply(settle, "the appeal") == ("ok", "ok")
    # Assert: the states agree; the truthful testers end as in the honest round, each liar a
    # reward and its stake short, each appellant a reward and a third of the liars' rewards
    # and stakes up (every test reward is the same amount here: no supply cap)
    assert not pair.mismatches and pair.replay_matches() == []
    assert pair.ref.dispute is None and pair.ref.escrow == 0
    amount = int(dispute.held[0])
    gained, fair_gained = pair.ref.balances - before, fair.balances - before
    assert all(gained[t] == fair_gained[t] for t in truthful)
    assert all(gained[t] == fair_gained[t] - amount - STAKE for t in liars)
    assert all(gained[a] == fair_gained[a] + amount + (3 * (amount + STAKE)) // 3 for a in appellants)
    _money_is_exact(pair)


def test_a_drawn_tester_may_not_transfer_in_either(node: Node) -> None:
    # Prepare: a few rounds, until a drawn tester holds coins
    pair = Pair(node, PARAMS, participants=16, seed=5)
    population = LatentPopulation(LatentTrainer(seed=5))
    while pair.ref.phase != Phase.DEPOSIT or max(pair.ref.balances[pair.ref.roles.testers]) == 0:  # type: ignore[union-attr]
        assert pair.ref.round < 30
        pair.apply(population.next_block(pair.ref), "honest")
    s = pair.ref
    assert s.roles is not None
    testers = s.roles.testers.tolist()
    rich = max(testers, key=lambda t: int(s.balances[t]))
    other = next(p for p in range(s.n_participants) if p not in testers)
    # Execute / Assert: the testing miner and a co-tester are refused by both, whatever the
    # amount (even 0); a transfer to a tester, and the rest of the round, go through in both
    for sender in (testers[0], testers[1], rich):
        for amount in (0, 1):
            assert pair.apply(Transfer(sender, other, amount), f"tester {sender} sends {amount}") == (
                "BalanceError",
                "BalanceError",
            )
    with pytest.raises(TxFailed, match="BalanceError: the sender tests this round"):
        pair.client.send(Transfer(rich, other, 1), pair.signers[s.keys[rich]])
    assert pair.apply(Transfer(other, rich, 0), "to a tester") == ("ok", "ok")
    while pair.ref.phase != Phase.DEPOSIT or pair.ref.round == s.round:
        pair.apply(population.next_block(pair.ref), "honest")
    # a new round: the old testers that are not drawn again may send once more
    free = next((t for t in testers if t not in pair.ref.roles.testers.tolist()), None)  # type: ignore[union-attr]
    if free is not None:
        assert pair.apply(Transfer(free, other, 0), "a past tester sends") == ("ok", "ok")
    assert not pair.mismatches and pair.replay_matches() == []


def test_testers_come_from_the_miners_holding_the_stake_in_both(node: Node) -> None:
    # Prepare: three testers with a stake; honest rounds with transfers that move a miner
    # across the stake either way
    params = dataclasses.replace(PARAMS, testers=3)
    pair = Pair(node, params, participants=16, seed=7)
    population = LatentPopulation(LatentTrainer(seed=7))
    partial = 0
    # Execute: every draw is compared field by field by the harness (block miners, co-testers)
    while pair.ref.round < 8:
        s = pair.ref
        assert s.roles is not None
        if s.phase == Phase.DEPOSIT:
            staked = _staked_miners(pair)
            if params.testers <= len(staked) < len(s.roles.miners):
                partial += 1
                # Assert: the testers are staked miners, the other block miners any miners
                assert set(s.roles.testers.tolist()) <= set(staked)
                unstaked = dataclasses.replace(s, params=dataclasses.replace(params, tester_stake=0))
                assert assign_roles(unstaked).block_miners[0] == s.roles.block_miners[0]
            # a non-tester holding coins moves some to a poorer non-tester (it may cross the
            # stake either way before the next draw)
            busy = set(s.roles.testers.tolist())
            free = [p for p in range(s.n_participants) if p not in busy]
            giver = max(free, key=lambda p: int(s.balances[p]))
            taker = min(free, key=lambda p: int(s.balances[p]))
            if s.balances[giver] > 0 and giver != taker:
                amount = min(int(s.balances[giver]), STAKE)
                assert pair.apply(Transfer(giver, taker, amount), "move a stake") == ("ok", "ok")
        pair.apply(population.next_block(pair.ref), "honest")
    # Assert: some draws used a strict subset of the miners; both agree throughout
    assert partial >= 2
    assert not pair.mismatches and pair.replay_matches() == []
    _money_is_exact(pair)


def test_fewer_staked_miners_than_seats_draw_from_every_miner_in_both(node: Node) -> None:
    # Prepare: a stake nobody reaches for a few rounds (1 coin)
    params = dataclasses.replace(PARAMS, tester_stake=10**6)
    pair = Pair(node, params, participants=12, seed=3)
    population = LatentPopulation(LatentTrainer(seed=3))
    while pair.ref.round < 4:
        s = pair.ref
        assert s.roles is not None
        if s.phase == Phase.DEPOSIT and len(_staked_miners(pair)) < params.testers:
            unstaked = dataclasses.replace(s, params=dataclasses.replace(params, tester_stake=0))
            assert assign_roles(unstaked).testers.tolist() == s.roles.testers.tolist()
        pair.apply(population.next_block(pair.ref), "honest")
    assert not pair.mismatches and pair.replay_matches() == []


def test_the_contract_refuses_a_stake_without_appeals(node: Node) -> None:
    # the core refuses such Params; the contract's own check, with the core's class
    params = Params(k=2, test_cases=5, testers=3, pooled_cases=True, appeal_testers=2, tester_stake=STAKE)
    object.__setattr__(params, "appeal_testers", 0)  # past the core's check, as another deployer could
    keys = derive_evm_keys(2, 4)
    node.fund([k.address for k in keys])
    with pytest.raises(TxFailed, match="ConfigError: tester_stake needs appeal_testers"):
        ContractClient.deploy(node, params, bytes(32), [k.public for k in keys], keys[0])
