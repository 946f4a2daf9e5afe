"""``derelayl simulate``: same balances as the protocol core driven by hand, validated
configs, traces, determinism, parallel runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from derelayl.agents.latent import LatentPopulation
from derelayl.cli import app
from derelayl.errors import ConfigError
from derelayl.learning.latent import LatentTrainer
from derelayl.protocol import UNIT, process_block
from derelayl.protocol.blocks import SettleReceipt
from derelayl.protocol.genesis import initialize_state
from derelayl.runtime.local import run_seed
from derelayl.sim.config import load_toml, parse_seeds, resolve_config
from derelayl.sim.engine import joins_in_round, run_one, sim_keys, winning_lineage_counts
from derelayl.sim.runner import run_all

runner = CliRunner()


def small(protocol: dict[str, object] | None = None, **flags: object) -> object:
    base: dict[str, object] = {"participants": 16, "rounds": 25, "figures": False}
    base.update(flags)
    return resolve_config(flag_values=base, flag_protocol=protocol)


def by_hand(n: int, rounds: int, seed: int, params: object, join_rate: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The protocol core driven block by block, no simulator code involved."""
    state = initialize_state(params, run_seed(seed), sim_keys(seed, 0, n))  # type: ignore[arg-type]
    net = LatentPopulation(LatentTrainer(seed=seed))
    width = n + int(join_rate * rounds)
    balances = np.zeros((rounds, width))
    versions = np.full((rounds, width), -1, dtype=np.int64)
    for r in range(rounds):
        count = joins_in_round(join_rate, r)
        joins = tuple(sim_keys(seed, state.n_participants, count)) if count else ()
        process_block(state, net.next_block(state, joins))
        for _ in range(3):
            process_block(state, net.next_block(state))
        balances[r, : state.n_participants] = state.balances / UNIT
        versions[r, : state.n_participants] = state.held_version
    return balances, versions


def test_balances_equal_protocol_core_driven_by_hand(tmp_path: Path) -> None:
    # Prepare
    config = small(traces=True, preset="minimal")
    # Execute
    run_all(config, tmp_path)
    expected_b, expected_v = by_hand(16, 25, 42, config.params)
    # Assert
    assert np.array_equal(np.load(tmp_path / "balances.npy"), expected_b)
    assert np.array_equal(np.load(tmp_path / "versions.npy"), expected_v)


def test_balances_equal_by_hand_with_newcomers(tmp_path: Path) -> None:
    # Prepare
    config = small(traces=True, join_rate=0.5, seeds=7)
    # Execute
    summary, _ = run_all(config, tmp_path)
    expected_b, expected_v = by_hand(16, 25, 7, config.params, join_rate=0.5)
    # Assert
    assert np.array_equal(np.load(tmp_path / "balances.npy"), expected_b)
    assert np.array_equal(np.load(tmp_path / "versions.npy"), expected_v)
    assert summary["final"]["newcomers_joined"] == 12
    assert summary["per_round"]["participants"][-1] == 28


@pytest.mark.parametrize("join_rate", [0.0, 0.5])
def test_signed_chain_path_gives_the_same_balances(tmp_path: Path, join_rate: float) -> None:
    # Prepare
    config = small(participants=8, rounds=6, join_rate=join_rate)
    # Execute
    fast = run_one(config, "lineage", 42)
    signed = run_one(config, "lineage", 42, ledger_dir=tmp_path / "ledger")
    # Assert
    assert np.array_equal(fast.final_balances, signed.final_balances)
    assert np.array_equal(fast.metrics["sampled_balances"], signed.metrics["sampled_balances"])
    assert signed.head_hash is not None
    result = runner.invoke(app, ["verify", str(tmp_path / "ledger" / "chain.sqlite")])
    assert result.exit_code == 0, result.output
    assert signed.head_hash in result.output


