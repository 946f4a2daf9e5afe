"""``derelayl audit``: every report of a run re-scored on the published test cases; a lying
tester is named, honest ones never are (real runs on the SQLite chain, real models)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from derelayl.agents.adversaries import Adversary
from derelayl.agents.relay import RelayBrain, share_cases
from derelayl.cli import app
from derelayl.evm.node import anvil_path
from derelayl.explorer.index import ChainIndex
from derelayl.runtime.audit import audit_run
from derelayl.runtime.local import RunConfig, run_network
from derelayl.runtime.torch_task import TorchTask

runner = CliRunner()
LIAR = 3


class LyingTask(TorchTask):
    """The digits task with participant ``LIAR`` a lying tester (favours its own models)."""

    def __init__(self, config: RunConfig, out_dir: Path) -> None:
        super().__init__(config, out_dir)
        fields = {f.name: getattr(self.brains[LIAR], f.name) for f in dataclasses.fields(RelayBrain)}
        self.brains[LIAR] = Adversary(**fields, kind="lying_tester", group=frozenset({LIAR}), n_classes=10)
        share_cases(self.brains)


def _config(**extra: object) -> RunConfig:
    values: dict[str, object] = {"participants": 12, "rounds": 8, "seed": 5, "task": "digits", "testers": 3}
    return RunConfig(**{**values, **extra})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("audit") / "honest"
    run_network(_config(pooled_cases=True, min_improvement=1, copy_rule=True), out, TorchTask)
    return out


def test_an_honest_run_re_executes_report_for_report(honest: Path) -> None:
    audit = audit_run(honest)
    assert audit.rounds == 8 and audit.reports == 24 and audit.checked == 24 and not audit.findings
    result = runner.invoke(app, ["audit", str(honest)])
    assert result.exit_code == 0, result.output
    assert "8 test blocks, 24 reports: 24 re-run, 0 differ, 0 could not be checked" in result.output


@pytest.mark.parametrize("pooled", [False, True])
def test_a_lying_tester_is_named_in_every_round_it_tested(tmp_path: Path, pooled: bool) -> None:
    # Prepare: a run in which one participant lies whenever it tests
    out = tmp_path / "liar"
    run_network(_config(pooled_cases=pooled, rounds=12), out, LyingTask)
    # Execute
    audit = audit_run(out)
    result = runner.invoke(app, ["audit", str(out), "--json"])
    # Assert: the liar is named exactly in the rounds it tested; nobody else ever is
    assert audit.checked == audit.reports and audit.lies
    assert {f.tester for f in audit.lies} == {LIAR}
    assert result.exit_code == 1 and json.loads(result.output)["findings"][0]["tester"] == LIAR


def test_with_appeals_the_liar_forfeits_and_the_appellants_reports_are_audited_too(tmp_path: Path) -> None:
    # Prepare: the lying tester of above, with pooled cases and appeals to 3 more participants
    out = tmp_path / "appealed"
    summary = run_network(_config(pooled_cases=True, appeal_testers=3, rounds=12), out, LyingTask)
    # Execute
    audit = audit_run(out)
    # Assert: every round the liar tested was disputed, and its appeal re-run as well: the
    # appellants' reports (beyond the 3 per test block) all match re-execution, only the liar lies
    tested = len({f.round for f in audit.lies})
    assert tested >= 1 and {f.tester for f in audit.lies} == {LIAR}
    assert audit.reports == 3 * 12 + 3 * tested and audit.checked == audit.reports
    assert summary["rounds"] == 12, summary
    # and the explorer's rounds show what each appeal paid and what the liar forfeited
    index = ChainIndex(out / "chain.sqlite")
    index.follow()
    disputed = [r for r in index.rounds if r["forfeited_coins"] > 0]
    assert len(disputed) == tested
    assert all(r["appeal_coins"] > r["forfeited_coins"] for r in disputed)


def test_cases_that_are_missing_or_altered_are_reported_unchecked_not_passed(honest: Path, tmp_path: Path) -> None:
    # Prepare: a copy of the honest run with one published case file altered and one removed
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(honest, out)
    files = sorted((out / "cases").iterdir())
    files[0].write_bytes(files[0].read_bytes()[:-1] + b"\x01")
    files[1].unlink()
    # Execute
    audit = audit_run(out)
    # Assert: nothing passes unchecked, nothing is called a lie
    assert not audit.lies and audit.checked < audit.reports
    assert all(f.what == "unchecked" and "not found" in f.detail for f in audit.findings)


def test_audit_refuses_what_is_not_a_run_of_real_models(tmp_path: Path) -> None:
    args = ["run", "--task", "latent", "--rounds", "2", "--out", str(tmp_path / "latent"), "--quiet"]
    made = runner.invoke(app, args)
    assert made.exit_code == 0, made.output
    before = sorted(p.name for p in (tmp_path / "latent").iterdir())
    for target in (tmp_path / "latent", tmp_path / "nothing"):
        result = runner.invoke(app, ["audit", str(target)])
        assert result.exit_code == 2 and result.output.startswith("error:") and "Traceback" not in result.output
    assert sorted(p.name for p in (tmp_path / "latent").iterdir()) == before


@pytest.mark.skipif(anvil_path() is None, reason="anvil is not installed (scripts/setup with npm)")
def test_a_run_on_the_contract_is_audited_from_its_saved_chain(tmp_path: Path) -> None:
    out = tmp_path / "anvil"
    args = ["run", "--ledger", "evm", "--rpc", "anvil", "--rounds", "3", "--participants", "8"]
    made = runner.invoke(app, [*args, "--testers", "3", "--pooled-cases", "--out", str(out), "--quiet"])
    assert made.exit_code == 0, made.output
    audit = audit_run(out)  # anvil restarted on the run's saved chain, then stopped
    assert audit.rounds == 3 and audit.reports == 9 and audit.checked == 9 and not audit.findings


@pytest.mark.skipif(anvil_path() is None, reason="anvil is not installed (scripts/setup with npm)")
def test_with_appeals_the_contract_run_ends_as_the_sqlite_run(tmp_path: Path) -> None:
    # Prepare / Execute: the lying tester with appeals, on the SQLite chain and on the contract
    config = _config(pooled_cases=True, appeal_testers=3, rounds=8)
    sqlite = run_network(config, tmp_path / "sqlite", LyingTask)
    evm_config = dataclasses.replace(config, ledger="evm", rpc="anvil", chain_randomness=False)
    evm = run_network(evm_config, tmp_path / "evm", LyingTask)
    # Assert: the same disputes decided the same way (same balances); both audits name the liar
    assert sqlite["balances"] == evm["balances"], (sqlite, evm)
    for out in (tmp_path / "sqlite", tmp_path / "evm"):
        audit = audit_run(out)
        assert {f.tester for f in audit.lies} == {LIAR} and audit.checked == audit.reports > 3 * 8
