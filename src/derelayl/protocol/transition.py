"""The state transition: one ``process_*`` function per block of a round.

Every function first verifies everything (each check preceded by a ``# Verify`` comment)
and only then changes state, so an invalid block raises a specific ``ProtocolError`` and
leaves the state exactly as it was. Randomness comes from the beacon (``protocol.beacon``);
each block's ``randomness`` is mixed in when it is applied (the settlement mixes before it
ranks and draws the next round's roles, so neither is known before the block exists).

Every check here is one the EVM contract (``contracts/DeRelayL.vy``) makes in the same
order of concerns; ``tests/test_contract_differential.py`` keeps the two together.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from derelayl.errors import (
    DuplicateError,
    MalformedError,
    PhaseError,
    RoleError,
    UnknownParticipantError,
)
from derelayl.protocol.accounts import (
    compute_mint_room,
    pay_miner,
    process_join,
    process_transfer,
    register,
)
from derelayl.protocol.appeals import decide, hold, process_challenge, verify_appeals
from derelayl.protocol.auction import compute_matching, compute_ranking, is_canonical_bid_order
from derelayl.protocol.beacon import AUCTION, SETTLE, compute_keys, compute_mixed_beacon
from derelayl.protocol.blocks import (
    Block,
    Challenge,
    CommitBlock,
    CommitReceipt,
    DepositBlock,
    DepositReceipt,
    Join,
    Operation,
    PostedCommitment,
    SettleBlock,
    SettleReceipt,
    TestBlock,
    TestReceipt,
    Transfer,
)
from derelayl.protocol.roles import assign_roles
from derelayl.protocol.scores import lower_median, set_scores
from derelayl.protocol.state import Models, Pairs, State
from derelayl.protocol.types import Phase
from derelayl.protocol.validate import (
    DIGEST_SIZE,
    in_order_within,
    timed_out,
    validate_new_keys,
    verify_bids,
    verify_committed_cases,
    verify_header,
    verify_minimum_bids,
    verify_report,
)

__all__ = [
    "MAX_FHE_KEY",
    "process_block",
    "process_commit_block",
    "process_deposit_block",
    "process_operation",
    "process_settle_block",
    "process_test_block",
    "total_money",
]

I64 = NDArray[np.int64]
MAX_FHE_KEY = 4096
"""Bytes of the FHE public-key field a commit block may carry."""


# ---------------------------------------------------------------- helpers (checks)


def _mix(state: State, randomness: bytes) -> None:
    state.beacon = compute_mixed_beacon(state.beacon, randomness)


def _end_phase(state: State, block: Block, phase: Phase) -> None:
    state.phase = phase
    state.phase_start = block.time


# ---------------------------------------------------------------- the four blocks


def process_deposit_block(state: State, block: DepositBlock) -> DepositReceipt:
    """Bids in (in canonical order), auction run, deposits escrowed. New keys register here."""
    verify_header(state, block, Phase.DEPOSIT)
    assert state.roles is not None
    roles, k = state.roles, state.params.k
    trainer_bids, mo_bids = block.trainer_bids, block.mo_bids
    verify_bids(state, trainer_bids, roles.trainers, "trainer", 1)
    verify_minimum_bids(state, trainer_bids)
    verify_bids(state, mo_bids, roles.model_owners, "model owner", k)
    # Verify trainer bids are listed highest first, equal bids in the round's auction-key order
    keys = compute_keys(state.beacon, AUCTION, state.n_participants)
    if not is_canonical_bid_order(trainer_bids.amount, keys[trainer_bids.participant]):
        raise MalformedError("deposit block: trainer bids are not in canonical order (highest bid first, ties by key)")
    # Verify model-owner bids are listed in the order of the live models their bidders hold
    live_pos = np.full(state.n_participants, -1, dtype=np.int64)
    live_pos[state.live.owner] = np.arange(len(state.live), dtype=np.int64)
    owner_pos = live_pos[mo_bids.participant]
    if owner_pos.size > 1 and not bool((owner_pos[:-1] < owner_pos[1:]).all()):
        raise MalformedError("deposit block: model-owner bids are not in the order of the live models")
    validate_new_keys(state.key_index, block.joins)
    case_digests = _verify_case_commitments(state, block)

    owner_of_pair, trainer_of_pair = compute_matching(len(trainer_bids), len(mo_bids), k)
    pairs = Pairs(
        live_pos=owner_pos[owner_of_pair],
        model_owner=mo_bids.participant[owner_of_pair],
        mo_deposit=mo_bids.amount[owner_of_pair],
        trainer=trainer_bids.participant[trainer_of_pair],
        trainer_deposit=trainer_bids.amount[trainer_of_pair],
    )

    # Apply: escrow deposits, pay the miner, register newcomers.
    np.subtract.at(state.balances, pairs.model_owner, pairs.mo_deposit)
    state.balances[pairs.trainer] -= pairs.trainer_deposit
    state.escrow += int(pairs.mo_deposit.sum() + pairs.trainer_deposit.sum())
    if state.params.trainer_holds_parent:
        parent_version = state.live.version[pairs.live_pos]
        state.held_version[pairs.trainer] = np.maximum(state.held_version[pairs.trainer], parent_version)
    state.pairs = pairs
    state.case_digests = case_digests
    reward = pay_miner(state, block.miner, state.params.reward_per_deposit * len(pairs))
    register(state, block.joins)
    _mix(state, block.randomness)
    _end_phase(state, block, Phase.COMMIT)
    return DepositReceipt(pairs=pairs, parent_model=state.live.model_id[pairs.live_pos], miner_reward=reward)


def process_commit_block(state: State, block: CommitBlock) -> CommitReceipt:
    """Matched trainers commit to their new models, in pair order, before any test case is known."""
    verify_header(state, block, Phase.COMMIT)
    trainers = np.asarray(block.trainers)
    # Verify one commitment per listed trainer, each a 32-byte digest, and a bounded FHE key
    if trainers.ndim != 1 or trainers.size != len(block.commitments):
        raise MalformedError("commit block: trainer and commitment lists differ in length")
    if trainers.size and trainers.dtype != np.int64:
        raise MalformedError("commit block: trainers must be integers")
    trainers = trainers.astype(np.int64)
    # (map/set run in C: this check stays cheap at tens of thousands of commitments)
    if set(map(type, block.commitments)) - {bytes} or set(map(len, block.commitments)) - {DIGEST_SIZE}:
        raise MalformedError(f"commit block: a commitment must be a {DIGEST_SIZE}-byte digest")
    if not isinstance(block.fhe_public_key, bytes) or len(block.fhe_public_key) > MAX_FHE_KEY:
        raise MalformedError(f"commit block: fhe_public_key must be at most {MAX_FHE_KEY} bytes")
    # Verify each committer is a trainer matched this round
    pair_of = np.full(state.n_participants, -1, dtype=np.int64)
    pair_of[state.pairs.trainer] = np.arange(len(state.pairs), dtype=np.int64)
    known = (trainers >= 0) & (trainers < state.n_participants)
    if not known.all():
        raise UnknownParticipantError(f"commitment from unknown participant {int(trainers[~known][0])}")
    pair_pos = pair_of[trainers]
    if (pair_pos < 0).any():
        who = int(trainers[pair_pos < 0][0])
        raise RoleError(f"participant {who} committed but was not matched as a trainer in round {state.round}")
    # Verify commitments are listed in pair order (so no trainer commits twice) and no digest repeats
    bad = np.flatnonzero(pair_pos[:-1] >= pair_pos[1:])
    if bad.size:
        if pair_pos[bad[0]] == pair_pos[bad[0] + 1]:
            raise DuplicateError(f"commit block: trainer {int(trainers[bad[0]])} committed twice")
        raise MalformedError("commit block: commitments are not in the order of the pairs")
    if len(set(block.commitments)) != len(block.commitments):
        raise DuplicateError("commit block: duplicate commitment digest")
    # Verify the block carries every commitment posted straight to the ledger (no miner omits one)
    listed = dict(zip(trainers.tolist(), block.commitments, strict=True))
    for trainer, (digest, _) in sorted(state.posted.items()):
        if listed.get(trainer) != digest:
            raise MalformedError(f"commit block leaves out the commitment trainer {trainer} posted to the ledger")

    n = int(trainers.size)
    version = state.round + 1
    model_id = np.arange(state.next_model_id, state.next_model_id + n, dtype=np.int64)
    state.commits = Models(
        model_id=model_id,
        owner=trainers,
        version=np.full(n, version, dtype=np.int64),
        score=np.zeros(n, dtype=np.int64),
    )
    state.commit_pair = pair_pos
    state.commitments = list(block.commitments)
    state.posted = {}
    state.next_model_id += n
    if n:
        state.latest_version = max(state.latest_version, version)
        state.held_version[trainers] = version
        state.trained_version[trainers] = version
        if state.params.encryption_miner_holds_models:
            state.held_version[block.miner] = max(int(state.held_version[block.miner]), version)
    reward = pay_miner(state, block.miner, state.params.reward_per_commitment * n)
    _mix(state, block.randomness)
    _end_phase(state, block, Phase.TEST)
    parent_model = state.live.model_id[state.pairs.live_pos[pair_pos]]
    return CommitReceipt(model_id=model_id, parent_model=parent_model, miner_reward=reward)


def _verify_case_commitments(state: State, block: DepositBlock) -> dict[int, bytes]:
    """The testers' case commitments a deposit block carries, checked: tester -> digest."""
    cases = block.case_commitments
    # Verify case commitments only where the rules take them, each a 32-byte digest
    if not isinstance(cases, tuple):
        raise MalformedError("deposit block: case_commitments must be a list")
    if not state.params.case_commitments:
        if cases:
            raise MalformedError("deposit block: case commitments, but the rules take none (case_commitments is off)")
        return {}
    for c in cases:
        if not isinstance(c.digest, bytes) or len(c.digest) != DIGEST_SIZE:
            raise MalformedError(
                f"deposit block: tester {c.tester!r}'s case commitment must be a {DIGEST_SIZE}-byte digest"
            )
    # Verify one case commitment from each of the round's testers, in role order; once the
    # phase has timed out, a silent tester's may be missing (it may then not report)
    assert state.roles is not None
    expected = state.roles.testers.tolist()
    given = [c.tester for c in cases]
    if given != expected and not (timed_out(state, block) and in_order_within(given, expected)):
        raise RoleError(f"deposit block: case commitments from {given}, but the round's testers are {expected}")
    return {c.tester: c.digest for c in cases}