def test_traces_shapes_and_dtypes(tmp_path: Path) -> None:
    # Execute
    result = runner.invoke(
        app,
        [
            "simulate",
            "--participants",
            "12",
            "--rounds",
            "9",
            "--traces",
            "--no-figures",
            "--join-rate",
            "0.34",
            "--quiet",
            "--out",
            str(tmp_path),
        ],
    )
    # Assert
    assert result.exit_code == 0, result.output
    balances, versions = np.load(tmp_path / "balances.npy"), np.load(tmp_path / "versions.npy")
    assert balances.shape == versions.shape == (9, 12 + 3)
    assert balances.dtype == np.float64 and versions.dtype == np.int64
    assert versions.min() >= -1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["version_shares"]["rows"]) == 9
    assert len(summary["version_shares"]["columns"]) == 13
    assert set(summary["balance_quantiles_coins"]) == {"p10", "p50", "p90", "min", "max"}
    assert summary["config"]["participants"] == 12


def test_same_seed_same_results_other_seed_differs() -> None:
    # Execute
    a = run_one(small(), "lineage", 3)
    b = run_one(small(), "lineage", 3)
    c = run_one(small(), "lineage", 4)
    # Assert
    assert np.array_equal(a.final_balances, b.final_balances)
    for key in ("gini", "version_shares", "spearman", "covers_bid", "minted"):
        assert np.array_equal(a.metrics[key], b.metrics[key], equal_nan=True)
    assert not np.array_equal(a.final_balances, c.final_balances)


def test_parallel_runs_equal_sequential_runs(tmp_path: Path) -> None:
    # Prepare
    config = small(seeds="1-2", scheme="lineage,decay", workers=2, traces=True)
    # Execute
    summary, by_scheme = run_all(config, tmp_path)
    # Assert
    assert [(r["scheme"], r["seed"]) for r in summary["runs"]] == [
        ("lineage", 1),
        ("lineage", 2),
        ("decay", 1),
        ("decay", 2),
    ]
    for scheme, runs in by_scheme.items():
        for run in runs:
            alone = run_one(config, scheme, run.seed)
            assert np.array_equal(alone.final_balances, run.final_balances)
    assert set(summary["comparison"]) == {"lineage", "decay"}
    assert (tmp_path / "compare-schemes.md").exists()
    assert np.load(tmp_path / "runs" / "decay-seed2" / "balances.npy").shape == (25, 16)


def test_decay_scheme_mints_less_than_lineage() -> None:
    # Execute
    lineage = run_one(small(rounds=60), "lineage", 5)
    decay = run_one(small(rounds=60), "decay", 5)
    # Assert
    assert decay.metrics["minted"][-1] < lineage.metrics["minted"][-1]


