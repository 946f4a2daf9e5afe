"""The Python core and the Vyper contract are one rule set: random action sequences (honest
blocks, single-fault rule-breaking blocks, newcomers, transfers, late miners, challenges; every
reward scheme and payee) give the same outcome in both — accepted, or rejected with the same error
class — and, after every accepted operation, the same balances, escrow, roles, owners,
pairs, commitments, selected models, versions and beacon.

Runs on the embedded py-evm always and on anvil when it is installed (``scripts/setup``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derelayl.agents.latent import LatentPopulation
from derelayl.errors import SignatureError
from derelayl.evm.node import Node, TxFailed, anvil, anvil_path, embedded
from derelayl.learning.latent import LatentTrainer
from derelayl.protocol import Bids, Params, Phase, blocks
from derelayl.protocol.blocks import (
    Block,
    CaseCommitment,
    Challenge,
    CommitBlock,
    DepositBlock,
    Join,
    SettleBlock,
    Transfer,
)
from derelayl.protocol.messages import CasesMessage
from derelayl.protocol.state import State
from derelayl.protocol.validate import scores_expected
from evm_harness import Pair, mine, wait_out_the_window

BACKENDS = ["embedded", pytest.param("anvil", marks=pytest.mark.skipif(anvil_path() is None, reason="no anvil"))]
SCHEMES: list[dict[str, object]] = [
    {},
    {"lineage_payee": "trainer"},
    {"reward_scheme": "decay", "royalty_decay": "1/2"},
    {"reward_scheme": "capped", "supply_cap": 4 * 10**6},
    {"testers": 3},
    {"phase_timeout": 2, "k": 2},
    {"phase_timeout": 2, "testers": 3},
    {"select_fraction": "3/4", "k": 3, "cap_fraction": "2/3"},
    {"min_improvement": 1},
    {"min_improvement": 500_000_000, "testers": 3},
    {"pooled_cases": True, "testers": 3},
    {"pooled_cases": True, "testers": 4, "min_improvement": 1},
    {"pooled_cases": True, "testers": 3, "appeal_testers": 3, "phase_timeout": 2},
    {"pooled_cases": True, "testers": 3, "appeal_testers": 2, "reward_scheme": "capped", "supply_cap": 4 * 10**6},
    {"min_trainer_bid": 1000},
    {"case_commitments": True, "pooled_cases": True, "testers": 3},
    {"case_commitments": True, "testers": 3, "phase_timeout": 2},
]
STAKED: list[dict[str, object]] = [
    {"pooled_cases": True, "testers": 3, "appeal_testers": 2, "tester_stake": 5000, "phase_timeout": 2},
    {"pooled_cases": True, "testers": 4, "appeal_testers": 3, "tester_stake": 2000},
    {"pooled_cases": True, "testers": 3, "appeal_testers": 2, "tester_stake": 1_000_000, "lineage_payee": "trainer"},
    {"pooled_cases": True, "testers": 3, "appeal_testers": 2, "tester_stake": 3000, "case_commitments": True},
]
"""Schemes with a tester stake (``tester_stake``): testers drawn from the miners holding it
(some rounds every miner, too few do), their transfers refused, stakes held in disputes."""
SCHEMES += STAKED
CHALLENGED: list[dict[str, object]] = [
    {"pooled_cases": True, "testers": 3, "appeal_testers": 2, "challenge_bond": 5000, "challenge_window": 3},
    {
        "pooled_cases": True,
        "testers": 3,
        "appeal_testers": 3,
        "challenge_bond": 20_000,
        "challenge_window": 4,
        "phase_timeout": 2,
    },
    {
        "pooled_cases": True,
        "testers": 4,
        "appeal_testers": 2,
        "challenge_bond": 3000,
        "challenge_window": 1,
        "tester_stake": 2000,
        "reward_scheme": "capped",
        "supply_cap": 4 * 10**6,
    },
]
"""Schemes with challenges (``challenge_bond``/``challenge_window``): every test block holds its
rewards; random challenges in settle phases (by participants with and without the bond, twice,
of a round already disputed, by unknown accounts, outside the settle phase), settle blocks
inside the window, unanimous lies challenged and reversed, wrong challenges. Early rounds
leave most participants below the bond."""
SCHEMES += CHALLENGED
DEFENCES = [s for s in SCHEMES if {"min_improvement", "pooled_cases", "min_trainer_bid", "case_commitments"} & set(s)]


@pytest.fixture(scope="module", params=BACKENDS)
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    made = embedded() if request.param == "embedded" else anvil()
    yield made
    made.close()


# ---------------------------------------------------------------- single-fault mutations


def _r(bids: Bids) -> Bids:
    return Bids(bids.participant[::-1].copy(), bids.amount[::-1].copy())


def _add(bids: Bids, who: int, amount: int) -> Bids:
    return Bids(np.append(bids.participant, who), np.append(bids.amount, amount))


def deposit_variants(pair: Pair, block: DepositBlock) -> list[tuple[str, Block]]:
    s = pair.ref
    assert s.roles is not None
    tb, mb = block.trainer_bids, block.mo_bids
    out: list[tuple[str, Block]] = [
        ("honest", block),
        ("valid: no bids", dataclasses.replace(block, trainer_bids=Bids(), mo_bids=Bids())),
    ]
    if len(tb):
        top = int(tb.participant[0])
        raised = tb.amount.copy()
        raised[0] = int(s.balances[top]) + 1
        out += [
            (
                "valid: drop last trainer bid",
                dataclasses.replace(block, trainer_bids=Bids(tb.participant[:-1], tb.amount[:-1])),
            ),
            ("trainer bid above balance", dataclasses.replace(block, trainer_bids=Bids(tb.participant, raised))),
            ("duplicate trainer bid", dataclasses.replace(block, trainer_bids=_add(tb, top, 0))),
            ("negative bid", dataclasses.replace(block, trainer_bids=Bids(tb.participant[:1], np.array([-1])))),
        ]
        if s.params.min_trainer_bid > 0:
            low = tb.amount.copy()
            low[-1] = s.params.min_trainer_bid - 1
            out.append(
                ("trainer bid below the minimum", dataclasses.replace(block, trainer_bids=Bids(tb.participant, low)))
            )
        if len(tb) > 1 and (tb.amount[0] != tb.amount[-1] or True):
            out.append(("trainer bids reversed", dataclasses.replace(block, trainer_bids=_r(tb))))
    miner = int(s.roles.miners[0])
    out += [
        ("bid by a miner", dataclasses.replace(block, trainer_bids=_add(tb, miner, 0))),
        ("bid by unknown participant", dataclasses.replace(block, trainer_bids=_add(tb, s.n_participants + 3, 0))),
        ("wrong miner", dataclasses.replace(block, miner=(block.miner + 1) % s.n_participants)),
        ("wrong round", dataclasses.replace(block, round=block.round + 1)),
    ]
    if len(mb):
        owner = int(mb.participant[0])
        over = mb.amount.copy()
        over[0] = int(s.balances[owner]) // s.params.k + 1
        out.append(("owner bid above balance / k", dataclasses.replace(block, mo_bids=Bids(mb.participant, over))))
        out.append(("duplicate owner bid", dataclasses.replace(block, mo_bids=_add(mb, owner, 0))))
    if len(mb) > 1:
        out.append(("owner bids reversed", dataclasses.replace(block, mo_bids=_r(mb))))
    newcomer = pair.newcomer()
    if newcomer is not None:
        out.append(("valid: join in deposit block", dataclasses.replace(block, joins=(newcomer.public,))))
    out.append(("join of a registered key", dataclasses.replace(block, joins=(s.keys[1],))))
    return out + case_commitment_variants(pair, block)


def case_commitment_variants(pair: Pair, block: DepositBlock) -> list[tuple[str, Block]]:
    """A deposit block's testers' case commitments: missing, out of order, from a non-tester,
    or any at all when the rules take none."""
    s = pair.ref
    assert s.roles is not None
    cases = block.case_commitments
    if not s.params.case_commitments:
        stray = CaseCommitment(int(s.roles.testers[0]), b"\x01" * 32)
        return [("case commitment, rule off", dataclasses.replace(block, case_commitments=(stray,)))]
    out: list[tuple[str, Block]] = [
        ("a tester's case commitment missing", dataclasses.replace(block, case_commitments=cases[1:])),
        ("no case commitments", dataclasses.replace(block, case_commitments=())),
    ]
    if len(cases) > 1:
        out.append(("case commitments reversed", dataclasses.replace(block, case_commitments=cases[::-1])))
    if len(s.roles.trainers):
        stranger = CaseCommitment(int(s.roles.trainers[0]), b"\x01" * 32)
        out.append(("case commitment by a trainer", dataclasses.replace(block, case_commitments=(*cases, stranger))))
    return out


def commit_variants(pair: Pair, block: CommitBlock) -> list[tuple[str, Block]]:
    s = pair.ref
    t, d = block.trainers, block.commitments
    out: list[tuple[str, Block]] = [
        ("honest", block),
        ("valid: nobody commits", dataclasses.replace(block, trainers=t[:0], commitments=())),
        ("valid: fhe key", dataclasses.replace(block, fhe_public_key=b"\x42" * 100)),
    ]
    unmatched = next((i for i in range(s.n_participants) if i not in set(s.pairs.trainer.tolist())), None)
    if unmatched is not None:
        out.append(
            (
                "unmatched committer",
                dataclasses.replace(block, trainers=np.array([unmatched]), commitments=(b"\x07" * 32,)),
            )
        )
    out.append(
        (
            "unknown committer",
            dataclasses.replace(block, trainers=np.array([s.n_participants + 2]), commitments=(b"\x07" * 32,)),
        )
    )
    if len(d) > 1:
        out += [
            ("duplicate digest", dataclasses.replace(block, commitments=(d[0], d[0], *d[2:]))),
            (
                "trainer commits twice",
                dataclasses.replace(block, trainers=np.array([t[0], t[0], *t[2:]]), commitments=d),
            ),
            ("commitments reversed", dataclasses.replace(block, trainers=t[::-1].copy(), commitments=d[::-1])),
            ("valid: drop first commitment", dataclasses.replace(block, trainers=t[1:], commitments=d[1:])),
        ]
    out.append(("wrong miner", dataclasses.replace(block, miner=(block.miner + 1) % s.n_participants)))
    return out


def by_miner(s: State, block: Block, miner: int) -> Block:
    """``block`` produced by ``miner``: a test block's own report then names the cases its new
    producer committed to, if it did (so that the miner is the block's only change)."""
    if isinstance(block, blocks.TestBlock) and miner in s.case_digests:
        return dataclasses.replace(block, miner=miner, test_cases_digest=s.case_digests[miner])
    return dataclasses.replace(block, miner=miner)


def without_silent_testers(pair: Pair, block: Block) -> Block:
    """With case commitments, a tester left out of a timed-out deposit block may not report: the
    honest test block leaves its report out, and one whose testing miner is silent comes from
    a non-tester; either only once the phase has timed out (mined here)."""
    s = pair.ref
    if not isinstance(block, blocks.TestBlock) or not s.params.case_commitments:
        return block
    assert s.roles is not None
    reports = tuple(r for r in block.co_testers if r.tester in s.case_digests)
    miner = block.miner
    if miner not in s.case_digests:
        testers = s.roles.testers.tolist()
        miner = next(p for p in range(s.n_participants) if p not in testers)
    if reports == block.co_testers and miner == block.miner:
        return block
    assert s.params.phase_timeout is not None  # (without one, every tester committed)
    mine(pair.node, s.params.phase_timeout)
    return dataclasses.replace(block, miner=miner, co_testers=reports)


def scoring_variants(
    pair: Pair, block: blocks.TestBlock, draw: Callable[[st.SearchStrategy[int]], int]
) -> list[tuple[str, Block]]:
    s = pair.ref
    n = block.scores.size
    extreme = st.sampled_from([-(2**63), 2**63 - 1, 0, -1, 1])
    chosen = np.array([draw(st.one_of(extreme, st.integers(-(10**12), 10**12))) for _ in range(n)], dtype=np.int64)
    out: list[tuple[str, Block]] = [
        ("honest", block),
        ("valid: chosen scores", dataclasses.replace(block, scores=chosen)),
        ("too few test cases", dataclasses.replace(block, n_test_cases=block.n_test_cases - 1)),
        ("wrong miner", by_miner(s, block, (block.miner + 1) % s.n_participants)),
    ]
    if n:
        out.append(("one score short", dataclasses.replace(block, scores=block.scores[:-1])))
    if block.co_testers:
        first = block.co_testers[0]
        lying = dataclasses.replace(first, scores=chosen)
        out += [
            ("valid: a co-tester lies", dataclasses.replace(block, co_testers=(lying, *block.co_testers[1:]))),
            ("co-tester missing", dataclasses.replace(block, co_testers=block.co_testers[1:])),
            (
                "co-tester short",
                dataclasses.replace(
                    block,
                    co_testers=(
                        dataclasses.replace(first, scores=first.scores[:-1] if n else np.array([1])),
                        *block.co_testers[1:],
                    ),
                ),
            ),
        ]
        if len(block.co_testers) > 1:
            out.append(("co-testers reversed", dataclasses.replace(block, co_testers=block.co_testers[::-1])))
        if s.params.pooled_cases:  # every tester tells the same lie: they agree (only a challenge opens it)
            same = tuple(dataclasses.replace(r, scores=chosen) for r in block.co_testers)
            out.append(
                ("valid: every tester tells the same lie", dataclasses.replace(block, scores=chosen, co_testers=same))
            )
    if s.params.case_commitments:  # reports on other cases than the committed ones
        other = bytes(range(32))
        out.append(("tester's cases not the committed ones", dataclasses.replace(block, test_cases_digest=other)))
        if block.co_testers:
            swapped = dataclasses.replace(block.co_testers[0], test_cases_digest=other)
            changed = dataclasses.replace(block, co_testers=(swapped, *block.co_testers[1:]))
            out.append(("co-tester's cases not the committed ones", changed))
    return out


def settle_variants(pair: Pair, block: SettleBlock) -> list[tuple[str, Block]]:
    s = pair.ref
    out: list[tuple[str, Block]] = [
        ("honest", block),
        ("wrong miner", dataclasses.replace(block, miner=(block.miner + 1) % s.n_participants)),
        ("wrong round", dataclasses.replace(block, round=block.round - 1)),
    ]
    if not s.appeal_open:  # appeal reports in a round nobody disputed (or challenged)
        stray = blocks.TesterReport(0, bytes(32), np.zeros(scores_expected(s), dtype=np.int64))
        out.append(("stray appeal report", dataclasses.replace(block, appeals=(stray,))))
    elif block.appeals:
        first, rest = block.appeals[0], block.appeals[1:]
        out += [
            (
                "valid: an appellant lies",
                dataclasses.replace(block, appeals=(dataclasses.replace(first, scores=first.scores + 1), *rest)),
            ),
            ("appeal report missing", dataclasses.replace(block, appeals=rest)),
            (
                "appeal report short",
                dataclasses.replace(block, appeals=(dataclasses.replace(first, scores=first.scores[1:]), *rest)),
            ),
        ]
        if rest:
            out.append(("appeal reports reversed", dataclasses.replace(block, appeals=block.appeals[::-1])))
    return out


def challenges(pair: Pair, population: LatentPopulation, data: st.DataObject) -> None:
    """A settle phase with challenges on: nobody; a participant holding the bond; anyone
    (perhaps an unknown account); a participant below the bond; two challenges in a row (the
    second refused once one is open); or the settle block at once (inside the window)."""
    s = pair.ref
    kind = data.draw(st.sampled_from(["none", "rich", "rich", "any", "poor", "twice", "early"]), label="challenge")
    if kind == "none":
        return
    if kind == "early":
        block = population.next_block(s)
        pair.apply(block, f"round {s.round} settle: at once (the window has {s.params.challenge_window} blocks)")
        return
    bond = s.params.challenge_bond
    rich = [i for i in range(s.n_participants) if s.balances[i] >= bond]
    poor = [i for i in range(s.n_participants) if s.balances[i] < bond]
    anyone = st.integers(0, s.n_participants)
    who = [data.draw(st.sampled_from(rich) if rich else anyone, label="challenger")]
    if kind == "any":
        who = [data.draw(anyone, label="challenger")]
    elif kind == "poor" and poor:
        who = [data.draw(st.sampled_from(poor), label="challenger")]
    elif kind == "twice":
        who.append(data.draw(anyone, label="second challenger"))
    for w in who:
        s = pair.ref
        pair.apply(Challenge(s.round, w), f"round {s.round} settle: challenge by {w} (balance {_balance(s, w)})")


def _balance(s: State, who: int) -> int | None:
    return int(s.balances[who]) if 0 <= who < s.n_participants else None


def play(pair: Pair, data: st.DataObject, phases: int) -> None:
    population = LatentPopulation(LatentTrainer(seed=pair.seed))
    for _ in range(phases):
        s = pair.ref
        # operations outside blocks, now and then
        kinds = ["none", "none", "transfer", "join", "late", "post", "challenge"]
        extra = data.draw(st.sampled_from(kinds), label="extra")
        if extra == "transfer":
            sender = data.draw(st.integers(0, s.n_participants - 1), label="sender")
            recipient = data.draw(st.integers(0, s.n_participants + 1), label="recipient")
            amount = data.draw(st.sampled_from([0, 1, int(s.balances[sender]), int(s.balances[sender]) + 1]))
            pair.apply(Transfer(sender, recipient, amount), "transfer")
        elif extra == "join" and pair.newcomer() is not None:
            pair.apply(Join(pair.newcomer().public), "direct join")  # type: ignore[union-attr]
        elif extra == "challenge":  # at any phase (refused outside a settle phase, or without the bond)
            who = data.draw(st.integers(0, s.n_participants), label="challenger")
            pair.apply(Challenge(s.round, who), f"round {s.round} {s.phase.name.lower()}: challenge by {who}")
        if pair.ref.phase == Phase.SETTLE and pair.ref.params.challenge_bond:
            challenges(pair, population, data)
        s = pair.ref  # the state after any transfer, join or challenge
        honest = without_silent_testers(pair, population.next_block(s))
        if extra == "post":  # a commitment straight to the chain (refused outside the commit phase)
            if isinstance(honest, CommitBlock) and honest.commitments:
                i = data.draw(st.integers(0, len(honest.commitments) - 1), label="posted")
                post = blocks.PostedCommitment(s.round, int(honest.trainers[i]), honest.commitments[i])
            else:
                post = blocks.PostedCommitment(s.round, data.draw(st.integers(0, s.n_participants + 1)), bytes(32))
            pair.apply(post, f"round {s.round} {s.phase.name.lower()}: posted commitment")
            s = pair.ref
        if isinstance(honest, DepositBlock):
            variants = deposit_variants(pair, honest)
        elif isinstance(honest, CommitBlock):
            variants = commit_variants(pair, honest)
        elif isinstance(honest, blocks.TestBlock):
            variants = scoring_variants(pair, honest, data.draw)
        else:
            variants = settle_variants(pair, honest)
        if extra == "late" and s.params.phase_timeout is not None:
            # a participant other than the drawn miner produces the phase once it has timed out
            mine(pair.node, s.params.phase_timeout)
            other = (honest.miner + 1) % s.n_participants
            variants = [("late honest block by another participant", by_miner(s, honest, other))]
            if isinstance(honest, blocks.TestBlock) and honest.co_testers:
                # a silent co-tester's report left out once the phase has timed out
                quiet = dataclasses.replace(honest, co_testers=honest.co_testers[1:])
                variants.insert(0, ("late test block without a silent co-tester", quiet))
            if isinstance(honest, SettleBlock) and honest.appeals:
                quiet = dataclasses.replace(honest, miner=other, appeals=honest.appeals[1:])
                variants.insert(0, ("late settle block without a silent appellant", quiet))
        # faulty variants first (each must be rejected by both or accepted by both), then one
        # accepted block moves the round on
        picks = data.draw(st.lists(st.integers(0, len(variants) - 1), max_size=3), label="variants")
        for i in picks:
            name, block = variants[i]
            if name.startswith("honest") or name.startswith("late honest"):
                continue
            ours, _ = pair.apply(block, f"round {s.round} {s.phase.name.lower()}: {name}")
            if ours == "ok":
                break
        else:
            wait_out_the_window(pair)
            pair.apply(variants[0][1], f"round {s.round} {s.phase.name.lower()}: {variants[0][0]}")


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(scheme=st.sampled_from(SCHEMES), seed=st.integers(1, 2**16), data=st.data())
def test_core_and_contract_agree_on_random_sequences(node: Node, scheme, seed, data) -> None:
    _agree_on_a_random_sequence(node, scheme, seed, data)


def _agree_on_a_random_sequence(node: Node, scheme: dict[str, object], seed: int, data: st.DataObject) -> None:
    # Prepare
    params = Params(**{"k": 2, "test_cases": 5, **scheme})
    pair = Pair(node, params, participants=data.draw(st.integers(6, 14), label="participants"), seed=seed)
    # Execute: about seven rounds of random honest and faulty operations
    play(pair, data, phases=28)
    # Assert: no disagreement, and the client's verified replay of the logs equals the core
    assert not pair.mismatches
    assert pair.replay_matches() == []
    assert pair.ref.round >= 6


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(scheme=st.sampled_from(DEFENCES), seed=st.integers(1, 2**16), data=st.data())
def test_core_and_contract_agree_on_the_defences(fastest_node: Node, scheme, seed, data) -> None:
    """On the fastest node here (anvil; py-evm slows down as one module's chain grows).
    Testers also score the live models; a child below its parent + the margin is never
    selected (honest latent children, gain ~ N(1, 1), miss a margin of half a unit about 30%
    of the time; chosen scores make any pattern). With pooled cases, a tester off the medians
    (a lying co-tester, chosen scores) is not paid; a bid below the minimum deposit is refused."""
    _agree_on_a_random_sequence(fastest_node, scheme, seed, data)


@pytest.fixture(scope="module")
def fastest_node() -> Iterator[Node]:
    made = anvil() if anvil_path() is not None else embedded()
    yield made
    made.close()


@pytest.mark.slow
@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(scheme=st.sampled_from(SCHEMES), seed=st.integers(1, 2**16), data=st.data())
def test_core_and_contract_agree_on_long_sequences(fastest_node: Node, scheme, seed, data) -> None:
    """Longer sequences, more participants and k from 1 to 4, on the fastest node here."""
    node = fastest_node
    params = Params(**{"k": data.draw(st.integers(1, 4)), "test_cases": 5, **scheme})
    pair = Pair(node, params, participants=data.draw(st.integers(4, 24), label="participants"), seed=seed)
    play(pair, data, phases=48)
    assert not pair.mismatches
    assert pair.replay_matches() == []


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(scheme=st.sampled_from(CHALLENGED), seed=st.integers(1, 2**16), data=st.data())
def test_core_and_contract_agree_on_random_sequences_with_challenges(fastest_node: Node, scheme, seed, data) -> None:
    """With challenges: every test block holds its rewards; random challenges in settle phases
    (with and without the bond, twice, of a disputed round), settle blocks inside the window,
    unanimous lies, challenges upheld and wrong ones; the replay of the Challenged logs agrees."""
    _agree_on_a_random_sequence(fastest_node, scheme, seed, data)


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(scheme=st.sampled_from(STAKED), seed=st.integers(1, 2**16), data=st.data())
def test_core_and_contract_agree_on_random_sequences_with_a_stake(fastest_node: Node, scheme, seed, data) -> None:
    """With a tester stake: random transfers (refused from a drawn tester), lying co-testers
    and appellants (stakes held and forfeited), draws from the staked miners."""
    _agree_on_a_random_sequence(fastest_node, scheme, seed, data)


def test_every_kind_of_fault_is_exercised(node: Node) -> None:
    """The mutations above reach every rejection class on both sides (a guard against a
    harness that only ever agrees on 'ok')."""
    params = Params(k=2, test_cases=5, testers=3)
    pair = Pair(node, params, participants=12, seed=3)
    population = LatentPopulation(LatentTrainer(seed=3))
    seen: set[str] = set()
    while pair.ref.round < 4:
        honest = population.next_block(pair.ref)
        variants = {
            Phase.DEPOSIT: deposit_variants,
            Phase.COMMIT: commit_variants,
            Phase.SETTLE: settle_variants,
        }.get(pair.ref.phase)
        listed = variants(pair, honest) if variants else scoring_variants(pair, honest, lambda strat: 5)  # type: ignore[arg-type]
        for name, block in listed[1:]:
            if not name.startswith("valid:"):
                ours, _ = pair.apply(block, name)
                assert ours != "ok", f"{name} was accepted"
                seen.add(ours)
        pair.apply(honest, "honest")
    assert not pair.mismatches
    expected = {"RoleError", "BalanceError", "DuplicateError", "MalformedError", "WrongMinerError", "PhaseError"}
    assert expected <= seen, f"never reached: {expected - seen}"


def test_a_silent_co_tester_is_left_out_only_after_the_timeout(node: Node) -> None:
    # Prepare: three testers, a 2-block phase timeout, the round at its test phase
    pair = Pair(node, Params(k=2, test_cases=5, testers=3, phase_timeout=2), participants=12, seed=9)
    population = LatentPopulation(LatentTrainer(seed=9))
    while pair.ref.phase != Phase.TEST:
        pair.apply(population.next_block(pair.ref), "honest")
    honest = population.next_block(pair.ref)
    assert isinstance(honest, blocks.TestBlock) and len(honest.co_testers) == 2
    quiet = dataclasses.replace(honest, co_testers=honest.co_testers[1:])
    # Execute / Assert: refused by both before the timeout, accepted by both after it
    assert pair.apply(quiet, "silent co-tester, in time") == ("RoleError", "RoleError")
    mine(pair.node, 2)
    assert pair.apply(quiet, "silent co-tester, timed out") == ("ok", "ok")
    assert not pair.mismatches


@pytest.mark.parametrize("reason_from", ["trace", "call"])
def test_a_late_block_at_the_exact_timeout_is_refused_for_its_fault_by_both(
    node: Node, reason_from: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the block where the phase times out, anyone may produce it: a faulty block from a
    participant other than the drawn miner is refused for its fault, not for its miner. A
    reverted transaction is mined and its reason read from the node's trace (anvil) or by
    replaying the call at its block (eth-tester; anvil with ``call``)."""
    if reason_from == "trace" and node.kind == "embedded":
        pytest.skip("eth-tester does not trace: its reasons always come from the call (the call case)")
    if reason_from == "call":
        monkeypatch.setattr(Node, "_traced_reason", lambda self, receipt: None)
    # Prepare: a 3-block phase timeout; the round at a deposit phase; the honest block with a
    # case commitment the rules do not take (a MalformedError found after the miner check),
    # produced by the next participant
    timeout = 3
    pair = Pair(node, Params(k=2, test_cases=5, testers=3, phase_timeout=timeout), participants=10, seed=14)
    deposit = _at_phase(pair, LatentPopulation(LatentTrainer(seed=14)), Phase.DEPOSIT)
    assert isinstance(deposit, DepositBlock)
    s = pair.ref
    other = (deposit.miner + 1) % s.n_participants
    stray = (CaseCommitment(int(s.roles.testers[0]), b"\x01" * 32),)
    faulty = dataclasses.replace(deposit, miner=other, case_commitments=stray)
    boundary = s.phase_start + timeout

    def land_at(height: int) -> None:  # the next transaction is mined in block ``height``
        mine(pair.node, height - (pair.node.block_number() + 1))

    # Execute / Assert: one block early, the wrong miner; at the timeout, the fault; then the
    # late honest block, accepted by both
    land_at(boundary - 1)
    assert pair.apply(faulty, "faulty late block, a block early") == ("WrongMinerError", "WrongMinerError")
    land_at(boundary)
    assert pair.apply(faulty, "faulty late block at the timeout") == ("MalformedError", "MalformedError")
    late = dataclasses.replace(deposit, miner=other)  # (at the timeout on py-evm, a block after it on anvil)
    assert pair.apply(late, "late honest block") == ("ok", "ok")
    assert not pair.mismatches and pair.replay_matches() == []


def test_a_child_that_does_not_beat_its_parent_is_never_selected_by_either(fastest_node: Node) -> None:
    # Prepare: the improvement rule with a margin of 1, at a test phase whose children have
    # at least two different parents
    pair = Pair(fastest_node, Params(k=4, test_cases=5, min_improvement=1), participants=16, seed=4)
    population = LatentPopulation(LatentTrainer(seed=4))

    def parents() -> set[int]:
        s = pair.ref
        return set(s.pairs.live_pos[s.commit_pair].tolist()) if len(s.commits) else set()

    while pair.ref.phase != Phase.TEST or len(parents()) < 2:
        pair.apply(population.next_block(pair.ref), "honest")
    honest = population.next_block(pair.ref)
    assert isinstance(honest, blocks.TestBlock)
    s = pair.ref
    n, live = len(s.commits), len(s.live)
    parent_of = s.pairs.live_pos[s.commit_pair]
    assert honest.scores.size == n + live
    # Execute: the first child only equals its strong parent (a free-rider) and tops the
    # round; every other child beats its weak parent
    scores = np.full(n + live, 3, dtype=np.int64)
    scores[:n] = 10
    scores[n + parent_of[0]] = 100
    scores[[i for i in range(n) if parent_of[i] == parent_of[0]]] = 100
    free_rider = dataclasses.replace(honest, scores=scores)
    assert pair.apply(dataclasses.replace(honest, scores=scores[:n]), "scores without the parents") == (
        "MalformedError",
        "MalformedError",
    )
    assert pair.apply(free_rider, "children equal to their parent") == ("ok", "ok")
    riders = {int(s.commits.owner[i]) for i in range(n) if parent_of[i] == parent_of[0]}
    eligible = n - len(riders)
    settled = pair.apply(population.next_block(pair.ref), "settle")
    # Assert: both agree; no free-rider is among the new live models, though they scored best
    assert settled == ("ok", "ok") and not pair.mismatches and pair.replay_matches() == []
    assert not riders & set(pair.ref.live.owner.tolist())
    assert len(pair.ref.live) == min(Params().n_selected(n), eligible) > 0


def test_with_pooled_cases_a_tester_off_the_medians_is_paid_by_neither(fastest_node: Node) -> None:
    # Prepare: three testers scoring a pool; the round at its test phase
    pair = Pair(fastest_node, Params(k=2, test_cases=5, testers=3, pooled_cases=True), participants=12, seed=9)
    population = LatentPopulation(LatentTrainer(seed=9))
    while pair.ref.phase != Phase.TEST or len(pair.ref.commits) == 0:
        pair.apply(population.next_block(pair.ref), "honest")
    honest = population.next_block(pair.ref)
    assert isinstance(honest, blocks.TestBlock) and len(honest.co_testers) == 2
    liar = honest.co_testers[0].tester
    lying = dataclasses.replace(honest.co_testers[0], scores=honest.co_testers[0].scores + 1)
    before = pair.ref.balances.copy()
    # Execute
    outcome = pair.apply(dataclasses.replace(honest, co_testers=(lying, *honest.co_testers[1:])), "a lying co-tester")
    # Assert: accepted by both; the honest testers are paid, the liar is not; states agree
    assert outcome == ("ok", "ok") and not pair.mismatches and pair.replay_matches() == []
    paid = pair.ref.balances - before
    assert paid[liar] == 0 and paid[honest.co_testers[1].tester] > 0 and paid[honest.miner] > 0


def test_a_trainer_bid_below_the_minimum_deposit_is_refused_by_both(fastest_node: Node) -> None:
    # Prepare: a minimum deposit of 0.001 coin; rounds until trainers can afford it
    pair = Pair(fastest_node, Params(k=2, test_cases=5, min_trainer_bid=1000), participants=10, seed=6)
    population = LatentPopulation(LatentTrainer(seed=6))
    while pair.ref.phase != Phase.DEPOSIT or len(population.next_block(pair.ref).trainer_bids) == 0:
        assert pair.ref.round < 30
        pair.apply(population.next_block(pair.ref), "honest")
    honest = population.next_block(pair.ref)
    assert isinstance(honest, DepositBlock) and (honest.trainer_bids.amount >= 1000).all()
    low = honest.trainer_bids.amount.copy()
    low[-1] = 999
    # Execute / Assert: refused by both, the honest block accepted by both
    below = dataclasses.replace(honest, trainer_bids=Bids(honest.trainer_bids.participant, low))
    assert pair.apply(below, "a bid below the minimum") == ("BalanceError", "BalanceError")
    assert pair.apply(honest, "honest") == ("ok", "ok") and not pair.mismatches


def test_a_commitment_posted_to_the_chain_cannot_be_left_out_by_the_miner(fastest_node: Node) -> None:
    # Prepare: a commit phase with at least two matched trainers and the honest block
    pair = Pair(fastest_node, Params(k=2, test_cases=5), participants=10, seed=8)
    population = LatentPopulation(LatentTrainer(seed=8))
    while pair.ref.phase != Phase.COMMIT or len(population.next_block(pair.ref).commitments) < 2:
        assert pair.ref.round < 30
        pair.apply(population.next_block(pair.ref), "honest")
    honest = population.next_block(pair.ref)
    assert isinstance(honest, blocks.CommitBlock)
    r, t, d = pair.ref.round, int(honest.trainers[0]), honest.commitments[0]
    outsider = next(p for p in range(pair.ref.n_participants) if p not in pair.ref.pairs.trainer.tolist())
    # Execute: the trainer posts its commitment straight to the chain; bad posts are refused
    assert pair.apply(blocks.PostedCommitment(r, t, d), "post") == ("ok", "ok")
    assert pair.apply(blocks.PostedCommitment(r, t, d), "post again") == ("DuplicateError", "DuplicateError")
    other = int(honest.trainers[1])
    assert pair.apply(blocks.PostedCommitment(r, other, d), "same digest") == ("DuplicateError", "DuplicateError")
    assert pair.apply(blocks.PostedCommitment(r, outsider, bytes(32)), "not a trainer") == ("RoleError", "RoleError")
    assert pair.apply(blocks.PostedCommitment(r + 1, other, bytes(32)), "other round") == ("PhaseError", "PhaseError")
    # Assert: a block that leaves the posted commitment out, or swaps its digest, is refused by
    # both; the honest block is accepted, and the posted trainer's model is committed
    omitting = dataclasses.replace(honest, trainers=honest.trainers[1:], commitments=honest.commitments[1:])
    assert pair.apply(omitting, "omits the posted one") == ("MalformedError", "MalformedError")
    swapped = dataclasses.replace(honest, commitments=(bytes(32), *honest.commitments[1:]))
    assert pair.apply(swapped, "another digest for it") == ("MalformedError", "MalformedError")
    assert pair.apply(honest, "honest") == ("ok", "ok")
    assert not pair.mismatches and pair.replay_matches() == []
    assert t in pair.ref.commits.owner.tolist() and not pair.ref.posted
    late = blocks.PostedCommitment(r, other, bytes(range(32)))
    assert pair.apply(late, "after the commit block") == ("PhaseError", "PhaseError")


def test_an_appeal_reverses_a_lying_majority_of_testers_in_both(fastest_node: Node) -> None:
    # Prepare: five pooled testers and three appellants; the round at its test phase
    params = Params(k=2, test_cases=5, testers=5, pooled_cases=True, appeal_testers=3)
    pair = Pair(fastest_node, params, participants=24, seed=12)
    population = LatentPopulation(LatentTrainer(seed=12))
    while pair.ref.phase != Phase.TEST or len(pair.ref.commits) < 2:
        pair.apply(population.next_block(pair.ref), "honest")
    honest = population.next_block(pair.ref)
    assert isinstance(honest, blocks.TestBlock) and len(honest.co_testers) == 4
    lying_scores = np.zeros_like(honest.scores)
    lying_scores[int(np.argmin(honest.scores))] = 10**6
    lying = dataclasses.replace(
        honest,
        co_testers=(
            *honest.co_testers[:1],
            *(dataclasses.replace(r, scores=lying_scores) for r in honest.co_testers[1:]),
        ),
    )
    # Execute: three co-testers lie; both hold the rewards and draw the same appellants
    assert pair.apply(lying, "three lying co-testers") == ("ok", "ok")
    assert pair.ref.dispute is not None and pair.ref.dispute.appellants.size == 3
    settle = population.next_block(pair.ref)
    assert isinstance(settle, SettleBlock) and len(settle.appeals) == 3
    # Assert: a settle block without every appellant, or in another order, is refused by both
    # before the timeout; the one with the appeal is accepted and the honest scores rank
    assert pair.apply(dataclasses.replace(settle, appeals=settle.appeals[1:]), "an appellant left out") == (
        "RoleError",
        "RoleError",
    )
    assert pair.apply(dataclasses.replace(settle, appeals=()), "no appeal") == ("RoleError", "RoleError")
    assert pair.apply(settle, "the appeal") == ("ok", "ok")
    assert not pair.mismatches and pair.replay_matches() == []
    assert pair.ref.dispute is None and pair.ref.escrow == 0


CASES = Params(k=2, test_cases=5, testers=3, pooled_cases=True, case_commitments=True)


def _at_phase(pair: Pair, population: LatentPopulation, phase: Phase) -> Block:
    """Honest blocks until ``phase`` of a round with commitments, after genesis (whose deposit
    phase starts at block 0); the honest block for it."""
    while pair.ref.phase != phase or pair.ref.round == 0 or (phase == Phase.TEST and len(pair.ref.commits) == 0):
        assert pair.ref.round < 30
        pair.apply(population.next_block(pair.ref), "honest")
    return population.next_block(pair.ref)


def test_case_commitments_faults_are_refused_by_both_and_the_committed_path_agrees(fastest_node: Node) -> None:
    # Prepare: three testers that commit to their cases in the deposit block
    pair = Pair(fastest_node, CASES, participants=12, seed=13)
    population = LatentPopulation(LatentTrainer(seed=13))
    deposit = _at_phase(pair, population, Phase.DEPOSIT)
    assert isinstance(deposit, DepositBlock)
    cases = deposit.case_commitments
    assert [c.tester for c in cases] == pair.ref.roles.testers.tolist() and len(cases) == 3
    # Execute / Assert: a missing, misordered or stranger's case commitment is refused by both
    for name, bad in [
        ("a tester's case commitment missing", cases[1:]),
        ("case commitments out of order", (cases[1], cases[0], cases[2])),
        ("a non-tester's case commitment", (*cases, CaseCommitment(int(pair.ref.roles.trainers[0]), bytes(32)))),
    ]:
        assert pair.apply(dataclasses.replace(deposit, case_commitments=bad), name) == ("RoleError", "RoleError")
    # a forged signature: the contract reverts, and the client's replay refuses such a log
    proposal = pair.proposal(deposit)
    stranger = pair.signers[pair.newcomers[0].public]
    message = CasesMessage(deposit.round, cases[-1].tester, cases[-1].digest)
    forged = dataclasses.replace(proposal, signatures=(*proposal.signatures[:-1], stranger.sign(message)))
    with pytest.raises(TxFailed, match="SignatureError: case commitment not signed by its tester"):
        pair.client.submit(forged, pair._signer_of_index(deposit.miner))
    sig = forged.signatures[-1]
    with pytest.raises(SignatureError, match="case commitment"):
        pair.client.history._verify(message, {"r": sig[:32], "s": sig[32:64], "v": sig[64]}, "case commitment")
    # every tester committed: accepted by both, and the replay of the logs carries the digests
    assert pair.apply(deposit, "honest deposit") == ("ok", "ok")
    assert pair.replay_matches() == [] and pair.client.state.case_digests == {c.tester: c.digest for c in cases}
    test = _at_phase(pair, population, Phase.TEST)
    assert isinstance(test, blocks.TestBlock) and len(test.co_testers) == 2
    other = bytes(range(32))
    first = test.co_testers[0]
    swapped = (dataclasses.replace(first, test_cases_digest=other), *test.co_testers[1:])
    assert pair.apply(dataclasses.replace(test, test_cases_digest=other), "miner's other cases") == (
        "MalformedError",
        "MalformedError",
    )
    assert pair.apply(dataclasses.replace(test, co_testers=swapped), "co-tester's other cases") == (
        "MalformedError",
        "MalformedError",
    )
    # reports on the committed cases: accepted by both; both end the round in the same state
    assert pair.apply(test, "honest test") == ("ok", "ok")
    assert pair.apply(population.next_block(pair.ref), "honest settle") == ("ok", "ok")
    assert not pair.mismatches and pair.replay_matches() == [] and pair.client.state.case_digests == {}


def test_a_case_commitment_is_refused_by_both_when_the_rules_take_none(node: Node) -> None:
    pair = Pair(node, Params(k=2, test_cases=5, testers=3), participants=10, seed=14)
    deposit = LatentPopulation(LatentTrainer(seed=14)).next_block(pair.ref)
    assert isinstance(deposit, DepositBlock) and deposit.case_commitments == ()
    stray = (CaseCommitment(int(pair.ref.roles.testers[0]), b"\x01" * 32),)
    assert pair.apply(dataclasses.replace(deposit, case_commitments=stray), "stray case commitment") == (
        "MalformedError",
        "MalformedError",
    )
    assert pair.apply(deposit, "honest") == ("ok", "ok") and not pair.mismatches


def test_a_silent_tester_left_out_after_the_timeout_may_not_report_in_either(node: Node) -> None:
    # Prepare: case commitments with a 2-block phase timeout; the round at its deposit phase
    pair = Pair(node, dataclasses.replace(CASES, phase_timeout=2), participants=12, seed=15)
    population = LatentPopulation(LatentTrainer(seed=15))
    deposit = _at_phase(pair, population, Phase.DEPOSIT)
    assert isinstance(deposit, DepositBlock)
    silent = deposit.case_commitments[1].tester
    quiet = dataclasses.replace(deposit, case_commitments=deposit.case_commitments[::2])
    # Execute / Assert: left out, refused before the timeout and accepted after it by both
    assert pair.apply(quiet, "silent tester, in time") == ("RoleError", "RoleError")
    mine(pair.node, 2)
    assert pair.apply(quiet, "silent tester, timed out") == ("ok", "ok")
    test = _at_phase(pair, population, Phase.TEST)
    assert isinstance(test, blocks.TestBlock) and silent in [r.tester for r in test.co_testers]
    # the silent tester's report is refused by both; without it (after the timeout) accepted
    assert pair.apply(test, "the silent tester reports") == ("MalformedError", "MalformedError")
    mine(pair.node, 2)
    rest = tuple(r for r in test.co_testers if r.tester != silent)
    assert pair.apply(dataclasses.replace(test, co_testers=rest), "without the silent tester") == ("ok", "ok")
    assert not pair.mismatches and pair.replay_matches() == []