def process_posted_commitment(state: State, post: PostedCommitment) -> None:
    """A matched trainer's commitment, posted straight to the ledger in the commit phase; the
    commit block must then carry it (against miners that leave commitments out)."""
    # Verify it is this round's commit phase and the digest is well formed
    if state.phase != Phase.COMMIT or post.round != state.round:
        raise PhaseError(f"a commitment for round {post.round} posted outside that round's commit phase")
    if not isinstance(post.digest, bytes) or len(post.digest) != DIGEST_SIZE:
        raise MalformedError(f"a posted commitment must be a {DIGEST_SIZE}-byte digest")
    # Verify the poster is a trainer matched this round, posting once, a digest nobody posted
    trainer = post.trainer
    if not isinstance(trainer, int) or isinstance(trainer, bool) or not 0 <= trainer < state.n_participants:
        raise UnknownParticipantError(f"commitment posted by unknown participant {trainer!r}")
    if trainer not in state.pairs.trainer.tolist():
        raise RoleError(f"participant {trainer} posted a commitment but was not matched as a trainer")
    if trainer in state.posted:
        raise DuplicateError(f"trainer {trainer} already posted a commitment this round")
    if any(post.digest == digest for digest, _ in state.posted.values()):
        raise DuplicateError("a commitment with this digest was already posted this round")
    state.posted[trainer] = (post.digest, post.signature)


