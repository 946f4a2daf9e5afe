"""The command line as a user meets it: run, verify, inspect, and a kill -9 mid-run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from derelayl.cli import app

runner = CliRunner()


def _run(out: Path, *extra: str) -> object:
    return runner.invoke(
        app, ["run", "--task", "latent", "--participants", "16", "--rounds", "8", "--out", str(out), "--quiet", *extra]
    )


def test_run_writes_chain_and_summary(tmp_path: Path) -> None:
    result = _run(tmp_path / "r")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["rounds"] == 8 and summary["height"] == 1 + 4 * 8
    assert len(summary["balances"]) == 16
    assert {"config", "head_hash", "wall_seconds", "money"} <= set(summary)
    assert (tmp_path / "r" / "latent.png").stat().st_size > 0
    rounds = [json.loads(line)["round"] for line in (tmp_path / "r" / "rounds.jsonl").read_text().splitlines()]
    assert rounds == list(range(9))  # one record per settled round, from genesis (0) to 8


def test_rerun_resumes_and_extends(tmp_path: Path) -> None:
    _run(tmp_path / "r")
    first = json.loads((tmp_path / "r" / "summary.json").read_text())
    result = runner.invoke(
        app,
        ["run", "--task", "latent", "--participants", "16", "--rounds", "12", "--out", str(tmp_path / "r"), "--quiet"],
    )
    assert result.exit_code == 0, result.output
    second = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert second["resumed_from_height"] == first["height"]
    lines = (tmp_path / "r" / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == list(range(13))  # resume adds, never repeats
    fresh = runner.invoke(
        app,
        ["run", "--task", "latent", "--participants", "16", "--rounds", "12", "--out", str(tmp_path / "f"), "--quiet"],
    )
    assert fresh.exit_code == 0
    assert json.loads((tmp_path / "f" / "summary.json").read_text())["head_hash"] == second["head_hash"]


def test_rerun_with_other_settings_is_refused(tmp_path: Path) -> None:
    _run(tmp_path / "r")
    result = runner.invoke(
        app, ["run", "--task", "latent", "--participants", "16", "--seed", "7", "--out", str(tmp_path / "r"), "--quiet"]
    )
    assert result.exit_code == 2
    assert "other participants, seed or parameters" in result.output


def test_verify_and_inspect(tmp_path: Path) -> None:
    _run(tmp_path / "r")
    chain = str(tmp_path / "r" / "chain.sqlite")
    ok = runner.invoke(app, ["verify", chain])
    assert ok.exit_code == 0 and "valid: 33 blocks" in ok.output
    shown = runner.invoke(app, ["inspect", chain, "--model", "5", "--json"])
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.output)
    assert report["lineage"][0]["model"] == 5 and report["lineage"][-1]["model"] == 0
    assert report["height"] == 33


def test_verify_reports_first_bad_block(tmp_path: Path) -> None:
    _run(tmp_path / "r")
    path = tmp_path / "r" / "chain.sqlite"
    db = sqlite3.connect(path)
    db.execute("UPDATE blocks SET body = body || ' ' WHERE height = 10")
    db.commit()
    db.close()
    bad = runner.invoke(app, ["verify", str(path)])
    assert bad.exit_code == 1
    assert "INVALID at block 10: tampered bytes" in bad.output


def test_verify_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", str(tmp_path / "nope.sqlite")])
    assert result.exit_code == 1 and "no such chain file" in result.output


def test_bad_options_give_clear_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--participants", "1", "--out", str(tmp_path / "x"), "--quiet"])
    assert result.exit_code == 2 and "in 2..100000" in result.output
    result = runner.invoke(app, ["run", "--task", "chess", "--out", str(tmp_path / "x"), "--quiet"])
    assert result.exit_code == 2 and "unknown task 'chess'" in result.output


def _height(path: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5)
        (n,) = db.execute("SELECT COUNT(*) FROM blocks").fetchone()
        db.close()
        return int(n)
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_kill_9_mid_run_then_resume(tmp_path: Path) -> None:
    # Prepare: a run long enough to be killed in the middle
    args = [
        sys.executable,
        "-m",
        "derelayl.cli",
        "run",
        "--task",
        "latent",
        "--participants",
        "48",
        "--rounds",
        "300",
        "--quiet",
    ]
    out = tmp_path / "killed"
    proc = subprocess.Popen([*args, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # Execute: kill -9 once some blocks are on disk
    deadline = time.monotonic() + 120
    while _height(out / "chain.sqlite") < 120 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    acknowledged = _height(out / "chain.sqlite")
    assert 0 < acknowledged < 1 + 4 * 300
    # Assert: verify passes on what survived, a rerun resumes at the last block
    assert subprocess.run([sys.executable, "-m", "derelayl.cli", "verify", str(out / "chain.sqlite")]).returncode == 0
    subprocess.run([*args, "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["resumed_from_height"] >= acknowledged
    subprocess.run([*args, "--out", str(tmp_path / "clean")], check=True, stdout=subprocess.DEVNULL)
    clean = json.loads((tmp_path / "clean" / "summary.json").read_text())
    assert resumed["head_hash"] == clean["head_hash"]
    assert subprocess.run([sys.executable, "-m", "derelayl.cli", "verify", str(out / "chain.sqlite")]).returncode == 0


def test_default_run_is_real_relay_training(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["run", "--participants", "8", "--rounds", "2", "--out", str(tmp_path / "d"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["config"]["task"] == "digits" and summary["rounds"] == 2
    assert list((tmp_path / "d" / "models").glob("*.safetensors"))
    assert runner.invoke(app, ["verify", str(tmp_path / "d" / "chain.sqlite")]).exit_code == 0


def test_errors_show_config_keys_literally(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nseed = 0\n[data]\ndataset = "digits"\n')
    result = runner.invoke(app, ["experiment", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "[methods] must list" in result.output  # not eaten as terminal markup


def test_verify_names_a_block_missing_a_body_field(tmp_path: Path) -> None:
    """derelayl/2 decodes strictly: a test block without its co_testers list (the form of the
    first protocol version) is malformed, and verify names its height."""
    import dataclasses

    from derelayl.agents.latent import LatentPopulation
    from derelayl.learning.latent import LatentTrainer
    from derelayl.ledger import Chain, SQLiteLedger, derive_keys
    from derelayl.ledger.codec import encode_block, proposal_of, seal
    from derelayl.protocol import Params, Phase, process_block
    from derelayl.protocol.digest import compute_state_root

    # Prepare: an otherwise valid, correctly signed test block without the field
    keys = derive_keys(3, 8)
    path = tmp_path / "chain.sqlite"
    chain = Chain.create(SQLiteLedger(path), Params(test_cases=4), b"\x03" * 32, [k.public for k in keys], keys[0])
    net, signers = LatentPopulation(LatentTrainer(seed=3)), dict(enumerate(keys))
    while chain.state.phase != Phase.TEST:
        chain.produce(net.next_block(chain.state), signers)
    block = dataclasses.replace(net.next_block(chain.state), time=chain.height)
    body = encode_block(proposal_of(block, chain.chain_id, signers, {}))
    assert body.pop("co_testers") == []
    after = chain.state.copy()
    process_block(after, block)
    stored = seal(
        block,
        body,
        height=chain.height,
        prev=chain.head_hash,
        state_root=compute_state_root(after),
        miner=signers[block.miner],
    )
    chain.ledger.append(stored)
    chain.ledger.close()
    # Execute
    result = runner.invoke(app, ["verify", str(path)])
    # Assert
    assert result.exit_code == 1
    assert f"INVALID at block {stored.height}: malformed block: test block body" in " ".join(result.output.split())
