"""The state transition: one ``process_*`` function per block of a round.

Every function first verifies everything (each check preceded by a ``# Verify`` comment)
and only then changes state, so an invalid block raises a specific ``ProtocolError`` and
leaves the state exactly as it was. Randomness comes from ``compute_rng`` (seed in state).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from derelayl.errors import (
    BalanceError,
    DuplicateError,
    MalformedError,
    PhaseError,
    RoleError,
    UnknownParticipantError,
    WrongMinerError,
)
from derelayl.protocol.auction import compute_matching, compute_ranking
from derelayl.protocol.blocks import (
    Bids,
    Block,
    CommitBlock,
    CommitReceipt,
    DepositBlock,
    DepositReceipt,
    SettleBlock,
    SettleReceipt,
    TestBlock,
    TestReceipt,
)
from derelayl.protocol.roles import assign_roles
from derelayl.protocol.state import KEY_SIZE, Models, Pairs, State, compute_rng
from derelayl.protocol.types import Phase

__all__ = [
    "process_block",
    "process_commit_block",
    "process_deposit_block",
    "process_settle_block",
    "process_test_block",
    "total_money",
    "validate_new_keys",
]

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
DIGEST_SIZE = 32


# ---------------------------------------------------------------- helpers (checks)


def validate_new_keys(key_index: dict[bytes, int], keys: Iterable[bytes]) -> None:
    """Registration is permissionless: any well-formed, not yet registered key may join."""
    seen: set[bytes] = set()
    for key in keys:
        # Verify the key is a 32-byte public key
        if not isinstance(key, bytes) or len(key) != KEY_SIZE:
            raise MalformedError(f"registration: public key must be {KEY_SIZE} bytes")
        # Verify it is not registered already
        if key in key_index or key in seen:
            raise DuplicateError(f"registration: key {key.hex()[:16]}… is already registered")
        seen.add(key)


def _verify_header(state: State, block: Block, phase: Phase) -> None:
    # Verify the block belongs to the current round and phase
    if block.round != state.round:
        raise PhaseError(
            f"{block.kind.name.lower()} block for round {block.round}, but the chain is in round {state.round}"
        )
    if state.phase != phase:
        raise PhaseError(
            f"{block.kind.name.lower()} block out of phase: round {state.round} expects a "
            f"{state.phase.name.lower()} block"
        )
    # Verify the block comes from the miner drawn for it
    assert state.roles is not None
    expected = state.roles.block_miners[int(phase)]
    if block.miner != expected:
        raise WrongMinerError(
            f"{block.kind.name.lower()} block of round {state.round} produced by participant "
            f"{block.miner}, but participant {expected} was drawn"
        )


def _verify_bids(state: State, bids: Bids, eligible: I64, who: str, per: int) -> None:
    """Bids must come once each from an eligible participant and be covered ``per`` times."""
    # Verify the arrays are well formed
    if bids.participant.shape != bids.amount.shape or bids.participant.ndim != 1:
        raise MalformedError(f"{who} bids: participant and amount lists differ in length")
    if bids.participant.size == 0:
        return
    # Verify every bidder is registered
    n = state.n_participants
    unknown = bids.participant[(bids.participant < 0) | (bids.participant >= n)]
    if unknown.size:
        raise UnknownParticipantError(f"{who} bid from unknown participant {int(unknown[0])}")
    # Verify every bidder holds the role this round
    has_role = np.zeros(n, dtype=bool)
    has_role[eligible] = True
    outside = bids.participant[~has_role[bids.participant]]
    if outside.size:
        raise RoleError(f"participant {int(outside[0])} bid as a {who} but is not a {who} in round {state.round}")
    # Verify nobody bids twice
    counts = np.bincount(bids.participant, minlength=n)
    if counts.max() > 1:
        raise DuplicateError(f"participant {int(np.argmax(counts))} bid twice as a {who}")
    # Verify amounts are non-negative and covered by the bidder's balance
    if (bids.amount < 0).any():
        raise BalanceError(f"{who} bid of a negative amount")
    short = bids.amount * per > state.balances[bids.participant]
    if short.any():
        i = int(np.flatnonzero(short)[0])
        raise BalanceError(
            f"{who} {int(bids.participant[i])} bid {int(bids.amount[i])} units (x{per}) above "
            f"its balance of {int(state.balances[bids.participant[i]])}"
        )


def _mint(state: State, amount: int) -> int:
    """How much of ``amount`` may be minted now (``capped`` scheme limits supply)."""
    p = state.params
    if p.reward_scheme == "capped" and p.supply_cap is not None:
        return max(0, min(amount, p.supply_cap - state.supply))
    return amount


def _pay_miner(state: State, miner: int, amount: int) -> int:
    amount = _mint(state, amount)
    state.balances[miner] += amount
    state.minted += amount
    return amount


# ---------------------------------------------------------------- the four blocks


def process_deposit_block(state: State, block: DepositBlock) -> DepositReceipt:
    """Bids in, auction run, deposits escrowed. New keys register here."""
    _verify_header(state, block, Phase.DEPOSIT)
    assert state.roles is not None
    roles = state.roles
    k = state.params.k
    _verify_bids(state, block.trainer_bids, roles.trainers, "trainer", 1)
    _verify_bids(state, block.mo_bids, roles.model_owners, "model owner", k)
    validate_new_keys(state.key_index, block.joins)

    # Rank live models (of owners who bid) by score and trainers by bid, then match.
    rng = compute_rng(state, "auction")
    mo_amount = np.full(state.n_participants, -1, dtype=np.int64)
    mo_amount[block.mo_bids.participant] = block.mo_bids.amount
    live_rank = compute_ranking(state.live.score, rng)
    live_rank = live_rank[mo_amount[state.live.owner[live_rank]] >= 0]
    trainer_rank = compute_ranking(block.trainer_bids.amount, rng)
    live_pos, trainer_pos = compute_matching(live_rank, trainer_rank, k)
    model_owner = state.live.owner[live_pos]
    pairs = Pairs(
        live_pos=live_pos,
        model_owner=model_owner,
        mo_deposit=mo_amount[model_owner],
        trainer=block.trainer_bids.participant[trainer_pos],
        trainer_deposit=block.trainer_bids.amount[trainer_pos],
    )

    # Apply: escrow deposits, hand the parent model to the trainer, pay the miner, register.
    np.subtract.at(state.balances, pairs.model_owner, pairs.mo_deposit)
    state.balances[pairs.trainer] -= pairs.trainer_deposit
    state.escrow += int(pairs.mo_deposit.sum() + pairs.trainer_deposit.sum())
    state.held_version[pairs.trainer] = np.maximum(state.held_version[pairs.trainer], state.live.version[live_pos])
    state.pairs = pairs
    reward = _pay_miner(state, block.miner, state.params.reward_per_deposit * len(pairs))
    _register(state, block.joins)
    state.phase = Phase.COMMIT
    return DepositReceipt(pairs=pairs, parent_model=state.live.model_id[live_pos], miner_reward=reward)


def _register(state: State, keys: tuple[bytes, ...]) -> None:
    if not keys:
        return
    start = state.n_participants
    for offset, key in enumerate(keys):
        state.keys.append(key)
        state.key_index[key] = start + offset
    extra = len(keys)
    state.balances = np.concatenate([state.balances, np.zeros(extra, dtype=np.int64)])
    state.held_version = np.concatenate([state.held_version, np.full(extra, -1, dtype=np.int64)])
    state.lineage.grow(state.n_participants)


def process_commit_block(state: State, block: CommitBlock) -> CommitReceipt:
    """Matched trainers commit to their new models before any test case is known."""
    _verify_header(state, block, Phase.COMMIT)
    trainers = np.asarray(block.trainers, dtype=np.int64)
    # Verify one commitment per listed trainer, each a 32-byte digest
    if trainers.ndim != 1 or trainers.size != len(block.commitments):
        raise MalformedError("commit block: trainer and commitment lists differ in length")
    # (map/set run in C: this check stays cheap at tens of thousands of commitments)
    if set(map(type, block.commitments)) - {bytes} or set(map(len, block.commitments)) - {DIGEST_SIZE}:
        raise MalformedError(f"commit block: a commitment must be a {DIGEST_SIZE}-byte digest")
    if not isinstance(block.fhe_public_key, bytes):
        raise MalformedError("commit block: fhe_public_key must be bytes")
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
    # Verify no trainer commits twice and no digest repeats
    if np.unique(trainers).size != trainers.size:
        raise DuplicateError("commit block: a trainer committed twice")
    if len(set(block.commitments)) != len(block.commitments):
        raise DuplicateError("commit block: duplicate commitment digest")

    n = int(trainers.size)
    version = state.round + 1
    model_id = np.arange(state.next_model_id, state.next_model_id + n, dtype=np.int64)
    state.commits = Models(
        model_id=model_id,
        owner=trainers,
        version=np.full(n, version, dtype=np.int64),
        score=np.full(n, np.nan),
    )
    state.commit_pair = pair_pos
    state.commitments = list(block.commitments)
    state.next_model_id += n
    if n:
        state.latest_version = max(state.latest_version, version)
        state.held_version[trainers] = version
        if state.params.encryption_miner_holds_models:
            state.held_version[block.miner] = max(int(state.held_version[block.miner]), version)
    reward = _pay_miner(state, block.miner, state.params.reward_per_commitment * n)
    state.phase = Phase.TEST
    parent_model = state.live.model_id[state.pairs.live_pos[pair_pos]]
    return CommitReceipt(model_id=model_id, parent_model=parent_model, miner_reward=reward)


def _verify_report(state: State, digest: bytes, scores: F64, who: str) -> None:
    # Verify a digest of the test cases
    if not isinstance(digest, bytes) or len(digest) != DIGEST_SIZE:
        raise MalformedError(f"test block: {who}'s test_cases_digest must be a {DIGEST_SIZE}-byte digest")
    # Verify exactly one finite score per commitment
    if scores.ndim != 1 or scores.size != len(state.commits):
        raise MalformedError(f"test block: {who} gave {scores.size} scores for {len(state.commits)} committed models")
    if not np.isfinite(scores).all():
        raise MalformedError(f"test block: {who}'s scores must be finite numbers")


def process_test_block(state: State, block: TestBlock) -> TestReceipt:
    """The round's testers publish fresh test cases and score every committed model; a model's
    score is the median over testers (with the reference single tester: its score)."""
    _verify_header(state, block, Phase.TEST)
    assert state.roles is not None
    params = state.params
    # Verify the required number of test cases
    if block.n_test_cases != params.test_cases:
        raise MalformedError(f"test block: {block.n_test_cases} test cases, the rules require {params.test_cases}")
    rows = [np.asarray(block.scores, dtype=np.float64)]
    _verify_report(state, block.test_cases_digest, rows[0], "the testing miner")
    # Verify one report from each co-tester drawn this round, in role order
    expected = state.roles.testers[1:].tolist()
    given = [report.tester for report in block.co_testers]
    if given != expected:
        raise RoleError(f"test block: co-tester reports from {given}, but the round's co-testers are {expected}")
    for report in block.co_testers:
        rows.append(np.asarray(report.scores, dtype=np.float64))
        _verify_report(state, report.test_cases_digest, rows[-1], f"co-tester {report.tester}")

    state.commits.score = np.median(np.stack(rows), axis=0) if len(rows) > 1 else rows[0].copy()
    n = len(state.commits)
    amount = params.reward_per_test_case * params.test_cases + params.reward_per_tested_model * n
    reward = _pay_miner(state, block.miner, amount)
    co_reward = 0
    for report in block.co_testers:
        co_reward += _pay_miner(state, report.tester, amount)
    state.phase = Phase.SETTLE
    return TestReceipt(miner_reward=reward, co_tester_reward=co_reward)


def process_settle_block(state: State, block: SettleBlock) -> SettleReceipt:
    """Rank, select the top fraction, refund winners, burn the rest, pay lineages."""
    _verify_header(state, block, Phase.SETTLE)
    params = state.params
    commits, pairs = state.commits, state.pairs
    n_models = len(commits)

    rank = compute_ranking(commits.score, compute_rng(state, "settle"))
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
    reward = _pay_miner(state, block.miner, amount)

    payout = state.lineage.settle(commits.owner[chosen], pairs.live_pos[chosen_pairs])
    payout = _limit_payout(state, payout)
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
    )
    _next_round(state)
    return receipt


def _limit_payout(state: State, payout: I64) -> I64:
    """Under a supply cap, scale lineage payouts down (exactly, rounding down) to fit."""
    total = int(payout.sum())
    allowed = _mint(state, total)
    if allowed == total:
        return payout
    # Python integers: payout * allowed can exceed int64 before the division.
    return (payout.astype(object) * allowed // total).astype(np.int64)


def _next_round(state: State) -> None:
    state.round += 1
    state.phase = Phase.DEPOSIT
    state.pairs = Pairs()
    state.commits = Models()
    state.commit_pair = np.zeros(0, dtype=np.int64)
    state.commitments = []
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


def total_money(state: State) -> tuple[int, int]:
    """(minted - burned, balances + escrow): equal after every block."""
    return state.supply, int(state.balances.sum()) + state.escrow
