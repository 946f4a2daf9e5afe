"""The federated baselines of issue 13 (FedAvg with client sampling, FedProx, SCAFFOLD, gossip
with fanout), complete byte accounting of the relay (blocks broadcast), budgets, and
``derelayl compare`` end to end with real training."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from derelayl.agents import Agent, LatentBrain
from derelayl.agents.relay import MERGE_ALL
from derelayl.baselines import Budget, Point, run_fedavg, run_gossip
from derelayl.baselines.federated import clients_per_round, sample_clients
from derelayl.baselines.scaffold import run_scaffold
from derelayl.cli import app
from derelayl.experiments import compare
from derelayl.experiments.config import parse_config
from derelayl.experiments.relay import run_derelayl
from derelayl.experiments.runner import build_experiment_setup
from derelayl.learning.latent import LatentTrainer
from derelayl.learning.seeds import derive_seed
from derelayl.learning.serialization import param_bytes
from derelayl.ledger import Chain, SQLiteLedger, derive_keys
from derelayl.ledger.client import LocalChainClient
from derelayl.ledger.codec import wire_size
from derelayl.protocol import Params
from derelayl.protocol.blocks import Block
from derelayl.protocol.params import preset
from derelayl.runtime.driver import RoundDriver

SMALL_TOML = """
name = "tiny"
seed = 3
[data]
dataset = "digits"
participants = 8
alpha = 0.5
[model]
hidden = [8]
[methods.fedavg]
rounds = 2
[methods.derelayl]
preset = "minimal"
rounds = 4
"""


@pytest.fixture(scope="module")
def setup():  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    return build_experiment_setup(parse_config(tomllib.loads(SMALL_TOML)))


def test_budget_runs_until_every_given_budget_is_reached_and_never_past_the_round_cap() -> None:
    at = lambda r, b, s: Point(r, 0.0, b, 0, s)  # noqa: E731
    assert Budget(rounds=3).more(at(2, 10**9, 10**9)) and not Budget(rounds=3).more(at(3, 0, 0))
    both = Budget(bytes=100, samples=50, max_rounds=10)
    assert both.more(at(1, 100, 10)) and both.more(at(1, 10, 50)) and not both.more(at(1, 100, 50))
    assert not both.more(at(10, 0, 0))
    assert Budget(bytes=100, rounds=2).more(at(1, 0, 0)) and not Budget(bytes=100, rounds=2).more(at(2, 0, 0))


def test_client_sampling_draws_a_seeded_share_and_everyone_at_one() -> None:
    assert clients_per_round(0.25, 20) == 5 and clients_per_round(0.01, 20) == 1 and clients_per_round(1.0, 7) == 7
    assert sample_clients(20, 1.0, seed=1, r=3) == list(range(20))
    picked = sample_clients(20, 0.25, seed=1, r=3)
    assert len(set(picked)) == 5 and picked == sample_clients(20, 0.25, seed=1, r=3)
    assert any(sample_clients(20, 0.25, seed=1, r=r) != picked for r in range(4, 10))


def test_sampled_fedavg_moves_and_trains_only_for_the_sampled_clients(setup) -> None:  # type: ignore[no-untyped-def]
    size = param_bytes(setup.init)
    curve = run_fedavg(setup, 3, seed=0, fraction=0.25)
    sizes = [len(p) for p in setup.split.participants]
    for r, point in enumerate(curve.points[1:], 1):
        chosen = sample_clients(8, 0.25, 0, r)
        assert point.bytes == r * 2 * 2 * size
        assert point.samples - curve.points[r - 1].samples == sum(sizes[p] for p in chosen)
    full = run_fedavg(setup, 3, seed=0)
    assert full.final.bytes == 3 * 2 * 8 * size and full.final.samples == 3 * sum(sizes)


def test_fedprox_is_fedavg_with_the_proximal_term(setup) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    prox = dataclasses.replace(setup, train_config=dataclasses.replace(setup.train_config, prox_mu=1.0))
    plain, proximal = run_fedavg(setup, 3, seed=0), run_fedavg(prox, 3, seed=0)
    assert [p.bytes for p in plain.points] == [p.bytes for p in proximal.points]
    assert [p.accuracy for p in plain.points] != [p.accuracy for p in proximal.points]


def test_scaffold_first_round_is_the_plain_average_and_later_rounds_are_corrected(setup) -> None:  # type: ignore[no-untyped-def]
    from derelayl.learning.torch_models import average

    stop = Budget(rounds=2)
    curve = run_scaffold(setup, 5, stop)
    trainer, evaluator = setup.trainer(), setup.evaluator()
    children = [
        trainer.train(setup.init, *shard.read(p), seed=derive_seed(5, "scaffold", 1, p))
        for p, shard in enumerate(setup.shards())
    ]
    assert curve.points[1].accuracy == setup.test_accuracy(evaluator, average(children))  # c = c_i = 0 at first
    assert curve.final.bytes == 2 * 4 * 8 * param_bytes(setup.init)  # x, c down; both changes up
    # control variates are in use from round 2: the corrected model differs from plain averaging
    x1 = average(children)
    plain = [
        trainer.train(x1, *shard.read(p), seed=derive_seed(5, "scaffold", 2, p))
        for p, shard in enumerate(setup.shards())
    ]
    assert curve.points[2].accuracy != setup.test_accuracy(evaluator, average(plain))  # deterministic: no chance tie
    zero = {k: torch.zeros_like(v) for k, v in setup.init.items()}
    shifted = trainer.train(x1, *setup.shards()[0].read(0), seed=1, correction={k: zero[k] + 0.5 for k in zero})
    assert not torch.equal(shifted["0.weight"], trainer.train(x1, *setup.shards()[0].read(0), seed=1)["0.weight"])
    assert torch.equal(
        trainer.train(x1, *setup.shards()[0].read(0), seed=1, correction=zero)["0.weight"],
        trainer.train(x1, *setup.shards()[0].read(0), seed=1)["0.weight"],
    )


def test_gossip_fanout_sends_to_that_many_peers(setup) -> None:  # type: ignore[no-untyped-def]
    size = param_bytes(setup.init)
    assert run_gossip(setup, 0, rounds=2, fanout=3).final.bytes == 2 * 8 * 3 * size
    assert run_gossip(setup, 0, rounds=2).final.bytes == 2 * 8 * size


def test_wire_size_is_the_size_of_the_block_the_signed_chain_stores(tmp_path: Path) -> None:
    keys = derive_keys(1, 6)
    params = Params(k=2, test_cases=5, testers=2)
    chain = Chain.create(SQLiteLedger(tmp_path / "c.sqlite"), params, b"\x01" * 32, [k.public for k in keys], keys[0])
    client = LocalChainClient(chain)
    driver = RoundDriver(client, [Agent(client.signer(k), LatentBrain(LatentTrainer(seed=1))) for k in keys])
    for _ in range(8):
        driver.step()
    checked = 0
    for event in client.events():
        if isinstance(event.operation, Block):
            stored = chain.ledger.get(event.height)
            assert wire_size(event.operation, event.height) == len(stored.header) + len(stored.body) + len(
                stored.signature
            )
            checked += 1
    assert checked == 8
    client.close()


def test_relay_bytes_count_blocks_sent_to_every_other_node(setup) -> None:  # type: ignore[no-untyped-def]
    curve = run_derelayl(setup, preset("minimal"), 0, rounds=3)
    parts = curve.info["bytes_breakdown"]
    assert parts["blocks"] > 0 and parts["blocks"] % 7 == 0  # 8 participants: 7 receivers
    assert curve.final.bytes == sum(parts.values())
    # the first-ranked model's lineage holds some, not all, of the training
    shares = [p.extra["lineage_samples"] / p.samples for p in curve.points[1:]]
    assert all(0 < s < 1 for s in shares)


def test_compare_run_one_is_deterministic_and_reads_each_budget_within_it(setup) -> None:  # type: ignore[no-untyped-def]
    config = parse_config(tomllib.loads(SMALL_TOML))
    raw = json.dumps(config.resolved())
    stop = compare.budgets(config, setup)
    assert stop["bytes"] == 2 * 8 * param_bytes(setup.init) * 2
    for method in compare.METHODS:
        point = compare.grid(method, "quick")[-1]
        row = compare.run_one(raw, method, point, 0, stop)
        assert row == compare.run_one(raw, method, point, 0, stop)
        curve = np.asarray(row["curve"])
        assert curve[-1, 0] >= stop["bytes"] or curve[-1, 1] >= stop["samples"] or row["rounds"] == compare.MAX_ROUNDS
        at_bytes = curve[curve[:, 0] <= stop["bytes"]][-1]
        assert row["bytes"] == at_bytes[2]


def test_every_method_gets_the_same_grid_size() -> None:
    for size in ("full", "quick"):
        assert len({len(compare.grid(m, size)) for m in compare.METHODS}) == 1


def test_compare_cli_writes_tables_figure_and_report(tmp_path: Path) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(SMALL_TOML)
    out = tmp_path / "out"
    args = ["compare", str(config), "--out", str(out), "--seeds", "0-2", "--tune-seeds", "7", "--grid", "quick"]
    result = CliRunner().invoke(app, [*args, "--methods", "derelayl,fedavg,scaffold", "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    for kind in ("bytes", "samples"):
        rows = results["tables"][kind]
        assert [r["method"] for r in rows[:3]] == ["derelayl", "fedavg", "scaffold"]
        assert rows[0]["point"] in compare.grid("derelayl", "quick")
        assert "difference" in rows[-1]
    assert len(results["tuning"]) == 3 * 8 * 1  # 3 methods x 2 x 2 x 2 points x 1 tuning seed
    assert (out / "compare.png").stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "At equal bytes" in report and "At equal compute" in report and "not a fair tuning" in report
    for block in report.split("\n\n"):  # every row of a table has as many cells as its header
        rows = [line for line in block.splitlines() if line.startswith("|")]
        assert len({row.count("|") for row in rows}) <= 1, block


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seeds", "0-2", "--tune-seeds", "2,3"], "--tune-seeds must differ from --seeds"),
        (["--methods", "fedavg,krum"], "unknown krum"),
        (["--methods", "fedavg"], "derelayl is missing"),
        (["--workers", "-1"], "--workers must be in 1..64"),
        (["--grid", "huge"], "--grid must be full or quick"),
    ],
)
def test_compare_refuses_bad_options_before_any_work(tmp_path: Path, extra: list[str], message: str) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["compare", "--out", str(out), *extra])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert not out.exists()


def _tiny_tables(tmp_path: Path, name: str, extra: list[str]) -> dict:
    config = tmp_path / "tiny.toml"
    config.write_text(SMALL_TOML)
    out = tmp_path / name
    args = ["compare", str(config), "--out", str(out), "--seeds", "0-1", "--tune-seeds", "7", "--grid", "quick"]
    result = CliRunner().invoke(app, [*args, "--methods", "derelayl,fedavg", "--quiet", *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text())["tables"]


def test_a_dask_cluster_runs_the_sweep_with_the_same_results_as_this_process(tmp_path: Path) -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = _tiny_tables(tmp_path, "remote", ["--cluster", cluster.scheduler_address])
    assert remote == _tiny_tables(tmp_path, "local", ["--workers", "1"])


def test_an_unreachable_cluster_is_one_error_line(tmp_path: Path) -> None:
    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["compare", "--out", str(out), "--cluster", "tcp://127.0.0.1:9"])
    assert result.exit_code != 0 and "no Dask scheduler answers there" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_a_seed_whose_split_cannot_be_made_is_named_before_any_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(SMALL_TOML.replace("alpha = 0.5", "alpha = 0.5\nmin_size = 200"))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["compare", str(config), "--out", str(out), "--tune-seeds", "7", "--workers", "2"])
    assert result.exit_code != 0 and "seed 7: dirichlet" in result.output and not out.exists()


def test_a_soup_reads_the_average_of_the_live_models_and_counts_their_fetch(setup) -> None:  # type: ignore[no-untyped-def]
    params = dataclasses.replace(preset("minimal"), select_fraction=Fraction(1))  # every child lives on
    plain = run_derelayl(setup, params, 0, rounds=4, merge_top_k=MERGE_ALL)
    soup = run_derelayl(setup, params, 0, rounds=4, merge_top_k=MERGE_ALL, soup=True)
    # the protocol runs the same: the soup is only a reading of its live models
    assert [p.accuracy for p in plain.points[1:]] == [p.extra["first_ranked"] for p in soup.points[1:]]
    assert soup.info["balances_coins"] == plain.info["balances_coins"]
    parts = soup.info["bytes_breakdown"]
    assert parts["soup_readers"] > 0 and parts["soup_readers"] % param_bytes(setup.init) == 0
    assert soup.final.bytes == sum(parts.values()) == plain.final.bytes + parts["soup_readers"]
    # several live models: the average is another model than the first-ranked one
    assert any(p.accuracy != p.extra["first_ranked"] for p in soup.points[1:])


def test_a_soup_of_one_live_model_is_that_model(setup) -> None:  # type: ignore[no-untyped-def]
    params = dataclasses.replace(preset("minimal"), cap=3)  # one owner, two trainers, one selected
    soup = run_derelayl(setup, params, 0, rounds=3, merge_top_k=MERGE_ALL, soup=True)
    assert soup.info["bytes_breakdown"]["soup_readers"] == 0
    assert all(p.accuracy == p.extra["first_ranked"] for p in soup.points[1:])
