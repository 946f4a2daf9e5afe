"""Dishonest participants (``derelayl.agents.adversaries``) with real training, the trimmed-mean
FedAvg baseline, and ``derelayl attacks``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from derelayl.agents.adversaries import HONEST, KINDS, TARGET, Adversary, assign, poison, stamp
from derelayl.agents.agent import Agent
from derelayl.agents.books import ModelBook
from derelayl.agents.relay import RelayBrain, relay_brains, share_cases
from derelayl.baselines.federated import trimmed_mean
from derelayl.cli import app
from derelayl.errors import ConfigError
from derelayl.experiments.attacks import DEFENCES, run_attacks
from derelayl.experiments.config import parse_config
from derelayl.experiments.relay import run_derelayl
from derelayl.experiments.runner import build_experiment_setup
from derelayl.learning.data import case_digest
from derelayl.learning.serialization import weights_from_bytes
from derelayl.learning.store import MemoryModelStore
from derelayl.ledger.client import StateClient
from derelayl.protocol import Phase
from derelayl.protocol.genesis import initialize_state
from derelayl.protocol.params import Params, preset
from derelayl.protocol.state import State
from derelayl.runtime.driver import RoundDriver

SMALL_TOML = """
seed = 1
[data]
dataset = "digits"
participants = 12
alpha = 0.5
[model]
hidden = [16]
[methods.fedavg]
rounds = 3
[methods.derelayl]
preset = "minimal"
rounds = 8
"""
SMALL = tomllib.loads(SMALL_TOML)
OPTIMISTIC = {  # optimistic testing: one tester, appeals only when a trainer challenges
    "min_improvement": 1,
    "testers": 1,
    "pooled_cases": True,
    "appeal_testers": 3,
    "challenge_bond": 1,
    "challenge_window": 2,
    "test_cases": 60,
}


@pytest.fixture(scope="module")
def setup():  # type: ignore[no-untyped-def]
    return build_experiment_setup(parse_config(SMALL))


def relay_network(
    setup: Any, params: Params, tag: str, beacon: bytes
) -> tuple[StateClient, RoundDriver, list[RelayBrain], ModelBook, list[Agent]]:
    """Honest relay agents on the in-memory ledger (testers share their cases): (client,
    driver, brains, book, agents)."""
    n = len(setup.split.participants)
    keys = [hashlib.sha256(f"{tag}{i}".encode()).digest() for i in range(n)]
    client = StateClient(initialize_state(params, beacon, keys))
    book = ModelBook.of_genesis(MemoryModelStore(), setup.init, {})
    brains = relay_brains(setup, book, 1)
    share_cases(brains)
    agents = [Agent(client.signer(k), b) for k, b in zip(keys, brains, strict=True)]
    return client, RoundDriver(client, agents), brains, book, agents


def network_at_test_phase(
    setup: Any, params: Params, tag: str, beacon: bytes, ready: Any = None, max_rounds: int = 20
) -> tuple[State, list[RelayBrain], ModelBook]:
    """A network of relay agents (testers share their cases) driven to a test phase with at
    least two commitments and whatever ``ready(state)`` asks for: (state, brains, book)."""
    client, driver, brains, book, _ = relay_network(setup, params, tag, beacon)
    state = client.state
    while state.phase != Phase.TEST or len(state.commits) < 2 or (ready is not None and not ready(state)):
        assert state.round < max_rounds
        driver.step()
        book.follow(state)
    return state, brains, book


def test_assignment_is_seeded_spares_the_genesis_owner_and_counts_exactly() -> None:
    kinds = assign(20, {"free_rider": 0.3, "lying_tester": 0.1}, seed=4)
    assert kinds == assign(20, {"free_rider": 0.3, "lying_tester": 0.1}, seed=4)
    assert kinds != assign(20, {"free_rider": 0.3, "lying_tester": 0.1}, seed=5)
    assert kinds[0] == HONEST and kinds.count("free_rider") == 6 and kinds.count("lying_tester") == 2
    with pytest.raises(ConfigError, match="unknown adversary kind"):
        assign(20, {"sleeper": 0.1}, seed=1)
    with pytest.raises(ConfigError, match="take more than"):
        assign(10, {"free_rider": 0.5, "copier": 0.5}, seed=1)


def test_poisoners_change_only_what_they_say() -> None:
    x = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    y = np.arange(40, dtype=np.int64) % 5
    fx, fy = poison("label_flip", x, y, 5, seed=1)
    assert (fx == x).all() and (fy == (y + 1) % 5).all()
    bx, by = poison("backdoor", x, y, 5, seed=1)
    stamped = (bx[:, -4:] == 4.0).all(axis=1)
    assert 0 < stamped.sum() < 40 and (by[stamped] == TARGET).all() and (by[~stamped] == y[~stamped]).all()
    assert (bx[~stamped] == x[~stamped]).all() and (stamp(x)[:, :-4] == x[:, :-4]).all()
    same = poison("free_rider", x, y, 5, seed=1)
    assert same[0] is x and same[1] is y


def test_trimmed_mean_ignores_the_extremes_of_each_coordinate() -> None:
    models = [{"w": torch.tensor([float(v), -float(v)])} for v in (1, 2, 3, 100, -50)]
    out = trimmed_mean(models, 0.2)  # drops one value at each end of each coordinate
    assert torch.allclose(out["w"], torch.tensor([2.0, -2.0]))


def test_a_free_rider_commits_its_parents_weights_under_another_digest(setup) -> None:  # type: ignore[no-untyped-def]
    params = preset("minimal")
    curve = run_derelayl(setup, params, 3, rounds=6, adversaries={"free_rider": 0.5})
    groups = curve.info["groups"]
    assert groups["free_rider"]["participants"] == 6 and groups["honest"]["participants"] == 6
    assert groups["free_rider"]["models_committed"] > 0
    assert sum(g["reward_share"] for g in groups.values()) == pytest.approx(1.0)


def test_the_improvement_rule_turns_every_free_rider_away(setup) -> None:  # type: ignore[no-untyped-def]
    # Execute: the same network and free-riders, without and with the rule
    plain = run_derelayl(setup, preset("minimal"), 3, rounds=8, adversaries={"free_rider": 0.4})
    ruled = Params.from_dict({"min_improvement": 1}, base=preset("minimal"))
    guarded = run_derelayl(setup, ruled, 3, rounds=8, adversaries={"free_rider": 0.4})
    # Assert: without it some free-riders' copies are selected; with it none is
    assert plain.info["groups"]["free_rider"]["models_selected"] > 0
    assert guarded.info["groups"]["free_rider"]["models_committed"] > 0
    assert guarded.info["groups"]["free_rider"]["models_selected"] == 0
    assert guarded.info["groups"]["free_rider"]["turned_away"] == 1.0
    # never selected, never a model owner: not a unit of the lineage rewards (fees only)
    assert guarded.info["groups"]["free_rider"]["lineage_share"] == 0.0
    assert guarded.info["groups"]["honest"]["lineage_share"] == 1.0


def test_adversaries_leave_honest_data_private(setup) -> None:  # type: ignore[no-untyped-def]
    curve = run_derelayl(setup, preset("minimal"), 2, rounds=4, adversaries={k: 0.08 for k in KINDS})
    assert curve.info["shard_reads_by_others"] == 0
    assert set(curve.info["groups"]) == {HONEST, *KINDS}


def test_a_backdoor_poisoner_plants_its_trigger(setup) -> None:  # type: ignore[no-untyped-def]
    # the measurement itself: the honest run's rate is the base rate the table compares with
    honest = run_derelayl(setup, preset("minimal"), 1, rounds=8, measure_backdoor=True)
    attacked = run_derelayl(setup, preset("minimal"), 1, rounds=8, adversaries={"backdoor": 0.5})
    rate = [p.extra["backdoor_success"] for p in attacked.points[-3:]]
    base = [p.extra["backdoor_success"] for p in honest.points[-3:]]
    assert np.mean(rate) > np.mean(base) + 0.2


def test_attacks_command_writes_the_table(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(SMALL_TOML)
    args = ["attacks", str(tmp_path / "c.toml"), "--out", str(tmp_path / "a"), "--seeds", "0-1"]
    result = CliRunner().invoke(app, [*args, "--kinds", "free_rider,lying_tester", "--rounds", "5", "--quiet"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    rows = {(r["attack"], r["method"]) for r in results["table"]}
    assert ("free_rider", "relay (improvement rule)") in rows and ("lying_tester", "fedavg (trimmed mean)") in rows
    assert len(results["runs"]) == 2 * 3 * (len(DEFENCES) + 2)  # seeds x (none + 2 kinds) x (relay arms + 2 FedAvg)
    free = next(r for r in results["table"] if r["attack"] == "free_rider" and r["method"] == "relay (faithful)")
    assert 0 <= free["reward_share"][0] <= 1 and free["seeds"] == 2
    # the excess over the same people's honest share is paired by seed
    assert free["excess_pp"][0] == pytest.approx(100 * (free["reward_share"][0] - free["fair_share"][0]))
    report = (tmp_path / "a" / "report.md").read_text()
    assert "| free_rider | relay (improvement rule) |" in report and (tmp_path / "a" / "attacks.png").stat().st_size


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--share", "0.9"], "--share must be in (0, 0.5]"),
        (["--share", "nan"], "--share must be in (0, 0.5], got nan"),
        (["--kinds", "sleeper"], "--kinds: unknown sleeper"),
        (["--rounds", "0"], "--rounds must be in"),
        (["--seeds", "x"], "seeds"),
    ],
)
def test_bad_attack_options_are_one_error_line(tmp_path: Path, extra: list[str], words: str) -> None:
    result = CliRunner().invoke(app, ["attacks", "--out", str(tmp_path / "a"), *extra])
    assert result.exit_code == 2 and result.output.startswith("error:") and words in result.output, result.output
    assert not (tmp_path / "a").exists()


def test_a_copier_commits_the_best_other_live_model(setup) -> None:  # type: ignore[no-untyped-def]
    """Every committed model of a copier holds the weights of a live model other than its parent."""
    n = len(setup.split.participants)
    keys = [hashlib.sha256(f"c{i}".encode()).digest() for i in range(n)]
    client = StateClient(initialize_state(preset("minimal"), b"\x01" * 32, keys))
    book = ModelBook.of_genesis(MemoryModelStore(), setup.init, {})
    brains = relay_brains(setup, book, 1)
    fields = {f.name: getattr(brains[5], f.name) for f in dataclasses.fields(brains[5])}
    brains[5] = Adversary(**fields, kind="copier")
    driver = RoundDriver(client, [Agent(client.signer(k), b) for k, b in zip(keys, brains, strict=True)])
    state = client.state
    copies = 0
    for _ in range(12):
        live = {int(m): book.weights(int(m)) for m in state.live.model_id.tolist()}
        parents = state.live.model_id.copy()
        for _ in range(2):
            driver.step()  # deposit, commit
        book.follow(state)
        if 5 in state.commits.owner.tolist():
            i = state.commits.owner.tolist().index(5)
            pair = state.commit_pair[i]
            parent = int(parents[state.pairs.live_pos[pair]])
            child, _ = weights_from_bytes(book.store.get(state.commitments[i]))
            same = [m for m, w in live.items() if all(torch.equal(w[k], child[k]) for k in w)]
            assert same and (same != [parent] or len(live) == 1)
            copies += 1
        driver.step()
        driver.step()
    assert copies > 0


def test_an_experiment_with_adversaries_reports_each_group(tmp_path: Path) -> None:
    text = SMALL_TOML + "[adversaries]\nfree_rider = 0.25\n"
    (tmp_path / "c.toml").write_text(text.replace("rounds = 8", "rounds = 6\nparams = { min_improvement = 1 }"))
    result = CliRunner().invoke(app, ["experiment", str(tmp_path / "c.toml"), "--out", str(tmp_path / "e"), "--quiet"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    groups = results["summary"]["derelayl"]["groups"]
    assert groups["free_rider"]["participants"] == 3 and groups["free_rider"]["models_selected"] == 0
    assert results["config"]["adversaries"] == {"free_rider": 0.25}
    assert "| derelayl | free_rider | 3 |" in (tmp_path / "e" / "report.md").read_text()


@pytest.mark.parametrize("pooled", [False, True])
def test_with_pooled_cases_honest_testers_report_the_same_scores(setup, pooled: bool) -> None:  # type: ignore[no-untyped-def]
    # Prepare: a network with three testers, driven to a test phase with several commitments
    params = Params.from_dict({"testers": 3, "pooled_cases": pooled}, base=preset("minimal"))
    state, brains, book = network_at_test_phase(setup, params, "p", b"\x02" * 32)
    # Execute: every tester scores
    testers = state.roles.testers.tolist()
    reports = [brains[t].score(state, t) for t in testers]
    # Assert: pooled, every report is the same (on 3 x test_cases cases); else they differ
    same = all((r[1] == reports[0][1]).all() for r in reports)
    assert same is pooled
    assert len({r[0] for r in reports}) == 3  # each still names its own published cases
    if pooled:  # scored on the pool: every tester's published cases, in tester order
        cases = [brains[t].own_cases(state, t) for t in testers]
        x, y = np.concatenate([c[0] for c in cases]), np.concatenate([c[1] for c in cases])
        expected = [brains[0].evaluator.correct(book.load(d), x, y) for d in state.commitments]
        assert reports[0][1].tolist() == expected


def test_an_omitting_miner_burns_honest_deposits_unless_commitments_are_posted(setup) -> None:  # type: ignore[no-untyped-def]
    # Execute: omitting commit miners, with trainers posting their commitments or not; and
    # the same network with nobody dishonest
    params = preset("minimal")
    honest = run_derelayl(setup, params, 4, rounds=10, post_commitments=True)
    plain = run_derelayl(setup, params, 4, rounds=10, adversaries={"omitting_miner": 0.3})
    posted = run_derelayl(setup, params, 4, rounds=10, adversaries={"omitting_miner": 0.3}, post_commitments=True)
    # Assert: without posting honest trainers lose commitments (fewer models committed than
    # in the honest run); with posting the omitting miners can drop nothing, and the run is
    # exactly the honest one
    assert sum(plain.info["models_trained"]) < sum(honest.info["models_trained"])
    assert posted.info["models_trained"] == honest.info["models_trained"]
    assert posted.info["balances_coins"] == honest.info["balances_coins"]
    assert [p.accuracy for p in posted.points] == [p.accuracy for p in honest.points]


def test_the_attacks_table_posts_commitments_only_in_its_last_five_arms(tmp_path: Path) -> None:
    config = parse_config(SMALL)
    results = run_attacks(config, tmp_path / "a", seeds=(4,), kinds=("omitting_miner",), rounds=8)
    runs = {(r["attack"], r["method"]): r for r in results["runs"]}
    first, last = "relay (faithful)", list(DEFENCES)[-3]
    assert [m for m, arm in DEFENCES.items() if arm.get("post_commitments")] == list(DEFENCES)[-5:]
    assert [m for m, arm in DEFENCES.items() if arm.get("appeal_testers")] == list(DEFENCES)[-4:]
    assert [m for m, arm in DEFENCES.items() if arm.get("improvement_z")] == list(DEFENCES)[-3:]
    assert [m for m, arm in DEFENCES.items() if arm.get("challenge_bond")] == list(DEFENCES)[-2:]
    assert DEFENCES[list(DEFENCES)[-1]]["testers"] == 1  # the optimistic arm
    # without posting the omitting miners drop commitments; with it the run is the honest one
    assert runs[("omitting_miner", first)]["models_committed"] < runs[("none", first)]["models_committed"]
    assert runs[("omitting_miner", last)]["models_committed"] == runs[("none", last)]["models_committed"]
    assert runs[("omitting_miner", last)]["accuracy"] == runs[("none", last)]["accuracy"]


def test_the_tester_stake_goes_into_the_last_three_arms_only() -> None:
    from derelayl.experiments.attacks import defences

    staked = list(DEFENCES)[-3]
    assert [m for m, arm in DEFENCES.items() if arm.get("tester_stake")] == list(DEFENCES)[-3:]
    assert staked.endswith(", tester stake 20)") and DEFENCES[staked]["tester_stake"] == 20_000_000
    unstaked = defences(stake=0)
    assert list(unstaked)[:-3] == list(DEFENCES)[:-3] and list(unstaked)[-3].endswith("case commitments)")
    assert {**unstaked[list(unstaked)[-3]], "tester_stake": 20_000_000} == DEFENCES[staked]
    assert not any(arm.get("tester_stake") for arm in unstaked.values())


def test_a_strategic_liar_lies_only_when_its_group_holds_most_tester_seats(setup) -> None:  # type: ignore[no-untyped-def]
    # Prepare: three pooled testers at a test phase with commitments
    params = Params.from_dict({"testers": 3, "pooled_cases": True}, base=preset("minimal"))
    state, brains, _ = network_at_test_phase(setup, params, "s", b"\x04" * 32)
    testers = state.roles.testers.tolist()
    me = testers[0]
    honest = brains[me].score(state, me)[1]
    fields = {f.name: getattr(brains[me], f.name) for f in dataclasses.fields(brains[me])}
    owners = set(state.commits.owner.tolist())
    # Execute: the same tester as a strategic liar whose group holds one seat, then two of three
    alone = Adversary(**fields, kind="strategic_liar", group=frozenset({me, *owners}) - set(testers[1:]))
    majority = Adversary(**fields, kind="strategic_liar", group=frozenset({me, testers[1], *owners}))
    # Assert: honest scores with one seat; the group's models on top with a majority
    assert alone.score(state, me)[1].tolist() == honest.tolist()
    lied = majority.score(state, me)[1]
    assert lied.tolist() != honest.tolist() and set(lied.tolist()) <= {0, params.test_cases}


def test_a_case_picker_publishes_cases_that_favour_its_group_and_reports_true_scores_on_them(setup) -> None:  # type: ignore[no-untyped-def]
    # Prepare: pooled testers at a test phase; the first tester turned case picker, colluding
    # with the owner of the child that alone is right on most of the picker's samples
    params = Params.from_dict({"testers": 3, "pooled_cases": True}, base=preset("minimal"))
    state, brains, book = network_at_test_phase(setup, params, "p", b"\x06" * 32, ready=lambda s: s.round >= 6)
    me = int(state.roles.testers[0])
    xs, ys = brains[me].shard.read(me)
    alone = np.stack([brains[me].evaluator.predict(book.load(d), xs) == ys for d in state.commitments])
    alone &= alone.sum(axis=0) == 1
    assert alone.sum() > 0  # some sample only one child gets right
    friend = int(state.commits.owner[int(alone.sum(axis=1).argmax())])
    fields = {f.name: getattr(brains[me], f.name) for f in dataclasses.fields(brains[me])}
    picker = Adversary(**fields, kind="case_picker", group=frozenset({me, friend}))
    honest_cases = brains[me].own_cases(state, me)
    # Execute
    x, y = picker.own_cases(state, me)
    brains[me] = picker
    reports = {t: brains[t].score(state, t)[1] for t in state.roles.testers.tolist()}
    # Assert: as many cases as an honest tester's, drawn from its own data, on every one of
    # which the friend's child is right and every other child wrong
    assert len(y) == len(honest_cases[1]) and case_digest(x, y) != case_digest(*honest_cases)
    own = {row.tobytes() for row in picker.shard.read(me)[0]}
    assert all(row.tobytes() in own for row in x)
    right = np.stack([picker.evaluator.predict(book.load(d), x) == y for d in state.commitments])
    ours = np.array([o == friend for o in state.commits.owner.tolist()])
    assert right[ours].any(axis=0).all() and not right[~ours].any()
    # every tester, honest or not, reports the same scores: nothing for appeals or audit to see
    assert len({tuple(r.tolist()) for r in reports.values()}) == 1


def test_a_lie_told_by_every_tester_is_challenged_by_a_trainer_and_reversed(setup) -> None:  # type: ignore[no-untyped-def]
    # Prepare: one tester (every seat), appeals and challenges; a network driven to a test
    # phase in which some trainer holds the bond; the tester then lies for one child's owner
    params = Params.from_dict(OPTIMISTIC, base=preset("minimal"))
    client, driver, brains, book, agents = relay_network(setup, params, "ch", b"\x0c" * 32)
    state = client.state

    def ready() -> bool:
        trainers = state.commits.owner
        return state.phase == Phase.TEST and len(trainers) >= 2 and bool((state.balances[trainers] >= 1).any())

    while not ready():
        assert state.round < 20
        driver.step()
        book.follow(state)
    assert driver.challenges == 0  # honest rounds: nobody had anything to challenge
    tester = int(state.roles.testers[0])
    friend = int(state.commits.owner[-1])
    fields = {f.name: getattr(brains[tester], f.name) for f in dataclasses.fields(brains[tester])}
    agents[tester].brain = Adversary(**fields, kind="lying_tester", group=frozenset({tester, friend}))
    # Execute: the test block (the lie stands: nobody disagrees), then the settle phase
    tested = driver.step()
    assert state.dispute is not None and not state.appeal_open
    n_commits = len(state.commits)
    assert state.commits.score[: n_commits - 1].sum() == 0  # every other child scored 0
    settle = driver.step()
    # Assert: a trainer challenged, the appellants re-scored and reversed the lie: the liar's
    # whole held reward is forfeited (to them and the challenger, whose bond came back)
    assert driver.challenges == 1
    assert settle.forfeited == tested.held > 0 and settle.appeal_reward >= settle.forfeited
    assert state.escrow == 0 and state.supply == int(state.balances.sum())


def test_an_inflating_liar_raises_only_its_groups_children_so_no_trainer_sees_a_wrong_score(setup) -> None:  # type: ignore[no-untyped-def]
    params = Params.from_dict({"testers": 3, "pooled_cases": True, "min_improvement": 1}, base=preset("minimal"))
    state, brains, _ = network_at_test_phase(setup, params, "i", b"\x05" * 32)
    me = int(state.roles.testers[0])
    honest = brains[me].score(state, me)[1]
    friend = int(state.commits.owner[0])
    fields = {f.name: getattr(brains[me], f.name) for f in dataclasses.fields(brains[me])}
    liar = Adversary(**fields, kind="inflating_liar", group=frozenset({me, friend}))
    lied = liar.score(state, me)[1]
    # the friend's child gets the most the pool allows; every other score is as measured
    assert lied[0] == params.test_cases * 3 and lied[1:].tolist() == honest[1:].tolist()
    # so an honest trainer (not the friend) finds its own child and parent scored right
    other = int(state.commits.owner[1])
    checks = brains[other].checkable(state, other)
    assert all(int(lied[i]) in allowed for i, allowed in checks.items())
    assert liar.checkable(state, me) == {}  # and a liar never challenges