def test_capped_scheme_respects_its_cap() -> None:
    # Execute
    run = run_one(small({"supply_cap": "100"}, rounds=60, scheme="capped"), "capped", 5)
    # Assert
    assert (run.metrics["minted"] - run.metrics["burned"]).max() <= 100 * UNIT


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--join-rate", "-1"], "join_rate must be non-negative"),
        (["--success-rate", "-0.1"], "success_rate must be in [0, 1]"),
        (["--cap", "300"], "cap (300) is above the number of participants (256)"),
        (["-s", "0"], "select_fraction must be in (0, 1]"),
        (["-s", "1.5"], "select_fraction must be in (0, 1]"),
        (["--rounds", "0"], "rounds must be in 1..10,000,000"),
        (["--lineage-reward", "-1"], "--lineage-reward must be non-negative"),
        (["--min-trainer-bid", "-1"], "--min-trainer-bid must be non-negative"),
        (["--scheme", "capped"], "needs a supply cap"),
        (["--scheme", "lineage,bogus"], "scheme must be one of"),
        (["--seeds", "9-0"], "empty range"),
        (["--royalty-decay", "1"], "royalty_decay must be in [0, 1)"),
        (["--sybil-share", "1"], "sybil_share must be in [0, 1)"),
        (["--sybil-share", "nan"], "sybil_share must be a finite number"),
    ],
)
def test_invalid_flags_fail_clearly_before_work(tmp_path: Path, args: list[str], message: str) -> None:
    # Execute
    result = runner.invoke(app, ["simulate", *args, "--quiet", "--out", str(tmp_path / "out")])
    # Assert
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("participant = 3\n", "unknown key(s): participant"),
        ("[protocol]\nkk = 3\n", "unknown protocol key(s): kk"),
        ("[protocol]\nselect_fraction = 0\n", "select_fraction must be in (0, 1]"),
        ("rounds = 'many'\n", "rounds must be an integer"),
        ("join_rate = -2\n", "join_rate must be non-negative"),
        ("participants = 10\n[protocol]\ncap = 11\n", "cap (11) is above"),
        ("rounds = = 3\n", "config file"),
    ],
)
def test_invalid_config_files_fail_clearly(tmp_path: Path, text: str, message: str) -> None:
    # Prepare
    path = tmp_path / "bad.toml"
    path.write_text(text)
    # Execute
    result = runner.invoke(app, ["simulate", "--config", str(path), "--quiet", "--out", str(tmp_path / "out")])
    # Assert
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_config_file_values_then_flags_override(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "c.toml"
    path.write_text('participants = 20\nrounds = 7\nseeds = "0-2"\n[protocol]\nk = 3\nmo_budget = 0.002\n')
    # Execute
    config = resolve_config(load_toml(path), {"rounds": 5}, {"lineage_reward": "2"})
    # Assert
    assert (config.participants, config.rounds, config.seeds) == (20, 5, (0, 1, 2))
    assert (config.params.k, config.params.mo_budget, config.params.lineage_reward) == (3, 2000, 2 * UNIT)


def test_example_configs_are_valid() -> None:
    for path in sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.toml")):
        resolve_config(load_toml(path))


def test_parse_seeds() -> None:
    assert parse_seeds("0-3") == (0, 1, 2, 3)
    assert parse_seeds("1,5, 7-8") == (1, 5, 7, 8)
    assert parse_seeds(9) == (9,)
    with pytest.raises(ConfigError):
        parse_seeds("a-b")


def test_winning_lineage_counts_equal_a_naive_walk() -> None:
    # Prepare: a small run, keeping every selected model's parent
    state = initialize_state(small().params, run_seed(1), sim_keys(1, 0, 16))
    net = LatentPopulation(LatentTrainer(seed=1))
    parent: dict[int, int] = {}
    owner: dict[int, int] = {}
    generations = []
    for _ in range(30):
        receipts = [process_block(state, net.next_block(state)) for _ in range(4)]
        commit, settle = receipts[1], receipts[3]
        assert isinstance(settle, SettleReceipt)
        pos = settle.selected_model - commit.model_id[0] if commit.model_id.size else settle.selected_model
        parents = commit.parent_model[pos] if commit.model_id.size else pos
        for m, p, o in zip(settle.selected_model, parents, settle.selected_owner, strict=True):
            parent[int(m)], owner[int(m)] = int(p), int(o)
        generations.append((settle.selected_model, parents, settle.selected_owner.astype(np.int32)))
    # Execute
    counts = winning_lineage_counts(generations, state.live.model_id, 16)
    # Assert: walk each live model to genesis, counting each ancestor once
    on_lineage: set[int] = set()
    for m in state.live.model_id:
        m = int(m)
        while m in parent:
            on_lineage.add(m)
            m = parent[m]
    naive = np.bincount([owner[m] for m in on_lineage], minlength=16)
    assert np.array_equal(counts, naive)


def test_signed_chain_equals_derelayl_run_block_for_block(tmp_path: Path) -> None:
    # Prepare
    from derelayl.runtime.local import RunConfig, run_network
    from derelayl.runtime.tasks import make_task

    # Execute
    run = run_network(RunConfig(participants=8, rounds=3, seed=11), tmp_path / "run", make_task)
    sim = run_one(small(participants=8, rounds=3, seeds=11), "lineage", 11, ledger_dir=tmp_path / "sim")
    # Assert: same keys, seed, rules and participants give the same chain head
    assert sim.head_hash == run["head_hash"]


def test_reference_preset_matches_the_papers_version_figure() -> None:
    # Prepare: the paper's setting for its version figure (256 participants, 100 rounds)
    from derelayl.sim.reference import compare_versions

    png = Path(__file__).parent.parent / "docs" / "figures" / "paper-fig-version-distribution.png"
    # Execute
    run = run_one(resolve_config(flag_values={"rounds": 100, "figures": False}), "lineage", 42)
    check = compare_versions(run.metrics["version_shares"], png)
    # Assert: steady-state shares within 1 point per bin; "latest" within 0.5 points of ~31.6%
    assert check["max_abs_diff_points"] < 1.0
    assert abs(check["ours_pct"][0] - check["reference_pct"][0]) < 0.5


def test_row_measures_equal_their_textbook_definitions() -> None:
    # Prepare
    stats = pytest.importorskip("scipy.stats")
    from derelayl.sim.metrics import _average_ranks_counts, gini_rows, spearman_rows

    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, (5, 30)).astype(np.float64)
    b = rng.integers(0, 4, (5, 30))
    active = np.ones(b.shape, dtype=bool)
    active[2, 20:] = False
    # Execute
    rho = spearman_rows(np.where(active, a, np.nan), b, _average_ranks_counts(b, active))
    gini = gini_rows(np.where(active, a, np.nan))
    # Assert
    for i in range(5):
        x, y = a[i][active[i]], b[i][active[i]]
        assert rho[i] == pytest.approx(stats.spearmanr(x, y)[0])
        assert gini[i] == pytest.approx(np.abs(np.subtract.outer(x, x)).sum() / (2 * x.size**2 * x.mean()))


