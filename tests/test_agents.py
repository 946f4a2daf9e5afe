"""One participant, one agent: agents driven by the round driver produce exactly the blocks
of the simulator's vectorised population (the same policy), on every chain client."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from derelayl.agents import Agent, LatentBrain, LatentPopulation
from derelayl.errors import MalformedError, SignatureError
from derelayl.learning.latent import LatentTrainer
from derelayl.ledger import Chain, MemoryLedger, derive_keys
from derelayl.ledger.client import LocalChainClient, StateClient
from derelayl.protocol import Params, initialize_state, process_block
from derelayl.protocol.blocks import CommitBlock
from derelayl.protocol.digest import compute_state_root
from derelayl.protocol.messages import Proposal, Signed
from derelayl.runtime.driver import InProcessTransport, RoundDriver

PARAMS = Params(k=3, test_cases=5, testers=3)


def _keys(n: int) -> list[bytes]:
    return [(i + 1).to_bytes(32, "big") for i in range(n)]


DEFENDED = Params(k=3, test_cases=5, testers=3, min_improvement=1, pooled_cases=True, min_trainer_bid=1000)


@pytest.mark.parametrize(("basis", "params"), [("trained", PARAMS), ("held", PARAMS), ("trained", DEFENDED)])
def test_agents_and_population_make_identical_blocks(basis, params) -> None:
    # Prepare: the same genesis twice; 24 agents on one side, the population on the other
    trainer = LatentTrainer(seed=5)
    fast = initialize_state(params, b"\x05" * 32, _keys(24))
    client = StateClient(initialize_state(params, b"\x05" * 32, _keys(24)))
    agents = [Agent(client.signer(key), LatentBrain(trainer), basis=basis) for key in _keys(24)]
    driver = RoundDriver(client, agents)
    population = LatentPopulation(trainer, basis=basis)
    for _ in range(4 * 12):
        # Execute
        receipt = driver.step()
        block = client._log[-1].operation
        expected = population.next_block(fast)
        process_block(fast, type(block)(**{**expected.__dict__, "time": block.time}))
        # Assert: same block content, same state after it
        assert _same(block, expected)
        assert compute_state_root(fast) == compute_state_root(client.state), f"diverged at round {fast.round}"
    assert receipt is not None and fast.round == 12 and fast.supply > 0


def _same(a, b) -> bool:
    for name, value in a.__dict__.items():
        if name == "time":
            continue
        other = getattr(b, name)
        if hasattr(value, "participant"):
            if not (
                np.array_equal(value.participant, other.participant) and np.array_equal(value.amount, other.amount)
            ):
                return False
        elif isinstance(value, np.ndarray):
            if not np.array_equal(value, other):
                return False
        elif isinstance(value, tuple) and value and hasattr(value[0], "scores"):
            if [(r.tester, r.test_cases_digest, r.scores.tolist()) for r in value] != [
                (r.tester, r.test_cases_digest, r.scores.tolist()) for r in other
            ]:
                return False
        elif value != other:
            return False
    return True


def test_agents_run_a_signed_chain_with_only_their_own_keys() -> None:
    # Prepare: each agent holds one key; nobody holds all of them
    keys = derive_keys(7, 12)
    chain = Chain.create(MemoryLedger(), PARAMS, b"\x07" * 32, [k.public for k in keys], keys[0])
    client = LocalChainClient(chain)
    agents = [Agent(client.signer(k), LatentBrain(LatentTrainer(seed=7))) for k in keys]
    # Execute
    RoundDriver(client, agents).run(rounds=6)
    # Assert: the stored chain replays, and its state equals the agents' view
    again = Chain.open(chain.ledger)
    assert again.head_hash == chain.head_hash and again.state.round == 6
    assert np.array_equal(again.state.balances, client.state.balances)


def test_a_forged_message_is_left_out_by_the_miner() -> None:
    # Prepare: a stranger posts a bid in a trainer's name, signed with the wrong key
    keys = derive_keys(8, 10)
    chain = Chain.create(MemoryLedger(), PARAMS, b"\x08" * 32, [k.public for k in keys], keys[0])
    client = LocalChainClient(chain)
    agents = [Agent(client.signer(k), LatentBrain(LatentTrainer(seed=8))) for k in keys]
    transport = InProcessTransport()
    driver = RoundDriver(client, agents, transport)
    state = client.state
    assert state.roles is not None
    victim = int(state.roles.trainers[0])
    honest = agents[victim].messages(state)[0]
    forged = Signed(honest.message, derive_keys(99, 1)[0].sign(b"x"))
    # Execute: the forged copy arrives first
    transport.post([forged])
    driver.step()
    # Assert: the block holds the victim's genuine bid once and verifies
    assert int((chain.state.pairs.trainer == victim).sum()) <= 1
    Chain.open(chain.ledger)


def test_local_chain_refuses_a_block_signed_with_a_non_local_key() -> None:
    keys = derive_keys(9, 4)
    chain = Chain.create(MemoryLedger(), PARAMS, b"\x09" * 32, [k.public for k in keys], keys[0])
    client = LocalChainClient(chain)
    state = client.state
    block = LatentPopulation(LatentTrainer(seed=9)).next_block(state)
    from derelayl.protocol.messages import Proposal

    with pytest.raises(SignatureError):
        client.submit(Proposal(block), miner=object())


def _to_commit_phase(posting: bool) -> tuple[StateClient, RoundDriver, list[Agent]]:
    """A network of agents whose next phase is a commit with at least two trainers who paid a deposit."""
    trainer = LatentTrainer(seed=7)
    client = StateClient(initialize_state(PARAMS, b"\x07" * 32, _keys(16)))
    agents = [Agent(client.signer(k), LatentBrain(trainer), post_commitments=posting) for k in _keys(16)]
    driver = RoundDriver(client, agents)
    while not (client.state.phase.name == "COMMIT" and (client.state.pairs.trainer_deposit > 0).sum() >= 2):
        assert client.state.round < 40
        driver.step()
    return client, driver, agents


@pytest.mark.parametrize("posting", [False, True])
def test_a_commit_miner_cannot_leave_out_a_posted_commitment(posting: bool) -> None:
    """Miner omission: without posting, a miner that drops one trainer's commitment gets its
    block accepted and that trainer's deposit burned; with ``post_commitments`` the trainer's
    commitment is on the ledger already, and the same block is refused."""
    # Prepare: every trainer's message of the commit phase, and what each posts straight to the ledger
    client, driver, agents = _to_commit_phase(posting)
    state = client.state
    sent = [s for a in agents for s in a.messages(state)]
    for agent in agents:
        for post in agent.posts([s for s in sent if s.message.participant == agent.index(state)]):
            client.send(post, agent.signer)
    committed = {s.message.participant for s in sent}
    deposits = dict(zip(state.pairs.trainer.tolist(), state.pairs.trainer_deposit.tolist(), strict=True))
    victim = max(committed, key=lambda t: (deposits[t], -t))
    assert set(state.posted) == (committed if posting else set())
    miner = next(a for a in agents if a.index(state) == state.roles.block_miners[1])
    # Execute: the miner proposes from an inbox without the victim's commitment
    inbox = [s for s in sent if s.message.participant != victim]
    proposal = miner.propose(state, inbox)
    # Assert
    if posting:  # the honest miner carries it from the ledger; a block without it is refused
        assert victim in proposal.block.trainers.tolist()
        cut = [i for i, t in enumerate(proposal.block.trainers.tolist()) if t != victim]
        dropped = _without(proposal, cut)
        root = compute_state_root(state)
        with pytest.raises(MalformedError, match=f"trainer {victim} posted"):
            client.submit(dropped)
        assert compute_state_root(client.state) == root
        client.submit(proposal)
        assert victim in client.state.commits.owner.tolist()
    else:  # the omission goes through, and the victim's deposit is burned at settlement
        assert victim not in proposal.block.trainers.tolist()
        client.submit(proposal)
        deposit = int(state.pairs.trainer_deposit[state.pairs.trainer.tolist().index(victim)])
        assert deposit > 0
        burned = client.state.burned
        driver.step()  # test
        driver.step()  # settle
        assert client.state.burned - burned >= deposit


def _without(proposal: Proposal, keep: list[int]) -> Proposal:
    """``proposal`` with only the commitments at positions ``keep``."""
    block = proposal.block
    assert isinstance(block, CommitBlock)
    trimmed = dataclasses.replace(
        block, trainers=block.trainers[keep], commitments=tuple(block.commitments[i] for i in keep)
    )
    return dataclasses.replace(proposal, block=trimmed, signatures=tuple(proposal.signatures[i] for i in keep))
