"""Challenges (``challenge_bond``, ``challenge_window``) on the contract, against the core
(directed cases; random sequences with challenges are in ``tests/test_contract_differential.py``):
every test block holds its testers' rewards, ``challenge(round)`` opens the appeal of a round
whose testers agreed, a round nobody challenged settles only after the window, and the bond is
returned with a share of the forfeits or paid to the appellants exactly as the core does. Every
operation goes to both (``evm_harness.Pair``), which compare outcomes and, after each block and
challenge, their states field by field (balances, escrow, the dispute's held rewards, appellants,
whether its appeal is open, its challenger and bond)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest

from derelayl.agents.latent import LatentPopulation
from derelayl.errors import MalformedError
from derelayl.evm.client import ContractClient
from derelayl.evm.compare import contract_snapshot, differences, state_snapshot
from derelayl.evm.node import Node, TxFailed, anvil, anvil_path, embedded
from derelayl.evm.signing import derive_evm_keys
from derelayl.evm.tools import verify_contract
from derelayl.learning.latent import LatentTrainer
from derelayl.protocol import Params, Phase, blocks, process_block, process_operation
from derelayl.protocol.blocks import Challenge, SettleBlock
from derelayl.protocol.digest import compute_state_root
from derelayl.protocol.state import State
from evm_harness import Pair, mine, wait_out_the_window

BOND = 3000
"""Units: less than a round's test reward (7,000 here), so last round's testers hold it."""
WINDOW = 3
PARAMS = Params(
    k=2,
    test_cases=5,
    testers=5,
    pooled_cases=True,
    appeal_testers=3,
    challenge_bond=BOND,
    challenge_window=WINDOW,
)
BACKENDS = ["embedded", pytest.param("anvil", marks=pytest.mark.skipif(anvil_path() is None, reason="no anvil"))]


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    made = anvil() if anvil_path() is not None else embedded()
    yield made
    made.close()


@pytest.fixture(scope="module", params=BACKENDS)
def every_node(request: pytest.FixtureRequest) -> Iterator[Node]:
    made = embedded() if request.param == "embedded" else anvil()
    yield made
    made.close()


def _outsiders(s: State) -> list[int]:
    """Participants with no role this round but miner (they neither train, own, test nor
    produce a block): a challenge is all they gain or lose by in the round."""
    assert s.roles is not None
    r = s.roles
    busy = {*r.testers.tolist(), *r.block_miners, *r.trainers.tolist(), *r.model_owners.tolist()}
    return [i for i in range(s.n_participants) if i not in busy]


def _step(pair: Pair, population: LatentPopulation) -> None:
    """The next honest block in both (a settle block once the window has passed)."""
    wait_out_the_window(pair)
    assert pair.apply(population.next_block(pair.ref), "honest") == ("ok", "ok")


def _at_test(pair: Pair, population: LatentPopulation) -> tuple[blocks.TestBlock, int]:
    """Honest rounds until a test phase with at least two models, five reporting testers and an
    outsider holding the bond; the honest test block and that outsider."""
    while True:
        s = pair.ref
        rich = [i for i in _outsiders(s) if s.balances[i] >= BOND]
        if s.phase == Phase.TEST and len(s.commits) >= 2 and rich:
            block = population.next_block(s)
            assert isinstance(block, blocks.TestBlock) and len(block.co_testers) == 4
            return block, rich[0]
        assert s.round < 30
        _step(pair, population)


def _twin(pair: Pair, population: LatentPopulation, test: blocks.TestBlock) -> State:
    """The core alone, given the honest test block and settled after the window."""
    fair = pair.ref.copy()
    process_block(fair, dataclasses.replace(test, time=pair.node.block_number() + 1, randomness=b""))
    settle = population.next_block(fair)
    process_block(fair, dataclasses.replace(settle, time=fair.phase_start + WINDOW, randomness=b""))
    return fair


def _money_is_exact(pair: Pair) -> None:
    snap = contract_snapshot(pair.client.contract)
    assert snap["minted"] - snap["burned"] == sum(snap["balances"]) + snap["escrow"]
    assert pair.client.contract.functions.balanceOf(pair.client.address).call() == snap["escrow"]


def _amount(s: State) -> int:
    p = s.params
    return p.reward_per_test_case * p.test_cases + p.reward_per_tested_model * len(s.commits)


def test_a_unanimous_lie_is_challenged_and_reversed_with_the_same_balances_in_both(node: Node) -> None:
    # Prepare: five testers, three appellants; the round at its test phase; a twin of the core
    # that sees the honest test block
    pair = Pair(node, PARAMS, participants=24, seed=12)
    population = LatentPopulation(LatentTrainer(seed=12))
    honest, challenger = _at_test(pair, population)
    fair = _twin(pair, population, honest)
    n, amount = len(pair.ref.commits), _amount(pair.ref)
    lie = np.zeros_like(honest.scores)
    lie[int(np.argmin(honest.scores[:n]))] = 10**6  # every tester tops the worst model
    lying = dataclasses.replace(
        honest, scores=lie, co_testers=tuple(dataclasses.replace(r, scores=lie) for r in honest.co_testers)
    )
    testers = [honest.miner, *(r.tester for r in honest.co_testers)]
    before = pair.ref.balances.copy()
    # Execute: the testers agree, so both hold every reward with no appeal open
    assert pair.apply(lying, "five testers tell the same lie") == ("ok", "ok")
    dispute = pair.ref.dispute
    assert dispute is not None and not dispute.open and dispute.appellants.size == 0
    assert contract_snapshot(pair.client.contract)["dispute"][3:] == (False, -1, 0)
    # the outsider challenges: the bond into escrow in both, the same appellants drawn
    escrow = pair.ref.escrow
    assert pair.apply(Challenge(pair.ref.round, challenger), "the challenge") == ("ok", "ok")
    dispute = pair.ref.dispute
    assert dispute.open and dispute.challenger == challenger and dispute.bond == BOND
    appellants = dispute.appellants.tolist()
    assert len(appellants) == 3 and not set(appellants) & {*testers, challenger}
    assert pair.ref.escrow == escrow + BOND and pair.ref.balances[challenger] == before[challenger] - BOND
    assert contract_snapshot(pair.client.contract)["dispute"][2:] == (appellants, True, challenger, BOND)
    _money_is_exact(pair)
    # a second challenge, by anyone, is refused by both
    other = next(i for i in _outsiders(pair.ref) if i != challenger)
    assert pair.apply(Challenge(pair.ref.round, other), "a second challenge") == ("DuplicateError", "DuplicateError")
    settle = population.next_block(pair.ref)
    assert isinstance(settle, SettleBlock) and [r.tester for r in settle.appeals] == appellants
    assert pair.apply(settle, "the appeal") == ("ok", "ok")
    # Assert: the states agree throughout; the honest selection, as in the twin; each liar a
    # reward short of the twin, each appellant a reward and a quarter of the five forfeited
    # rewards up, the challenger its bond back and the last quarter
    assert not pair.mismatches and pair.replay_matches() == []
    assert pair.ref.live.model_id.tolist() == fair.live.model_id.tolist()
    share = 5 * amount // 4
    gained, fair_gained = pair.ref.balances - before, fair.balances - before
    assert all(gained[t] == fair_gained[t] - amount for t in testers)
    assert all(gained[a] == fair_gained[a] + amount + share for a in appellants)
    assert gained[challenger] == fair_gained[challenger] + share
    assert pair.ref.dispute is None and pair.ref.escrow == 0
    assert contract_snapshot(pair.client.contract)["dispute"] == (False, [], [], False, -1, 0)
    _money_is_exact(pair)


def test_a_wrong_challenge_pays_its_bond_to_the_appellants_in_both(node: Node) -> None:
    # Prepare: an honest test block, a twin of the core that settles it unchallenged
    pair = Pair(node, PARAMS, participants=24, seed=7)
    population = LatentPopulation(LatentTrainer(seed=7))
    honest, challenger = _at_test(pair, population)
    fair = _twin(pair, population, honest)
    amount, burned = _amount(pair.ref), pair.ref.burned
    before = pair.ref.balances.copy()
    assert pair.apply(honest, "honest test") == ("ok", "ok")
    # Execute: a challenge of the honest scores; the appellants agree with the testers
    assert pair.apply(Challenge(pair.ref.round, challenger), "a wrong challenge") == ("ok", "ok")
    appellants = pair.ref.dispute.appellants.tolist()  # type: ignore[union-attr]
    settle = population.next_block(pair.ref)
    assert pair.apply(settle, "the appeal") == ("ok", "ok")
    # Assert: the same selection and the testers paid as in the twin; the bond split among the
    # three appellants (each also paid a tester's reward), its remainder burned
    assert not pair.mismatches and pair.replay_matches() == []
    assert pair.ref.live.model_id.tolist() == fair.live.model_id.tolist()
    gained, fair_gained = pair.ref.balances - before, fair.balances - before
    assert gained[challenger] == fair_gained[challenger] - BOND
    assert all(gained[a] == fair_gained[a] + amount + BOND // 3 for a in appellants)
    testers = [honest.miner, *(r.tester for r in honest.co_testers)]
    assert all(gained[t] == fair_gained[t] for t in testers)
    assert pair.ref.burned - burned == fair.burned - burned + BOND - 3 * (BOND // 3)
    _money_is_exact(pair)


def test_an_unanswered_challenge_gets_its_bond_back_after_the_restarted_timeout(node: Node) -> None:
    pair = Pair(node, dataclasses.replace(PARAMS, phase_timeout=4), participants=24, seed=7)
    population = LatentPopulation(LatentTrainer(seed=7))
    honest, challenger = _at_test(pair, population)
    assert pair.apply(honest, "honest test") == ("ok", "ok")
    mine(pair.node, 3)
    twin = pair.ref.copy()  # settled unchallenged
    process_block(twin, dataclasses.replace(population.next_block(twin), time=pair.node.block_number() + 1))
    assert pair.apply(Challenge(pair.ref.round, challenger), "a late challenge") == ("ok", "ok")
    start = pair.ref.phase_start
    silent = dataclasses.replace(population.next_block(pair.ref), appeals=())
    # the challenge restarted the phase: silence is taken only a full timeout after it
    mine(pair.node, start + 4 - 2 - pair.node.block_number())
    assert pair.apply(silent, "no appellant, in time") == ("RoleError", "RoleError")
    wait = start + 4 - (pair.node.block_number() + 1)
    mine(pair.node, wait)
    assert pair.apply(silent, "no appellant, timed out") == ("ok", "ok")
    assert pair.ref.balances[challenger] == twin.balances[challenger]  # the bond back, no share
    assert not pair.mismatches and pair.replay_matches() == []


def test_a_settle_block_inside_the_window_is_refused_and_changes_nothing(node: Node) -> None:
    pair = Pair(node, PARAMS, participants=16, seed=5)
    population = LatentPopulation(LatentTrainer(seed=5))
    honest, _ = _at_test(pair, population)
    assert pair.apply(honest, "honest test") == ("ok", "ok")
    start = pair.ref.phase_start
    settle = population.next_block(pair.ref)
    before = contract_snapshot(pair.client.contract)
    # Execute: the settle block at once (block start + 1), then in the window's last block
    # (start + WINDOW - 1; a reverted transaction is mined on anvil, not on py-evm)
    assert pair.node.block_number() == start
    with pytest.raises(TxFailed, match="PhaseError: settle block inside the challenge window"):
        pair.client.submit(pair.proposal(settle), pair._signer_of_index(settle.miner))
    pair.client.wait_until(start + WINDOW - 2)
    assert pair.node.block_number() == start + WINDOW - 2
    assert pair.apply(settle, "in the window's last block") == ("PhaseError", "PhaseError")
    # Assert: the contract's state is untouched; the next block is past the window: accepted
    assert contract_snapshot(pair.client.contract) == before
    pair.client.wait_until(start + WINDOW - 1)
    assert pair.node.block_number() == start + WINDOW - 1
    assert pair.apply(settle, "after the window") == ("ok", "ok")
    assert not pair.mismatches and pair.replay_matches() == []


def test_challenges_refused_by_both(node: Node) -> None:
    pair = Pair(node, PARAMS, participants=16, seed=5)
    population = LatentPopulation(LatentTrainer(seed=5))
    honest, rich = _at_test(pair, population)
    r = pair.ref.round
    assert pair.apply(Challenge(r, rich), "in the test phase") == ("PhaseError", "PhaseError")
    assert pair.apply(honest, "honest test") == ("ok", "ok")
    poor = next(i for i in range(pair.ref.n_participants) if pair.ref.balances[i] < BOND)
    assert pair.apply(Challenge(r, poor), "below the bond") == ("BalanceError", "BalanceError")
    assert pair.apply(Challenge(r + 1, rich), "of the next round") == ("PhaseError", "PhaseError")
    stranger = pair.ref.n_participants  # an account that never registered
    assert pair.apply(Challenge(r, stranger), "an unknown account") == (
        "UnknownParticipantError",
        "UnknownParticipantError",
    )
    with pytest.raises(TxFailed, match="BalanceError: the challenger holds less than the challenge bond"):
        pair.client.send(Challenge(r, poor), pair._signer_of_index(poor))
    with pytest.raises(MalformedError, match="its own account"):
        pair.client.send(Challenge(r, rich), pair._signer_of_index(poor))
    # a round whose testers disagreed is under appeal already
    while pair.ref.phase != Phase.TEST or len(pair.ref.commits) == 0:
        _step(pair, population)
    test = population.next_block(pair.ref)
    liar = dataclasses.replace(test.co_testers[0], scores=test.co_testers[0].scores + 1)
    disagreeing = dataclasses.replace(test, co_testers=(liar, *test.co_testers[1:]))
    assert pair.apply(disagreeing, "a co-tester lies") == ("ok", "ok") and pair.ref.appeal_open
    rich = int(np.argmax(pair.ref.balances))
    assert pair.apply(Challenge(pair.ref.round, rich), "a disputed round") == ("DuplicateError", "DuplicateError")
    assert pair.apply(population.next_block(pair.ref), "the appeal") == ("ok", "ok")
    assert not pair.mismatches and pair.replay_matches() == []


def test_challenges_off_are_refused_by_both(node: Node) -> None:
    pair = Pair(node, Params(k=2, test_cases=5, testers=3, pooled_cases=True, appeal_testers=2), 10, seed=3)
    population = LatentPopulation(LatentTrainer(seed=3))
    while pair.ref.phase != Phase.SETTLE:
        _step(pair, population)
    assert pair.ref.dispute is None  # without a bond, an agreeing round holds nothing
    assert pair.apply(Challenge(pair.ref.round, 1), "no challenges") == ("MalformedError", "MalformedError")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"appeal_testers": 0}, "ConfigError: challenge_bond needs appeal_testers"),
        ({"challenge_window": 0}, "ConfigError: challenge_bond and challenge_window go together"),
        ({"challenge_bond": 0}, "ConfigError: challenge_bond and challenge_window go together"),
        ({"challenge_window": 1_000_001}, "ConfigError: challenge_window must be in 0..1000000"),
    ],
)
def test_the_contract_refuses_challenges_without_a_window_or_appeals(node: Node, fields, reason) -> None:
    # the core refuses such Params; the contract's own check, with the core's class
    params = dataclasses.replace(PARAMS)
    for name, value in fields.items():
        object.__setattr__(params, name, value)  # past the core's check, as another deployer could
    keys = derive_evm_keys(2, 4)
    node.fund([k.address for k in keys])
    with pytest.raises(TxFailed, match=reason):
        ContractClient.deploy(node, params, bytes(32), [k.public for k in keys], keys[0])


def test_wait_until_mines_up_to_the_time(every_node: Node) -> None:
    pair = Pair(every_node, PARAMS, participants=6, seed=2)
    now = every_node.block_number()
    pair.client.wait_until(now + 5)
    assert every_node.block_number() >= now + 5 and pair.client.synced_to == every_node.block_number()
    after = every_node.block_number()
    pair.client.wait_until(now)  # already past: nothing mined
    assert every_node.block_number() == after


def test_a_challenge_with_the_chains_randomness_replays_through_the_core_to_the_same_state_root(node: Node) -> None:
    # Prepare: a contract that mixes prevrandao; the client (a replay of its logs) drives it
    pair = Pair(node, PARAMS, participants=16, seed=9, mix_randomness=True)
    client = pair.client
    population = LatentPopulation(LatentTrainer(seed=9))

    def submit(block: blocks.Block) -> None:
        s = client.state
        if isinstance(block, SettleBlock) and not s.appeal_open:
            client.wait_until(s.phase_start + WINDOW - 1)
        client.submit(pair.proposal(block), pair._signer_of_index(block.miner))

    while client.state.phase != Phase.SETTLE or client.state.round == 0:
        submit(population.next_block(client.state))
    s = client.state
    challenger = next(i for i in range(s.n_participants) if s.balances[i] >= BOND)
    challenged = s.round
    expected = s.copy()
    # Execute: the op's time and randomness are placeholders the contract fills
    client.send(Challenge(s.round, challenger, time=0, randomness=b"\x01"), pair._signer_of_index(challenger))
    mined = int(client.last_tx["blockNumber"])
    prevrandao = bytes(node.w3.eth.get_block(mined)["mixHash"])
    process_operation(expected, Challenge(s.round, challenger, time=mined, randomness=prevrandao))
    # Assert: the client's state is the core's with the chain's time and randomness, and the
    # contract's storage; a fresh client replaying the whole history reaches the same root
    assert compute_state_root(client.state) == compute_state_root(expected)
    assert differences(state_snapshot(client.state), contract_snapshot(client.contract)) == []
    op = client.history.events[-1].operation
    assert op == Challenge(s.round, challenger, mined, prevrandao)
    fresh = ContractClient(node, client.address)
    verify_contract(fresh)
    assert compute_state_root(fresh.state) == compute_state_root(client.state)
    # the appeal settles; the replay still agrees
    submit(population.next_block(client.state))
    assert client.state.dispute is None and client.state.phase == Phase.DEPOSIT
    again = ContractClient(node, client.address)
    report = verify_contract(again)
    assert compute_state_root(again.state) == compute_state_root(client.state)
    assert report["challenges"] == [{"round": challenged, "challenger": challenger}]  # read off the history