def test_measures_do_not_depend_on_chunking() -> None:
    # Prepare: 40 rounds of random state, participants joining over time
    from derelayl.sim.metrics import Recorder

    rng = np.random.default_rng(1)
    rows = [
        (
            rng.integers(0, 5 * UNIT, n),
            rng.integers(-1, 40, n),
            rng.integers(0, 9 * UNIT, n),
            rng.integers(0, 6, n),
        )
        for n in np.linspace(10, 20, 40).astype(int)
    ]
    outs = []
    for chunk in (0, 3, 7):
        rec = Recorder(40, 20, np.arange(10), initial=10, chunk=chunk)
        # Execute
        for r, (bal, held, reward, contrib) in enumerate(rows):
            rec.record(bal, np.minimum(held, r + 1), np.minimum(held, r), reward, contrib, r + 1, 0, 0, 1, 0.0)
        rec.flush()
        outs.append((rec.out, rec.first_hold.copy(), rec.join_row.copy()))
    # Assert
    for out, first, join in outs[1:]:
        for key, value in outs[0][0].items():
            assert np.array_equal(value, out[key], equal_nan=True), key
        assert np.array_equal(first, outs[0][1]) and np.array_equal(join, outs[0][2])


def test_figures_are_written_as_png_and_pdf(tmp_path: Path) -> None:
    # Execute
    summary, _ = run_all(small(rounds=12, figures=True, seeds="1-2", scheme="lineage,decay"), tmp_path)
    # Assert
    for name in ("fig-coins-per-participant", "fig-version-distribution", "fig-supply", "fig-gini"):
        for ext in ("png", "pdf"):
            assert (tmp_path / "scheme-decay" / f"{name}.{ext}").stat().st_size > 0
    assert (tmp_path / "fig-compare-schemes.png").exists()
    assert "fig-compare-schemes.pdf" in summary["figures"]