def process_test_block(state: State, block: TestBlock) -> TestReceipt:
    """The round's testers publish fresh test cases and score every committed model; a model's
    score is the lower median over testers (with the reference single tester: its score). With
    pooled cases, a tester whose scores are not the medians is not paid."""
    verify_header(state, block, Phase.TEST)
    assert state.roles is not None
    params = state.params
    # Verify the required number of test cases
    if block.n_test_cases != params.test_cases:
        raise MalformedError(f"test block: {block.n_test_cases} test cases, the rules require {params.test_cases}")
    verify_report(state, block.test_cases_digest, block.scores, "the testing miner")
    verify_committed_cases(state, block.miner, block.test_cases_digest)
    # Verify one report from each co-tester drawn this round, in role order; once the phase
    # has timed out, a silent co-tester's report may be missing (it forfeits its reward)
    expected = state.roles.testers[1:].tolist()
    given = [report.tester for report in block.co_testers]
    if given != expected and not (timed_out(state, block) and in_order_within(given, expected)):
        raise RoleError(f"test block: co-tester reports from {given}, but the round's co-testers are {expected}")
    for report in block.co_testers:
        verify_report(state, report.test_cases_digest, report.scores, f"co-tester {report.tester}")
        verify_committed_cases(state, report.tester, report.test_cases_digest)

    rows = np.stack([block.scores.astype(np.int64), *(r.scores.astype(np.int64) for r in block.co_testers)])
    medians = lower_median(rows)
    n = len(state.commits)
    set_scores(state, medians)
    amount = params.reward_per_test_case * params.test_cases + params.reward_per_tested_model * n
    # with pooled cases, honest testers agree: one whose scores are not the median is not paid
    paid = [not params.pooled_cases or bool((row == medians).all()) for row in rows]
    disagreed = params.appeal_testers and not all(paid)
    if disagreed or params.challenge_bond:  # hold every reward; a disagreement opens the appeal
        _mix(state, block.randomness)
        testers = [block.miner, *(r.tester for r in block.co_testers)]
        held = hold(state, testers, rows, amount, open_appeal=bool(disagreed))
        _end_phase(state, block, Phase.SETTLE)
        return TestReceipt(miner_reward=0, held=held)
    reward = pay_miner(state, block.miner, amount) if paid[0] else 0
    co_reward = 0
    for report, ok in zip(block.co_testers, paid[1:], strict=True):
        co_reward += pay_miner(state, report.tester, amount) if ok else 0
    _mix(state, block.randomness)
    _end_phase(state, block, Phase.SETTLE)
    return TestReceipt(miner_reward=reward, co_tester_reward=co_reward)


