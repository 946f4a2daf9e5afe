"""(state before, block, state after | error) cases for every transition, shared by the
per-transition test files and written as JSON vectors to ``tests/vectors/`` for any backend
(the EVM contract, another language) to replay.

Regenerate the files with ``python tests/vector_cases.py``; a test checks they are current.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from derelayl import errors
from derelayl.agents.latent import LatentPopulation
from derelayl.learning.latent import LatentTrainer
from derelayl.protocol import Bids, Block, DepositBlock, Params, Phase, State, TestBlock, process_block
from derelayl.protocol.genesis import initialize_state
from derelayl.protocol.serialize import block_from_dict, block_to_dict, state_from_dict, state_to_dict

VECTOR_DIR = Path(__file__).parent / "vectors"
Case = tuple[str, State, Block]


def _network(
    rounds: int, phase: Phase, testers: int = 1, participants: int = 8, **options: Any
) -> tuple[State, LatentPopulation]:
    """A small network advanced to (round, phase), with coins in circulation; block times
    count up from 1, as a ledger's block numbers do."""
    params = Params(**{"k": 2, "test_cases": 4, "testers": testers, **options})
    keys = [(i + 1).to_bytes(32, "big") for i in range(participants)]
    state = initialize_state(params, b"\x2a" * 32, keys)
    net = LatentPopulation(LatentTrainer(seed=11))
    while state.round < rounds or state.phase != phase:
        process_block(state, _next(state, net))
    return state, net


def _next(state: State, net: LatentPopulation) -> Block:
    return dataclasses.replace(net.next_block(state), time=state.phase_start + 1)


def _at(phase: Phase, rounds: int = 6, testers: int = 1, **options: Any) -> tuple[State, Block]:
    state, net = _network(rounds, phase, testers, **options)
    return state, _next(state, net)


def _two_owners() -> tuple[State, Block]:
    """The first deposit phase with at least two model-owner bids (16 participants)."""
    state, net = _network(1, Phase.DEPOSIT, participants=16, k=4)
    while len(_next(state, net).mo_bids) < 2:  # type: ignore[union-attr]
        for _ in range(4):
            process_block(state, _next(state, net))
    return state, _next(state, net)


def _reversed_bids(bids: Bids) -> Bids:
    return Bids(bids.participant[::-1].copy(), bids.amount[::-1].copy())


