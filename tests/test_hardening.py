"""Bad input, as a hostile user gives it (issue 9): every command ends in one ``error:`` line
and no traceback, refuses before it writes, leaves files it did not create untouched, and
will not share an output folder. The CLI runs as a real subprocess on real files."""

from __future__ import annotations

import importlib.util
import json
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from derelayl.errors import MalformedError, StorageError
from derelayl.ledger.sqlite import SQLiteLedger

CLI = [sys.executable, "-m", "derelayl.cli"]
ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes (the lock file, which names its last holder, aside)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _assert_one_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    text = result.stdout + result.stderr
    assert result.returncode not in (0, 3), text  # 3 would be an internal error
    assert "Traceback" not in text, text
    assert "error:" in text or "INVALID" in text, text
    flat = " ".join(text.split())
    for word in words:
        assert word in flat, flat


# ---------------------------------------------------------------- files that are not ours


def test_verify_and_run_leave_another_programs_database_untouched(tmp_path: Path) -> None:
    # Prepare: another application's SQLite file, and a zero-byte file
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE accounts (name TEXT)")
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    before = _snapshot(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "chain.sqlite").write_bytes(other.read_bytes())
    # Execute
    results = [
        _cli("verify", str(other), cwd=tmp_path),
        _cli("verify", str(empty), cwd=tmp_path),
        _cli("inspect", str(other), cwd=tmp_path),
        _cli("run", "--task", "latent", "--participants", "4", "--rounds", "1", "--out", "run", cwd=tmp_path),
    ]
    # Assert: refused, named, and not one byte changed
    for result in results:
        _assert_one_error(result, "not a derelayl chain")
    assert {k: v for k, v in _snapshot(tmp_path).items() if not k.startswith("run")} == before
    assert (tmp_path / "run" / "chain.sqlite").read_bytes() == other.read_bytes()
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name != ".lock") == ["chain.sqlite"]


def test_a_reader_never_creates_a_chain(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no such chain file"):
        SQLiteLedger(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()


# ---------------------------------------------------------------- validate, then write


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--task", "digits", "--seed", "-1"], ["--seed must be in 0..4294967295"]),
        (["--task", "bogus"], ["unknown task 'bogus'"]),
        (["--task", "latent", "--participants", "1000000000"], ["--participants must be in 2..100000"]),
        (["--task", "latent", "--rounds", "-5"], ["--rounds must be in 0.."]),
    ],
)
def test_a_refused_run_writes_nothing(tmp_path: Path, args: list[str], words: list[str]) -> None:
    result = _cli("run", *args, "--out", "r", "--quiet", cwd=tmp_path)
    _assert_one_error(result, *words)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("out", "words"),
    [("/etc/passwd/x", ["Not a directory"]), ("a-file", ["is not a folder"])],
)
def test_an_output_path_that_cannot_be_a_folder_is_one_error_line(tmp_path: Path, out: str, words: list[str]) -> None:
    (tmp_path / "a-file").write_text("mine\n")
    result = _cli("run", "--task", "latent", "--participants", "4", "--rounds", "1", "--out", out, cwd=tmp_path)
    _assert_one_error(result, *words)
    assert (tmp_path / "a-file").read_text() == "mine\n"


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ("[protocol]\nk = 2.5\n", ["k must be an integer, got 2.5"]),
        ("[protocol]\nk = true\n", ["k must be an integer, got True"]),
        ('[protocol]\nencryption_miner_holds_models = "no"\n', ["must be true or false, got 'no'"]),
        ("[protocol]\nmo_budget = 1e30\n", ["mo_budget must be an integer of units in 0.."]),
        ("join_rate = nan\n", ["join_rate must be a finite number"]),
        ('seeds = "0-100000000"\n', ["is more than 10,000 seeds"]),
        ("participants = 3000000\nrounds = 1000\n", ["GiB", "make the run smaller"]),
    ],
)
def test_a_bad_simulate_config_stops_before_any_work(tmp_path: Path, toml: str, words: list[str]) -> None:
    (tmp_path / "c.toml").write_text(toml)
    started = time.monotonic()
    result = _cli("simulate", "--config", "c.toml", "--out", "s", cwd=tmp_path)
    _assert_one_error(result, *words)
    assert not (tmp_path / "s").exists()
    assert time.monotonic() - started < 60  # refused up front, not after growing