def process_settle_block(state: State, block: SettleBlock) -> SettleReceipt:
    """Decide a round's held test rewards and open appeal (``protocol.appeals``); rank, select the top fraction,
    refund winners, burn the rest, pay lineages."""
    verify_header(state, block, Phase.SETTLE)
    verify_appeals(state, block)
    params = state.params
    commits, pairs = state.commits, state.pairs
    n_models = len(commits)

    appeal_reward, forfeited = decide(state, block.appeals) if state.dispute is not None else (0, 0)
    _mix(state, block.randomness)
    rank = compute_ranking(commits.score, compute_keys(state.beacon, SETTLE, n_models))
    # the top fraction of all models, taken among those the improvement rule lets through
    rank = rank[state.commit_eligible[rank]]
    chosen = rank[: params.n_selected(n_models)]
    chosen_pairs = state.commit_pair[chosen]
    won = np.zeros(len(pairs), dtype=bool)
    won[chosen_pairs] = True

    # Refund the deposits of selected models; burn all others (incl. trainers that dropped out).
    state.balances[pairs.trainer[won]] += pairs.trainer_deposit[won]
    np.add.at(state.balances, pairs.model_owner[won], pairs.mo_deposit[won])
    refunded = int(pairs.trainer_deposit[won].sum() + pairs.mo_deposit[won].sum())
    burned = state.escrow - refunded
    state.escrow = 0
    state.burned += burned

    amount = (params.reward_per_settled_model + params.reward_per_model_case * params.test_cases) * n_models
    reward = pay_miner(state, block.miner, amount)

    payees = commits.owner[chosen] if params.lineage_payee == "trainer" else pairs.model_owner[chosen_pairs]
    payout = _limit_payout(state, state.lineage.settle(payees, pairs.live_pos[chosen_pairs]))
    state.balances += payout
    minted = int(payout.sum())
    state.minted += minted

    if chosen.size:
        state.live = commits.take(chosen)
    receipt = SettleReceipt(
        selected_model=commits.model_id[chosen],
        selected_owner=commits.owner[chosen],
        refunded=refunded,
        burned=burned,
        lineage_minted=minted,
        lineage_payout=payout,
        miner_reward=reward,
        appeal_reward=appeal_reward,
        forfeited=forfeited,
    )
    _next_round(state, block)
    return receipt


def _limit_payout(state: State, payout: I64) -> I64:
    """Under a supply cap, lower the reward per (ancestor, selected descendant) to fit: with
    C such counts and room A, each is paid floor(A / C) units instead of ``lineage_reward``.
    (One rate for every count, so a backend that pays the trunk lazily can apply it.)"""
    total = int(payout.sum())
    allowed = compute_mint_room(state, total)
    if allowed == total:
        return payout
    reward = state.params.lineage_reward  # ``capped`` pays a constant reward per count
    counts = payout // reward
    return counts * (allowed // int(counts.sum()))


def _next_round(state: State, block: SettleBlock) -> None:
    state.round += 1
    _end_phase(state, block, Phase.DEPOSIT)
    state.pairs = Pairs()
    state.commits = Models()
    state.commit_pair = np.zeros(0, dtype=np.int64)
    state.commit_eligible = np.zeros(0, dtype=bool)
    state.commitments = []
    state.case_digests = {}
    state.roles = assign_roles(state)


def process_block(state: State, block: Block) -> DepositReceipt | CommitReceipt | TestReceipt | SettleReceipt:
    """Apply any of the four blocks."""
    if isinstance(block, DepositBlock):
        return process_deposit_block(state, block)
    if isinstance(block, CommitBlock):
        return process_commit_block(state, block)
    if isinstance(block, TestBlock):
        return process_test_block(state, block)
    if isinstance(block, SettleBlock):
        return process_settle_block(state, block)
    raise MalformedError(f"not a block: {type(block).__name__}")


def process_operation(state: State, op: Operation) -> object:
    """Apply a block, a registration, a transfer, a posted commitment or a challenge (the
    contract backend's history)."""
    if isinstance(op, Join):
        return process_join(state, op)
    if isinstance(op, Transfer):
        process_transfer(state, op)
        return None
    if isinstance(op, PostedCommitment):
        process_posted_commitment(state, op)
        return None
    if isinstance(op, Challenge):
        process_challenge(state, op)
        return None
    return process_block(state, op)


def total_money(state: State) -> tuple[int, int]:
    """(minted - burned, balances + escrow): equal after every block."""
    return state.supply, int(state.balances.sum()) + state.escrow