def test_every_protocol_parameter_has_a_simulate_flag() -> None:
    import dataclasses
    import inspect

    from derelayl.protocol import Params
    from derelayl.sim.cli import simulate

    flags = set(inspect.signature(simulate).parameters)
    # (copy_rule and improvement_z compare real models' predictions: the simulator refuses them,
    # test_copy_rule.py; challenges go straight to a ledger that takes them, test_challenges.py)
    refused = {"copy_rule", "improvement_z", "challenge_bond", "challenge_window"}
    fields = {f.name for f in dataclasses.fields(Params)} - {"extra", "reward_scheme", *refused}
    assert fields <= flags, f"no flag for {sorted(fields - flags)}"
    assert "scheme" in flags  # reward_scheme: --scheme (a comma list compares several)


def test_sustainability_values_a_slot_against_the_version_trained() -> None:
    # Prepare: both hold version 5 and have 1 coin; only participant 0 trained version 5
    from derelayl.sim.metrics import Recorder

    rec = Recorder(1, 2, np.arange(2), initial=2)
    zeros = np.zeros(2, dtype=np.int64)
    # Execute
    rec.record(np.full(2, UNIT), np.array([5, 5]), np.array([5, 1]), zeros, zeros, 5, 2 * UNIT, 0, 1, 0.0)
    rec.flush()
    # Assert: the reference taker bid is 1 coin for participant 0, 5 coins for participant 1
    assert rec.out["covers_bid"][0] == 0.5


def test_a_sybil_operator_takes_slots_but_no_coins_from_free_riding(tmp_path: Path) -> None:
    # Execute: 30% of 64 keys run by one operator that bids the least allowed and free-rides
    args = ["--participants", "64", "--rounds", "150", "--sybil-share", "0.3", "--no-figures", "--quiet"]
    result = runner.invoke(app, ["simulate", *args, "--out", str(tmp_path / "s")])
    plain = runner.invoke(app, ["simulate", *args[:4], "--no-figures", "--quiet", "--out", str(tmp_path / "p")])
    # Assert: it takes training slots (bidding 0 is never refused), earns next to nothing
    assert result.exit_code == 0 and plain.exit_code == 0, result.output
    final = json.loads((tmp_path / "s" / "summary.json").read_text())["final"]
    assert final["sybil_keys"] == 19 and 0.05 < final["sybil_slot_share"] < 0.5
    assert final["sybil_coin_share"] < 0.01
    assert "sybil_slot_share" not in json.loads((tmp_path / "p" / "summary.json").read_text())["final"]


def test_adversaries_in_a_simulate_config_are_the_sybil_share_and_nothing_else(tmp_path: Path) -> None:
    table = tmp_path / "a.toml"
    table.write_text("participants = 64\nrounds = 30\n[adversaries]\nsybil = 0.3\n")
    flat = tmp_path / "b.toml"
    flat.write_text("participants = 64\nrounds = 30\nsybil_share = 0.3\n")
    a = runner.invoke(app, ["simulate", "--config", str(table), "--out", str(tmp_path / "a"), "--no-figures"])
    b = runner.invoke(app, ["simulate", "--config", str(flat), "--out", str(tmp_path / "b"), "--no-figures"])
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    ra, rb = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("a", "b"))
    assert ra["final"] == rb["final"] and ra["final"]["sybil_keys"] == 19  # the same simulation
    for text, words in [
        ("[adversaries]\nlying_tester = 0.3\n", "models only sybil"),
        ("[adversaries]\nsybil = 1.5\n", "sybil must be a share in [0, 1)"),
        ("[adversaries]\nsybil = true\n", "sybil must be a share"),
        ("adversaries = 3\n", "must be a table"),
        ("sybil_share = 0.1\n[adversaries]\nsybil = 0.3\n", "give the Sybil share once"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        result = runner.invoke(app, ["simulate", "--config", str(bad), "--out", str(tmp_path / "bad")])
        assert result.exit_code == 2 and words in result.output, result.output
        assert not (tmp_path / "bad").exists()