def test_an_experiment_with_a_nan_learning_rate_is_refused(tmp_path: Path) -> None:
    text = (ROOT / "experiments" / "digits_dirichlet.toml").read_text()
    (tmp_path / "e.toml").write_text(text.replace("lr = 0.05", "lr = nan", 1))
    result = _cli("experiment", "e.toml", "--out", "e", cwd=tmp_path)
    _assert_one_error(result, "[train] lr = nan: must be a finite number")
    assert not (tmp_path / "e").exists()


# ---------------------------------------------------------------- one writer per folder


def test_a_second_run_on_a_busy_folder_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    # Prepare: a long run holding the folder
    first = subprocess.Popen(
        [*CLI, "run", "--task", "latent", "--participants", "50", "--rounds", "100000", "--out", "r", "--quiet"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "r" / "chain.sqlite").exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        # Execute
        second = _cli("run", "--task", "latent", "--participants", "50", "--rounds", "3", "--out", "r", cwd=tmp_path)
    finally:
        first.terminate()
        first.wait(timeout=30)
    # Assert
    _assert_one_error(second, "is in use by another command", f"pid {first.pid}")
    after = _cli("run", "--task", "latent", "--participants", "50", "--rounds", "1", "--out", "r", cwd=tmp_path)
    assert after.returncode == 0, after.stdout + after.stderr  # the lock died with its holder


# ---------------------------------------------------------------- derived files and the chain


def test_rounds_log_survives_a_torn_line_and_never_mixes_two_chains(tmp_path: Path) -> None:
    run = ["run", "--task", "latent", "--participants", "6", "--out", "r", "--quiet"]
    assert _cli(*run, "--rounds", "4", cwd=tmp_path).returncode == 0
    with (tmp_path / "r" / "rounds.jsonl").open("a") as fh:
        fh.write('{"round": 5, "torn')
    resumed = _cli(*run, "--rounds", "6", cwd=tmp_path)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    rounds = [json.loads(line)["round"] for line in (tmp_path / "r" / "rounds.jsonl").read_text().splitlines()]
    assert rounds == list(range(7))
    # the chain replaced by another seed's: the log starts again instead of mixing
    (tmp_path / "r" / "chain.sqlite").unlink()
    assert _cli(*run, "--rounds", "2", "--seed", "7", cwd=tmp_path).returncode == 0
    rounds = [json.loads(line)["round"] for line in (tmp_path / "r" / "rounds.jsonl").read_text().splitlines()]
    assert rounds == [0, 1, 2]


# ---------------------------------------------------------------- crafted chains


def test_a_genesis_with_an_extra_header_field_is_a_named_bad_block(tmp_path: Path) -> None:
    from derelayl.ledger import Chain, derive_keys
    from derelayl.ledger.base import MemoryLedger, StoredBlock
    from derelayl.ledger.crypto import canonical, sha256
    from derelayl.protocol import Params

    keys = derive_keys("genesis", 3)
    ledger = MemoryLedger()
    Chain.create(ledger, Params(), b"\x01" * 32, [k.public for k in keys], keys[0])
    genesis = ledger.get(0)
    header = {**json.loads(genesis.header), "note": "extra"}
    raw = canonical(header)
    crafted = MemoryLedger()
    crafted.append(StoredBlock(0, sha256(raw), raw, genesis.body, keys[0].sign(sha256(raw))))
    with pytest.raises(Exception) as caught:
        Chain.open(crafted)
    assert isinstance(caught.value, MalformedError | StorageError) or "exactly the fields" in str(caught.value)


def test_fuzzed_blocks_configs_and_wire_inputs_only_raise_derelayl_errors() -> None:
    """A bounded run of scripts/fuzz.py (the long one runs 100,000 inputs per target)."""
    spec = importlib.util.spec_from_file_location("fuzz", ROOT / "scripts" / "fuzz.py")
    assert spec is not None and spec.loader is not None
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    rng = random.Random(5)
    chain = fuzz.ChainTarget()
    makers = {
        "blocks": lambda r: chain.case(r, genesis=False),
        "genesis": lambda r: chain.case(r, genesis=True),
        "append": chain.append_case,
        "wire": fuzz.WireTarget().case,
        "config": fuzz.ConfigTarget().case,
        "experiment": fuzz.ExperimentConfigTarget().case,
    }
    for name, make in makers.items():
        outcomes = fuzz.run(name, make, 300 if name != "experiment" else 2000, rng)
        unexpected = {k: v for k, v in outcomes.items() if k.startswith("UNEXPECTED")}
        assert not unexpected, (name, unexpected)
        assert sum(outcomes.values()) == (300 if name != "experiment" else 2000)


@pytest.mark.parametrize("command", ["simulate", "experiment"])
def test_a_config_that_is_a_folder_or_binary_is_one_error_line(tmp_path: Path, command: str) -> None:
    (tmp_path / "folder.toml").mkdir()
    (tmp_path / "binary.toml").write_bytes(bytes(range(256)))
    for config in ("folder.toml", "binary.toml"):
        args = ["--config", config] if command == "simulate" else [config]
        result = _cli(command, *args, "--out", "o", cwd=tmp_path)
        _assert_one_error(result, config)
        assert not (tmp_path / "o").exists()


def test_resuming_with_other_participants_is_refused_before_anything_changes(tmp_path: Path) -> None:
    run = ["run", "--task", "latent", "--out", "r", "--quiet"]
    assert _cli(*run, "--participants", "10", "--rounds", "2", cwd=tmp_path).returncode == 0
    before = _snapshot(tmp_path / "r")
    result = _cli(*run, "--participants", "6", "--rounds", "3", cwd=tmp_path)
    _assert_one_error(result, "holds a run with other participants")
    assert _snapshot(tmp_path / "r") == before


def test_verify_names_a_corrupted_model_file_even_one_no_longer_needed(tmp_path: Path) -> None:
    # Prepare: a digits run (models stored by hash), one model file's bytes changed
    made = _cli("run", "--task", "digits", "--participants", "4", "--rounds", "2", "--out", "r", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert _cli("verify", "r", cwd=tmp_path).returncode == 0
    victim = sorted((tmp_path / "r" / "models").glob("*.safetensors"))[0]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    # Execute
    result = _cli("verify", "r", cwd=tmp_path)
    # Assert
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "do not hash to their name" in result.stdout and victim.name in result.stdout, result.stdout


def test_a_deeply_nested_block_is_refused_even_after_py_evm_raised_the_recursion_limit(tmp_path: Path) -> None:
    """py-evm sets Python's recursion limit to 100,000; json.loads of a header nested that
    deep then overflowed the C stack (a segfault, found by the fuzzer in the full suite).
    Run in a subprocess so that a crash fails this test instead of killing pytest."""
    script = """
import sys
from eth_tester import PyEVMBackend
PyEVMBackend()
assert sys.getrecursionlimit() >= 100_000
from derelayl.errors import DerelaylError
from derelayl.ledger import Chain, derive_keys
from derelayl.ledger.base import MemoryLedger, StoredBlock
from derelayl.ledger.crypto import sha256
from derelayl.protocol import Params
keys = derive_keys("deep", 3)
ledger = MemoryLedger()
Chain.create(ledger, Params(), b"\\x01" * 32, [k.public for k in keys], keys[0])
raw = b"[" * 200_000 + b"]" * 200_000
crafted = MemoryLedger()
crafted.append(StoredBlock(0, sha256(raw), raw, ledger.get(0).body, keys[0].sign(sha256(raw))))
try:
    Chain.open(crafted)
except DerelaylError as exc:
    print("refused:", type(exc).__name__, exc)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: ChainIntegrityError block 0" in result.stdout, result.stdout


@pytest.mark.parametrize(
    "command", [["simulate", "--rounds", "3"], ["experiment", "experiments/digits_dirichlet.toml"]]
)
def test_simulate_and_experiment_refuse_a_folder_another_command_holds(tmp_path: Path, command: list[str]) -> None:
    import os

    from derelayl.folders import FolderLock

    with FolderLock(tmp_path / "o", "a test"):
        result = _cli(*command, "--out", str(tmp_path / "o"), cwd=ROOT)
    _assert_one_error(result, "is in use by another command", f"pid {os.getpid()}")
    assert [p.name for p in (tmp_path / "o").iterdir()] == [".lock"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["devnet", "--chain", "ganache", "--out", "d"], ["--chain must be one of auto, anvil, embedded"]),
        (["inspect", "c.sqlite", "--top", "-2"], ["--top"]),
        (["inspect", "c.sqlite", "--blocks", "-1"], ["--blocks"]),
        (["run", "--min-improvement", "0", "--out", "r"], ["min_improvement must be an integer in 1.."]),
        (["devnet", "--min-improvement", "-3", "--out", "d"], ["min_improvement must be an integer in 1.."]),
        (["attacks", "--share", "0.9", "--out", "a"], ["--share must be in (0, 0.5]"]),
        (["attacks", "--improvement-z", "0", "--out", "a"], ["--improvement-z must be in 1..10000"]),
        (["run", "--testers", "0", "--out", "r"], ["testers must be between 1 and 16"]),
        (["devnet", "--testers", "99", "--out", "d"], ["testers must be between 1 and 16"]),
        (["simulate", "--sybil-share", "-0.5", "--out", "s"], ["sybil_share must be in [0, 1)"]),
        (["run", "--appeal-testers", "3", "--out", "r"], ["appeal_testers needs pooled_cases"]),
        (["run", "--pooled-cases", "--testers", "3", "--appeal-testers", "17", "--out", "r"], ["between 0 and 16"]),
        (["devnet", "--adversaries", "omitting_miner=0.3", "--out", "d"], ["--adversaries: 'omitting_miner=0.3'"]),
        (["devnet", "--adversaries", "lying_tester=lots", "--out", "d"], ["is not kind=share"]),
        (
            [
                *["node", "--key", "k.json", "--rpc", "http://127.0.0.1:9", "--contract", "0x0"],
                *["--data", "digits:0/2", "--home", "h", "--behave", "nonsense"],
            ],
            ["--behave must be honest or one of"],
        ),
        (["devnet", "--rechecks", "2", "--out", "d"], ["--rechecks needs --fhe on and --challenge-bond"]),
        (["devnet", "--rechecks", "17", "--fhe", "on", "--out", "d"], ["--rechecks must be in 0..16"]),
        (
            [
                *["node", "--key", "k.json", "--rpc", "http://127.0.0.1:9", "--contract", "0x0"],
                *["--data", "digits:0/2", "--home", "h", "--rechecks", "1"],
            ],
            ["--rechecks needs --fhe on"],
        ),
        (["simulate", "--appeal-testers", "3", "--out", "s"], ["appeal_testers needs pooled_cases"]),
        (["run", "--tester-stake", "1", "--out", "r"], ["tester_stake needs appeal_testers"]),
        (["run", "--tester-stake", "-1", "--out", "r"], ["--tester-stake must be non-negative"]),
        (["devnet", "--tester-stake", "lots", "--out", "d"], ["--tester-stake: not a coin amount"]),
        (["simulate", "--tester-stake", "0.0000001", "--out", "s"], ["finer than the smallest unit"]),
        (["attacks", "--tester-stake", "nan", "--out", "a"], ["--tester-stake"]),
        (["run", "--challenge-bond", "1", "--out", "r"], ["--challenge-bond: a challenge goes straight to a ledger"]),
        (["run", "--ledger", "evm", "--challenge-bond", "1", "--out", "r"], ["challenge_bond needs appeal_testers"]),
        (["devnet", "--challenge-bond", "lots", "--out", "d"], ["--challenge-bond: not a coin amount"]),
        (["devnet", "--challenge-window", "3", "--out", "d"], ["challenge_bond and challenge_window go together"]),
        (["run", "--ledger", "evm", "--challenge-bond", "-1", "--out", "r"], ["--challenge-bond must be non-negative"]),
        (
            [
                *["run", "--ledger", "evm", "--pooled-cases", "--testers", "3", "--appeal-testers", "3"],
                *["--challenge-window", "2", "--out", "r"],
            ],
            ["challenge_bond and challenge_window go together"],
        ),
        (
            [
                *["node", "--key", "k.json", "--rpc", "http://127.0.0.1:9", "--contract", "0x0"],
                *["--data", "digits:0/2", "--home", "h", "--behave", "lying_tester", "--group", "1,x"],
            ],
            ["--group must be participant indices"],
        ),
        (["devnet", "--task", "cifar", "--out", "d"], ["--task must be digits or an experiment config .toml"]),
        (["devnet", "--task", "missing.toml", "--out", "d"], ["cannot read config"]),
        (["run", "--task", "missing.toml", "--out", "r"], ["cannot read config"]),
        (
            ["compare", str(ROOT / "experiments" / "digits_dirichlet.toml"), "--cluster", "nonsense", "--out", "c"],
            ["--cluster nonsense: no Dask scheduler answers there"],
        ),
    ],
)
def test_new_options_refuse_a_bad_value_before_any_work(tmp_path: Path, args: list[str], words: list[str]) -> None:
    result = _cli(*args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr, result.stderr
    assert all(w in " ".join((result.stdout + result.stderr).split()) for w in words), result.stderr
    assert list(tmp_path.iterdir()) == []
