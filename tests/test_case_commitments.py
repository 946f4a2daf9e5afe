"""Case commitments (``Params.case_commitments``): every tester signs the digest of its test
cases in the deposit block, before any child exists, and the test block accepts only reports
naming it. Against case pickers (``docs/attacks.md``)."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import numpy as np
import pytest

from conftest import make_state
from derelayl.agents import Agent, LatentBrain, LatentPopulation
from derelayl.agents.adversaries import Adversary, share_group_cases
from derelayl.agents.books import ModelBook
from derelayl.errors import ConfigError, DerelaylError, MalformedError, RoleError, SignatureError
from derelayl.learning.data import case_digest
from derelayl.learning.latent import LatentTrainer
from derelayl.learning.setup import build_setup
from derelayl.ledger import Chain, MemoryLedger, derive_keys
from derelayl.ledger.client import LocalChainClient, StateClient
from derelayl.ledger.codec import decode_block, encode_block, proposal_of
from derelayl.protocol import Params, Phase, blocks, initialize_state, preset, process_block
from derelayl.protocol.blocks import CaseCommitment, DepositBlock
from derelayl.protocol.digest import compute_state_root
from derelayl.protocol.serialize import state_from_dict, state_to_dict
from derelayl.runtime.driver import RoundDriver
from test_attacks import relay_network

PARAMS = Params(k=3, test_cases=5, testers=3, pooled_cases=True, case_commitments=True)
NET = LatentPopulation(LatentTrainer(seed=3))


def _at(phase: Phase, params: Params = PARAMS) -> tuple:
    """A latent network with case commitments, in ``phase`` of a round with commitments: (state, block)."""
    state = make_state(16, params)
    while state.phase != phase or (phase == Phase.TEST and len(state.commits) < 2):
        assert state.round < 20
        process_block(state, NET.next_block(state))
    return state, NET.next_block(state)


def _refused(state, block, error, match: str) -> None:
    before = compute_state_root(state)
    with pytest.raises(error, match=match):
        process_block(state, block)
    assert compute_state_root(state) == before  # a refused block changes nothing


def test_a_deposit_block_carries_every_testers_case_commitment_and_the_state_keeps_them() -> None:
    state, block = _at(Phase.DEPOSIT)
    testers = state.roles.testers.tolist()
    assert [c.tester for c in block.case_commitments] == testers
    process_block(state, block)
    assert state.case_digests == {c.tester: c.digest for c in block.case_commitments}
    # the digests stay until the round's settlement, and travel with the state
    assert state_from_dict(state_to_dict(state)).case_digests == state.case_digests
    while state.phase != Phase.DEPOSIT:
        process_block(state, NET.next_block(state))
    assert state.case_digests == {}


def test_the_deposit_block_refuses_missing_misordered_stray_and_malformed_case_commitments() -> None:
    state, block = _at(Phase.DEPOSIT)
    cases = block.case_commitments
    _refused(state, replace(block, case_commitments=cases[1:]), RoleError, "case commitments from")
    _refused(state, replace(block, case_commitments=cases[::-1]), RoleError, "case commitments from")
    stranger = CaseCommitment(int(state.roles.trainers[0]), b"\x01" * 32)
    _refused(state, replace(block, case_commitments=(*cases, stranger)), RoleError, "case commitments from")
    short = (CaseCommitment(cases[0].tester, b"\x01" * 31), *cases[1:])
    _refused(state, replace(block, case_commitments=short), MalformedError, "32-byte digest")
    # with the rule off, the block may carry none
    off, off_block = _at(Phase.DEPOSIT, replace(PARAMS, case_commitments=False))
    assert off_block.case_commitments == ()
    _refused(off, replace(off_block, case_commitments=cases), MalformedError, "case_commitments is off")


def test_once_the_deposit_phase_times_out_a_silent_tester_may_be_left_out_but_then_may_not_report() -> None:
    params = replace(PARAMS, phase_timeout=5)
    state, block = _at(Phase.DEPOSIT, params)
    silent = block.case_commitments[1].tester
    without = (block.case_commitments[0], *block.case_commitments[2:])
    late = replace(block, case_commitments=without, time=state.phase_start + 5)
    _refused(state, replace(late, time=state.phase_start + 4), RoleError, "case commitments from")
    process_block(state, late)
    assert silent not in state.case_digests
    while state.phase != Phase.TEST:
        process_block(state, replace(NET.next_block(state), time=state.phase_start))
    test = replace(NET.next_block(state), time=state.phase_start)
    assert silent in [r.tester for r in test.co_testers]
    _refused(state, test, MalformedError, f"tester {silent} reports but committed to no test cases")
    rest = tuple(r for r in test.co_testers if r.tester != silent)
    process_block(state, replace(test, co_testers=rest, time=state.phase_start + 5))


def test_the_test_block_accepts_only_reports_on_the_committed_cases() -> None:
    state, block = _at(Phase.TEST)
    other = b"\x09" * 32
    _refused(state, replace(block, test_cases_digest=other), MalformedError, "not the ones it committed to")
    report = block.co_testers[0]
    swapped = (blocks.TesterReport(report.tester, other, report.scores), *block.co_testers[1:])
    _refused(state, replace(block, co_testers=swapped), MalformedError, f"tester {report.tester}'s test cases")
    process_block(state, block)
    assert state.phase == Phase.SETTLE


def test_params_case_commitments_is_a_flag_left_out_of_old_chains_params() -> None:
    assert "case_commitments" not in preset("reference").to_dict()
    assert Params.from_dict({"case_commitments": True}, base=preset("reference")).case_commitments
    with pytest.raises(ConfigError, match="case_commitments must be true or false"):
        Params.from_dict({"case_commitments": 1}, base=preset("reference"))


def _signed_chain(params: Params, rounds: int) -> Chain:
    keys = derive_keys(11, 14)
    chain = Chain.create(MemoryLedger(), params, b"\x0b" * 32, [k.public for k in keys], keys[0])
    client = LocalChainClient(chain)
    RoundDriver(client, [Agent(client.signer(k), LatentBrain(LatentTrainer(seed=11))) for k in keys]).run(rounds)
    return chain


def test_agents_sign_case_commitments_onto_a_local_chain_that_replays() -> None:
    chain = _signed_chain(PARAMS, 3)
    deposits: list[DepositBlock] = []
    again = Chain.open(
        chain.ledger, on_block=lambda _s, b, _r, _st: deposits.append(b) if isinstance(b, DepositBlock) else None
    )
    assert again.head_hash == chain.head_hash and again.state.round == 3
    assert len(deposits) == 3 and all(len(d.case_commitments) == PARAMS.testers for d in deposits)


def test_the_codec_checks_each_case_commitments_signature_and_refuses_an_empty_list() -> None:
    keys = derive_keys(12, 14)
    state = initialize_state(PARAMS, b"\x0c" * 32, [k.public for k in keys])
    block = NET.next_block(state)
    chain_id = b"\x0c" * 32
    proposal = proposal_of(block, chain_id, dict(enumerate(keys)), {})
    body = encode_block(proposal)
    header = {"kind": block.kind, "round": block.round, "miner": block.miner, "time": 0, "randomness": b""}
    publics = [k.public for k in keys]
    assert decode_block(header, body, chain_id, publics).case_commitments == block.case_commitments
    forged = [list(item) for item in body["case_commitments"]]
    forged[0][1] = "ab" * 32
    with pytest.raises(SignatureError, match="case commitment of participant"):
        decode_block(header, {**body, "case_commitments": forged}, chain_id, publics)
    with pytest.raises(MalformedError, match="case_commitments is empty"):
        decode_block(header, {**body, "case_commitments": []}, chain_id, publics)
    # without case commitments the body keeps its old shape (old chains keep their bytes)
    plain = proposal_of(replace(block, case_commitments=()), chain_id, dict(enumerate(keys)), {})
    assert "case_commitments" not in encode_block(plain)


def test_agents_and_population_agree_with_case_commitments() -> None:
    trainer = LatentTrainer(seed=5)
    keys = [(i + 1).to_bytes(32, "big") for i in range(20)]
    fast = initialize_state(PARAMS, b"\x05" * 32, keys)
    client = StateClient(initialize_state(PARAMS, b"\x05" * 32, keys))
    driver = RoundDriver(client, [Agent(client.signer(k), LatentBrain(trainer)) for k in keys])
    population = LatentPopulation(trainer)
    for _ in range(4 * 5):
        driver.step()
        block = client._log[-1].operation
        process_block(fast, replace(population.next_block(fast), time=block.time))
        assert compute_state_root(fast) == compute_state_root(client.state)


# ---------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def setup():  # type: ignore[no-untyped-def]
    return build_setup("digits", participants=12, partition="dirichlet", split_seed=3, init_seed=3)


def _relay_network(setup, params: Params):  # type: ignore[no-untyped-def]
    return relay_network(setup, params, "cc", b"\x0d" * 32)


def _play(driver: RoundDriver, book: ModelBook, until) -> None:  # type: ignore[no-untyped-def]
    """Drive the network (its model book following the chain) until ``until(state)``."""
    state = driver.chain.state
    while not until(state):
        assert state.round < 20
        driver.step()
        book.follow(state)


def _test_phase(state) -> bool:  # type: ignore[no-untyped-def]
    return state.phase == Phase.TEST and len(state.commits) >= 2


def test_honest_testers_publish_the_same_cases_with_and_without_case_commitments(setup) -> None:  # type: ignore[no-untyped-def]
    # Prepare: the same network twice, once with case commitments
    base = Params.from_dict({"testers": 3, "pooled_cases": True, "min_improvement": 1}, base=preset("minimal"))
    runs = []
    for params in (base, replace(base, case_commitments=True)):
        client, driver, _, book, _ = _relay_network(setup, params)
        # Execute
        _play(driver, book, lambda s: s.round >= 3)
        runs.append(client.state)
    # Assert: the same scores and the same money: the rule costs honest testers nothing
    plain, committed = runs
    assert np.array_equal(plain.live.score, committed.live.score)
    assert np.array_equal(plain.balances, committed.balances)


def test_a_case_picker_under_case_commitments_publishes_its_committed_cases_and_leaks_them(setup) -> None:  # type: ignore[no-untyped-def]
    params = Params.from_dict({"testers": 3, "pooled_cases": True, "case_commitments": True}, base=preset("minimal"))
    client, driver, brains, book, _ = _relay_network(setup, params)
    _play(driver, book, _test_phase)
    state = client.state
    me, friend = int(state.roles.testers[0]), int(state.commits.owner[0])
    fields = {f.name: getattr(brains[me], f.name) for f in dataclasses.fields(brains[me])}
    group = frozenset({me, friend})
    picker = Adversary(**fields, kind="case_picker", group=group)
    brains[me] = picker
    # as a tester: the cases it publishes are the ones it committed to (picking would be refused)
    assert case_digest(*picker.own_cases(state, me)) == state.case_digests[me]
    digest, _ = picker.score(state, me)
    assert digest == state.case_digests[me]
    # as a trainer: its group's testers' committed cases are added to its own data
    fields = {f.name: getattr(brains[friend], f.name) for f in dataclasses.fields(brains[friend])}
    brains[friend] = Adversary(**fields, kind="case_picker", group=group)
    share_group_cases(brains)
    x, y = brains[friend].training_data(state, friend)
    own_x, _ = brains[friend].shard.read(friend)
    leaked_x, _ = brains[me].own_cases(state, me)
    assert len(y) == 2 * len(own_x)
    assert {r.tobytes() for r in leaked_x} <= {r.tobytes() for r in x[len(own_x) :]}


def test_a_testing_miner_leaves_out_a_report_on_other_cases_than_committed(setup) -> None:  # type: ignore[no-untyped-def]
    params = Params.from_dict(
        {"testers": 3, "pooled_cases": True, "case_commitments": True, "phase_timeout": 3}, base=preset("minimal")
    )
    client, driver, _, book, agents = _relay_network(setup, params)
    _play(driver, book, _test_phase)
    state = client.state
    miner, co = int(state.roles.testers[0]), int(state.roles.testers[1])
    sent = [s for a in agents for s in a.messages(state)]
    # the co-tester signs its report naming other cases than it committed to
    wrong = [
        agents[co]._signed(replace(s.message, test_cases_digest=b"\x07" * 32)) if s.message.participant == co else s
        for s in sent
    ]
    with pytest.raises(DerelaylError, match=rf"no report from co-tester\(s\) \[{co}\]"):
        agents[miner].propose(state, wrong, now=state.phase_start)
    late = agents[miner].propose(state, wrong, now=state.phase_start + 2)
    assert co not in [r.tester for r in late.block.co_testers]
    assert isinstance(late.block, blocks.TestBlock)
    process_block(state.copy(), replace(late.block, time=state.phase_start + 3))


def test_simulate_takes_case_commitments_and_its_honest_latent_testers_change_no_result(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from derelayl.cli import app

    summaries = []
    for flag in ("--no-case-commitments", "--case-commitments"):
        out = tmp_path / flag
        args = ["simulate", "--participants", "40", "--rounds", "20", "--testers", "3", flag, "--out", str(out)]
        result = CliRunner().invoke(app, [*args, "--quiet"])
        assert result.exit_code == 0, result.output
        summaries.append(json.loads((out / "summary.json").read_text()))
    plain, committed = summaries
    assert committed["config"]["params"]["case_commitments"] is True
    assert "case_commitments" not in plain["config"]["params"]
    for key in ("final", "per_round", "balance_quantiles_coins", "version_shares"):
        assert plain[key] == committed[key]