def deposit_cases() -> list[Case]:
    state, block = _at(Phase.DEPOSIT)
    assert state.roles is not None
    t0 = int(block.trainer_bids.participant[0])
    miner = int(state.roles.miners[0])
    mo = int(state.roles.model_owners[0])
    return [
        ("valid_reference_bids", state, block),
        ("valid_no_bids", state, dataclasses.replace(block, trainer_bids=Bids(), mo_bids=Bids())),
        ("valid_registration", state, dataclasses.replace(block, joins=(b"\x99" * 32,))),
        ("duplicate_registration", state, dataclasses.replace(block, joins=(state.keys[3],))),
        ("malformed_registration_key", state, dataclasses.replace(block, joins=(b"\x01" * 31,))),
        (
            "bid_above_balance",
            state,
            dataclasses.replace(block, trainer_bids=Bids.of([(t0, int(state.balances[t0]) + 1)])),
        ),
        ("negative_bid", state, dataclasses.replace(block, trainer_bids=Bids.of([(t0, -1)]))),
        ("bid_by_non_trainer", state, dataclasses.replace(block, trainer_bids=Bids.of([(miner, 0)]))),
        (
            "model_owner_bid_above_balance_times_k",
            state,
            dataclasses.replace(block, mo_bids=Bids.of([(mo, int(state.balances[mo]) // 2 + 1)])),
        ),
        ("bid_by_unknown_participant", state, dataclasses.replace(block, trainer_bids=Bids.of([(99, 0)]))),
        ("duplicate_bid", state, dataclasses.replace(block, trainer_bids=Bids.of([(t0, 0), (t0, 0)]))),
        ("wrong_miner", state, dataclasses.replace(block, miner=(block.miner + 1) % 8)),
        ("replayed_from_earlier_round", state, dataclasses.replace(block, round=state.round - 1)),
        (
            "trainer_bids_out_of_order",
            state,
            dataclasses.replace(block, trainer_bids=_reversed_bids(block.trainer_bids)),
        ),
        ("model_owner_bids_out_of_order", *_reversed_owners()),
        ("valid_with_randomness", state, dataclasses.replace(block, randomness=b"\x17" * 32)),
        ("randomness_too_long", state, dataclasses.replace(block, randomness=b"\x17" * 33)),
        *timeout_cases(),
    ]


def _reversed_owners() -> tuple[State, Block]:
    state, block = _two_owners()
    assert isinstance(block, DepositBlock)
    return state, dataclasses.replace(block, mo_bids=_reversed_bids(block.mo_bids))


def timeout_cases() -> list[Case]:
    """With ``phase_timeout``, anyone may produce a phase the drawn miner left undone."""
    state, block = _at(Phase.DEPOSIT, phase_timeout=5)
    other = (block.miner + 1) % 8
    start = state.phase_start
    return [
        ("late_block_by_any_participant", state, dataclasses.replace(block, miner=other, time=start + 5)),
        ("early_block_by_another_participant", state, dataclasses.replace(block, miner=other, time=start + 4)),
        ("block_before_its_phase_began", state, dataclasses.replace(block, time=start - 1)),
    ]


def commit_cases() -> list[Case]:
    state, block = _at(Phase.COMMIT)
    after_test, _ = _network(6, Phase.SETTLE)
    digests = block.commitments
    unmatched = next(i for i in range(8) if i not in set(state.pairs.trainer.tolist()))
    return [
        ("valid_commitments", state, block),
        (
            "valid_nobody_commits",
            state,
            dataclasses.replace(block, trainers=np.zeros(0, dtype=np.int64), commitments=()),
        ),
        ("duplicate_commitment_digest", state, dataclasses.replace(block, commitments=(digests[0],) * len(digests))),
        (
            "trainer_commits_twice",
            state,
            dataclasses.replace(
                block, trainers=np.array([block.trainers[0]] * 2), commitments=(digests[0], b"\x05" * 32)
            ),
        ),
        (
            "commit_by_unmatched_participant",
            state,
            dataclasses.replace(block, trainers=np.array([unmatched]), commitments=(b"\x06" * 32,)),
        ),
        (
            "commit_by_unknown_participant",
            state,
            dataclasses.replace(block, trainers=np.array([1234]), commitments=(b"\x06" * 32,)),
        ),
        ("malformed_digest", state, dataclasses.replace(block, commitments=(b"\x01" * 5, *digests[1:]))),
        (
            "commitments_out_of_pair_order",
            state,
            dataclasses.replace(block, trainers=block.trainers[::-1].copy(), commitments=digests[::-1]),
        ),
        (
            "commitment_after_testing_block",
            after_test,
            dataclasses.replace(block, miner=after_test.roles.block_miners[1]),
        ),
    ]


def scoring_cases() -> list[Case]:
    state, block = _at(Phase.TEST)
    return [
        ("valid_scores", state, block),
        ("too_few_test_cases", state, dataclasses.replace(block, n_test_cases=1)),
        ("score_count_mismatch", state, dataclasses.replace(block, scores=block.scores[:-1])),
        ("fractional_scores", state, dataclasses.replace(block, scores=block.scores.astype(np.float64) + 0.5)),
        ("malformed_digest", state, dataclasses.replace(block, test_cases_digest=b"short")),
        ("wrong_miner", state, dataclasses.replace(block, miner=(block.miner + 1) % 8)),
        *co_tester_cases(),
        *silent_co_tester_cases(),
    ]


def silent_co_tester_cases() -> list[Case]:
    """With ``phase_timeout``, a test block may leave out a silent co-tester once the phase
    has timed out (in role order), never before."""
    state, block = _at(Phase.TEST, testers=3, phase_timeout=5)
    assert isinstance(block, TestBlock)
    start = state.phase_start
    first, second = block.co_testers
    return [
        (
            "silent_co_tester_left_out_after_timeout",
            state,
            dataclasses.replace(block, co_testers=(second,), time=start + 5),
        ),
        (
            "silent_co_tester_left_out_before_timeout",
            state,
            dataclasses.replace(block, co_testers=(second,), time=start + 4),
        ),
        (
            "late_reports_out_of_role_order",
            state,
            dataclasses.replace(block, co_testers=(second, first), time=start + 5),
        ),
    ]


def co_tester_cases() -> list[Case]:
    """Three testers: the testing miner and two co-testers; models ranked by the median."""
    state, block = _at(Phase.TEST, testers=3)
    assert isinstance(block, TestBlock) and len(block.co_testers) == 2
    first, second = block.co_testers
    lying = dataclasses.replace(first, scores=first.scores + 100 * 10**9)
    stranger = next(int(m) for m in state.roles.miners if m not in state.roles.testers)
    return [
        ("three_testers_valid", state, block),
        ("three_testers_one_lies_median_holds", state, dataclasses.replace(block, co_testers=(lying, second))),
        ("co_tester_report_missing", state, dataclasses.replace(block, co_testers=(first,))),
        ("co_tester_reports_out_of_order", state, dataclasses.replace(block, co_testers=(second, first))),
        (
            "report_from_a_non_tester",
            state,
            dataclasses.replace(block, co_testers=(dataclasses.replace(first, tester=stranger), second)),
        ),
        (
            "co_tester_score_count_mismatch",
            state,
            dataclasses.replace(block, co_testers=(dataclasses.replace(first, scores=first.scores[:-1]), second)),
        ),
    ]


def settle_cases() -> list[Case]:
    state, block = _at(Phase.SETTLE)
    early, _ = _network(6, Phase.TEST)
    assert early.roles is not None
    return [
        ("valid_settlement", state, block),
        ("valid_settlement_round_1", *_at(Phase.SETTLE, rounds=1)),
        ("valid_settlement_paying_trainers", *_at(Phase.SETTLE, lineage_payee="trainer")),
        ("valid_settlement_capped", *_at(Phase.SETTLE, reward_scheme="capped", supply_cap=3 * 10**6)),
        ("valid_settlement_decay", *_at(Phase.SETTLE, reward_scheme="decay")),
        ("settle_before_testing", early, dataclasses.replace(block, miner=early.roles.block_miners[3])),
        ("wrong_miner", state, dataclasses.replace(block, miner=(block.miner + 1) % 8)),
    ]


TRANSITIONS: dict[str, Callable[[], list[Case]]] = {
    "deposit": deposit_cases,
    "commit": commit_cases,
    "test": scoring_cases,
    "settle": settle_cases,
}


def run_case(name: str, state: State, block: Block) -> dict[str, Any]:
    """Apply ``block`` to a copy of ``state``: the vector records post-state or error."""
    post = state.copy()
    vector: dict[str, Any] = {"name": name, "pre": state_to_dict(state), "block": block_to_dict(block)}
    try:
        process_block(post, block)
    except errors.ProtocolError as exc:
        vector |= {"error": type(exc).__name__, "post": None}
    else:
        vector |= {"error": None, "post": state_to_dict(post)}
    return vector


def replay(vector: dict[str, Any]) -> dict[str, Any] | str:
    """What a backend does with a vector: post-state as plain data, or the error's name.
    On error the state must be unchanged: checked by the caller against ``pre``."""
    state = state_from_dict(vector["pre"])
    block = block_from_dict(vector["block"])
    try:
        process_block(state, block)
    except errors.ProtocolError as exc:
        assert state_to_dict(state) == vector["pre"], "rejected block changed state"
        return type(exc).__name__
    return state_to_dict(state)


def generate() -> dict[str, list[dict[str, Any]]]:
    return {kind: [run_case(*case) for case in cases()] for kind, cases in TRANSITIONS.items()}


def load(kind: str) -> list[dict[str, Any]]:
    return json.loads((VECTOR_DIR / f"{kind}.json").read_text())


def main() -> None:
    VECTOR_DIR.mkdir(exist_ok=True)
    for kind, vectors in generate().items():
        (VECTOR_DIR / f"{kind}.json").write_text(json.dumps(vectors, indent=1, sort_keys=True) + "\n")
        print(f"{kind}: {len(vectors)} vectors")


if __name__ == "__main__":
    main()
