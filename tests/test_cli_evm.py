"""The command line with the contract as the ledger: run (embedded py-evm and our anvil),
resume, deploy, verify and inspect a contract's history, and the errors a user meets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from derelayl.cli import app
from derelayl.evm.node import anvil, anvil_path
from derelayl.evm.signing import derive_evm_keys

runner = CliRunner()
needs_anvil = pytest.mark.skipif(anvil_path() is None, reason="anvil is not installed (scripts/setup with npm)")


def _run(out: Path, *extra: str, rounds: int = 6) -> object:
    args = ["run", "--task", "latent", "--participants", "12", "--rounds", str(rounds), "--out", str(out), "--quiet"]
    return runner.invoke(app, [*args, *extra])


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("posting", [(), ("--post-commitments",)])
def test_run_on_the_embedded_contract_equals_the_sqlite_run(tmp_path: Path, posting: tuple[str, ...]) -> None:
    # Execute: the same network on SQLite and on the contract (no chain randomness: py-evm's is
    # 0), with trainers also posting their commitments straight to the contract or not
    local = _run(tmp_path / "sqlite")
    evm = _run(tmp_path / "evm", "--ledger", "evm", "--no-chain-randomness", *posting)
    # Assert
    assert local.exit_code == 0, local.output
    assert evm.exit_code == 0, evm.output
    assert "history verified" in evm.output
    a, b = _summary(tmp_path / "sqlite"), _summary(tmp_path / "evm")
    assert a["balances"] == b["balances"] and a["money"] == b["money"]
    assert b["ledger"]["verified"] and b["ledger"]["blocks"] == 4 * 6 and b["ledger"]["backend"] == "embedded"
    assert (b["ledger"]["posted_commitments"] > 0) == bool(posting)  # each trainer posted its commitment
    assert (tmp_path / "evm" / "contract.json").is_file() and (tmp_path / "evm" / "latent.png").stat().st_size > 0


def test_posting_commitments_on_a_local_chain_is_one_error_line(tmp_path: Path) -> None:
    result = _run(tmp_path / "local", "--post-commitments")
    assert result.exit_code == 2 and result.output.startswith("error:"), result.output  # type: ignore[attr-defined]
    assert "--post-commitments needs --ledger evm" in result.output  # type: ignore[attr-defined]
    assert not (tmp_path / "local").exists()


def test_embedded_run_cannot_be_resumed_or_verified_later(tmp_path: Path) -> None:
    assert _run(tmp_path / "evm", "--ledger", "evm").exit_code == 0
    again = _run(tmp_path / "evm", "--ledger", "evm", rounds=8)
    assert again.exit_code == 2 and "embedded EVM" in again.output
    check = runner.invoke(app, ["verify", str(tmp_path / "evm")])
    assert check.exit_code == 2 and "ended with the run" in check.output


@needs_anvil
def test_anvil_run_resumes_verifies_and_inspects(tmp_path: Path) -> None:
    # Prepare: 4 rounds, then resume to 7; and an uninterrupted 7-round run to compare
    out, whole = tmp_path / "anvil", tmp_path / "whole"
    first = _run(out, "--ledger", "evm", "--rpc", "anvil", "--no-chain-randomness", rounds=4)
    assert first.exit_code == 0, first.output
    # Execute
    resumed = _run(out, "--ledger", "evm", "--rpc", "anvil", "--no-chain-randomness", rounds=7)
    uninterrupted = _run(whole, "--ledger", "evm", "--rpc", "anvil", "--no-chain-randomness", rounds=7)
    checked = runner.invoke(app, ["verify", str(out)])
    shown = runner.invoke(app, ["inspect", str(out), "--json", "--model", "3"])
    # Assert
    assert resumed.exit_code == 0 and uninterrupted.exit_code == 0, resumed.output + uninterrupted.output
    assert _summary(out)["resumed_from_height"] == 16
    assert _summary(out)["balances"] == _summary(whole)["balances"]
    assert _summary(out)["head_hash"] == _summary(whole)["head_hash"]  # the core's state root
    assert checked.exit_code == 0 and "valid: 28 blocks, round 7" in checked.output, checked.output
    report = json.loads(shown.output)
    assert report["round"] == 7 and report["lineage"][-1]["model"] == 0 and report["contract"]


@needs_anvil
def test_deploy_then_verify_and_inspect_by_address() -> None:
    node = anvil()
    try:
        founders = [k.address for k in derive_evm_keys(5, 2)]
        deployed = runner.invoke(
            app, ["deploy", "--rpc", node.url, "--participant", founders[0], "--participant", founders[1]]
        )
        assert deployed.exit_code == 0, deployed.output
        address = deployed.stdout.strip().splitlines()[-1]
        checked = runner.invoke(app, ["verify", "--rpc", node.url, "--contract", address])
        shown = runner.invoke(app, ["inspect", "--rpc", node.url, "--contract", address, "--json"])
        wrong_chain = runner.invoke(app, ["verify", "--rpc", node.url, "--contract", address, "--chain-id", "1"])
    finally:
        node.close()
    assert checked.exit_code == 0 and "valid: 0 blocks, round 0" in checked.output, checked.output
    assert len(json.loads(shown.output)["richest"]) == 3
    assert wrong_chain.exit_code == 2 and "not the expected chain 1" in wrong_chain.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["verify", "--rpc", "http://127.0.0.1:9", "--contract", "0x" + "11" * 20], "cannot reach an Ethereum node"),
        (["verify", "--rpc", "http://127.0.0.1:9"], "needs both --rpc URL and --contract"),
        (["inspect", "--rpc", "ftp://x", "--contract", "0x" + "11" * 20], "must be an http(s) URL"),
        (["deploy", "--rpc", "anvil"], "deploy needs --rpc URL of a running node"),
        (["deploy", "--rpc", "http://127.0.0.1:9", "--key", "zz"], "--key must be a private key"),
        (["run", "--task", "latent", "--rpc", "anvil", "--out", "{tmp}/x"], "--rpc needs --ledger evm"),
        (["run", "--task", "latent", "--ledger", "bogus", "--out", "{tmp}/y"], "--ledger must be sqlite or evm"),
    ],
)
def test_bad_evm_input_is_one_error_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code in (1, 2)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].startswith("error:") and message in " ".join(lines), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_missing_contract_is_one_error_line() -> None:
    node = None
    if anvil_path() is None:
        pytest.skip("needs a node other than the embedded one")
    node = anvil()
    try:
        result = runner.invoke(app, ["verify", "--rpc", node.url, "--contract", "0x" + "22" * 20])
    finally:
        node.close()
    assert result.exit_code == 2 and "error: no contract at" in result.output


def test_same_seed_same_result_on_the_embedded_contract(tmp_path: Path) -> None:
    """Same config and seed => same state root (the summary's head_hash) and balances, on a
    chain whose own block hashes carry timestamps."""
    a = _run(tmp_path / "a", "--ledger", "evm", rounds=4)
    b = _run(tmp_path / "b", "--ledger", "evm", rounds=4)
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert _summary(tmp_path / "a")["head_hash"] == _summary(tmp_path / "b")["head_hash"]
    assert _summary(tmp_path / "a")["balances"] == _summary(tmp_path / "b")["balances"]
