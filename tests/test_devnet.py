"""A real network on this machine: node processes on loopback, anvil as the chain, real
PyTorch training. Slow (multi-process); CI runs them.

- a devnet of 8 nodes equals ``derelayl run`` with the same seed (same models selected,
  same balances), and ``verify`` replays its contract;
- nodes killed with ``kill -9`` at random moments — a model owner, a trainer, the tester and a
  block miner — are restarted and the network goes on: nothing lost, ``verify`` passes;
- newcomers on other loopback addresses (127.0.0.2, 127.0.0.3) with keys of their own
  register, announce themselves and take part;
- without anvil, a devnet runs on the embedded py-evm served over JSON-RPC and verifies itself.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from derelayl.cli import app
from derelayl.evm.client import ContractClient
from derelayl.evm.node import ANVIL_DEV_KEY, anvil_path, connect
from derelayl.evm.signing import EvmKey, key_of_address
from derelayl.node.keys import new_key
from derelayl.protocol.blocks import DepositBlock
from derelayl.protocol.types import Phase
from derelayl.runtime.audit import audit_run

pytestmark = pytest.mark.slow
needs_anvil = pytest.mark.skipif(anvil_path() is None, reason="needs anvil (scripts/setup with npm)")
runner = CliRunner()
CLI = [sys.executable, "-m", "derelayl.cli"]


def _devnet(out: Path, nodes: int, rounds: int, port: int, *extra: str) -> subprocess.Popen[bytes]:
    args = [*CLI, "devnet", "--nodes", str(nodes), "--rounds", str(rounds), "--out", str(out), "--quiet"]
    args += ["--base-port", str(port), *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(process: subprocess.Popen[bytes], timeout: float) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        pytest.fail(f"devnet did not finish in {timeout} s:\n{output.decode(errors='replace')[-3000:]}")
    return output.decode(errors="replace")


def _client(out: Path) -> ContractClient:
    record = json.loads((out / "devnet.json").read_text())
    return ContractClient(connect(record["rpc"]), record["contract"])


@needs_anvil
def test_a_stopped_devnet_resumes_from_its_saved_chain(tmp_path: Path) -> None:
    """anvil keeps the chain in the folder (--state): a devnet stopped after 2 rounds and run
    again to 3 continues from round 2, loses nothing, and verifies."""
    out = tmp_path / "dev"
    first = _wait(_devnet(out, 5, 2, 8770), timeout=300)
    again = _wait(_devnet(out, 5, 3, 8770), timeout=300)
    checked = runner.invoke(app, ["verify", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 3, first + again
    assert checked.exit_code == 0 and "valid: 12 blocks, round 3" in checked.output, checked.output


def _stopped_client(out: Path) -> ContractClient:
    """The contract of a devnet that has stopped: its anvil restarted on the saved chain."""
    from derelayl.evm.cli import contract_target

    node, address = contract_target(out, None, None, None)
    return ContractClient(node, address)


@needs_anvil
def test_devnet_equals_the_in_process_run_and_verifies(tmp_path: Path) -> None:
    # Execute: 8 node processes, 4 rounds; the same network in one process
    output = _wait(_devnet(tmp_path / "dev", 8, 4, 8710), timeout=300)
    local = runner.invoke(
        app,
        ["run", "--task", "digits", "--participants", "8", "--rounds", "4", "--out", str(tmp_path / "run"), "--quiet"],
    )
    checked = runner.invoke(app, ["verify", str(tmp_path / "dev")])
    # Assert: same models selected (same accuracy curve), same coins, a valid history
    devnet = json.loads((tmp_path / "dev" / "summary.json").read_text())
    run = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert local.exit_code == 0, local.output
    assert devnet["rounds"] == 4, output
    assert devnet["accuracy_per_round"] == run["accuracy_per_round"]
    assert devnet["balances"] == run["balances"]
    assert devnet["takeovers"] == [] and devnet["restarts"] == {}
    assert checked.exit_code == 0 and "valid: 16 blocks, round 4" in checked.output, checked.output
    assert (tmp_path / "dev" / "devnet.png").stat().st_size > 0
    for i in range(8):
        assert (tmp_path / "dev" / "nodes" / str(i) / "node.log").exists()


@needs_anvil
@pytest.mark.parametrize(
    "options",
    [
        [
            *("--testers", "3", "--pooled-cases", "--min-improvement", "1", "--copy-rule", "--improvement-z", "50"),
            "--case-commitments",
        ],
        ["--fhe", "on", "--min-improvement", "1"],
    ],
    ids=["pooled-cases-copy-rule-sign-test-case-commitments", "encrypted-scoring"],
)
def test_the_defences_run_on_the_network_as_in_process(tmp_path: Path, options: list[str]) -> None:
    """Improvement rule (in both): testers fetch the live models (the parents) too, entitled
    by the chain; with the copy rule and the sign test they compare predictions. Pooled cases:
    each tester fetches the others' cases from their nodes after the commit block (with case
    commitments, each committed in the deposit block and checked against it), and honest
    testers agree (all are paid, as in one process). Encrypted scoring: testers fetch
    ciphertexts and keys from the trainers' nodes and ask them to decrypt (the parents'
    trainers too); the next trainer gets the model file through its commitment. Same results,
    though not the same chain: encryption is randomised. The nodes also post their commitments
    straight to the contract, and ``derelayl audit`` re-runs every report from the nodes' stores
    and published cases (encrypted ones it leaves unchecked)."""
    port = 8820 if "--fhe" in options else 8760  # each case its own ports
    output = _wait(_devnet(tmp_path / "dev", 6, 3, port, *options, "--post-commitments"), timeout=300)
    local = runner.invoke(
        app, ["run", "--participants", "6", "--rounds", "3", *options, "--out", str(tmp_path / "run"), "--quiet"]
    )
    devnet = json.loads((tmp_path / "dev" / "summary.json").read_text())
    run = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert local.exit_code == 0, local.output
    assert devnet["rounds"] == 3 and devnet["verified"]["round"] == 3 and devnet["takeovers"] == [], output
    assert devnet["accuracy_per_round"] == run["accuracy_per_round"] and devnet["balances"] == run["balances"]
    for folder in (tmp_path / "dev", tmp_path / "run"):
        audit = audit_run(folder)
        assert audit.reports > 0 and not audit.lies
        if "--fhe" in options:
            assert audit.checked == 0 and all("encrypted" in f.detail for f in audit.findings)
        else:
            assert audit.checked == audit.reports


@needs_anvil
def test_lying_nodes_are_appealed_on_the_network_and_named_by_the_audit(tmp_path: Path) -> None:
    """Three of ten nodes lie whenever they test (``--adversaries``); with pooled cases a lie is
    a disagreement, and the appellants, fetching the models and the testers' cases from their
    nodes, decide the round in its settle block; a liar off their median forfeits its stake."""
    from derelayl.node.devnet import DevnetConfig

    options = ["--testers", "3", "--pooled-cases", "--min-improvement", "1", "--appeal-testers", "2"]
    options += ["--adversaries", "lying_tester=0.3", "--tester-stake", "0.01"]  # testers drawn from stake holders
    output = _wait(_devnet(tmp_path / "dev", 10, 4, 8740, *options), timeout=300)
    liars = {i for i, k in enumerate(DevnetConfig(nodes=10, adversaries="lying_tester=0.3").kinds()) if k != "honest"}
    summary = json.loads((tmp_path / "dev" / "summary.json").read_text())
    assert summary["rounds"] == 4 and summary["verified"]["round"] == 4, output
    audit = audit_run(tmp_path / "dev")  # (anvil restarted on the devnet's saved chain)
    # Assert: liars, and only liars, named; beyond the 3 reports per test block, the appellants'
    # reports of the disputed rounds were re-run too, and all of theirs were honest
    assert audit.lies and {f.tester for f in audit.lies} <= liars, output
    assert audit.reports > 3 * 4 and audit.checked == audit.reports


@needs_anvil
def test_an_inflated_child_is_rechecked_under_encryption_and_challenged_on_the_network(tmp_path: Path) -> None:
    """Encrypted scoring, one tester per round; half the nodes inflate their group's children
    when they test, which leaves every honest trainer's own models scored right. With
    ``--rechecks`` a trainer's node also fetches the manifests of the children ranked above its
    own and asks their trainers' nodes to decrypt its queries, finds the inflated score and
    challenges; the appellants score under encryption too. (Rounds 6 and 7 are the first in
    which a liar tests while an honest trainer holds the bond.)"""
    from derelayl.node.devnet import DevnetConfig

    options = ["--fhe", "on", "--testers", "1", "--pooled-cases", "--min-improvement", "1", "--appeal-testers", "3"]
    options += ["--challenge-bond", "0.001", "--challenge-window", "20"]  # 10 s: re-checks take seconds under load
    options += ["--adversaries", "inflating_liar=0.5", "--rechecks", "9"]
    output = _wait(_devnet(tmp_path / "dev", 10, 8, 9000, *options), timeout=600)
    liars = {i for i, k in enumerate(DevnetConfig(nodes=10, adversaries="inflating_liar=0.5").kinds()) if k != "honest"}
    summary = json.loads((tmp_path / "dev" / "summary.json").read_text())
    assert summary["rounds"] == 8 and summary["verified"]["round"] == 8, output
    assert [c["round"] for c in summary["challenges"]] == [6, 7], output
    assert all(c["challenger"] not in liars for c in summary["challenges"])


@needs_anvil
def test_a_lie_every_tester_tells_is_challenged_on_the_network(tmp_path: Path) -> None:
    """One tester per round (every seat); half the nodes lie when they test. In round 4 a liar
    tests and zeroes every other model: a trainer's node, re-scoring its child and parent on
    the published cases, sees its scores wrong and challenges straight on the contract; the
    appellants drawn at the challenge fetch the models and cases and decide the round."""
    from derelayl.node.devnet import DevnetConfig

    options = ["--testers", "1", "--pooled-cases", "--min-improvement", "1", "--appeal-testers", "3"]
    options += ["--challenge-bond", "0.001", "--adversaries", "lying_tester=0.5"]
    output = _wait(_devnet(tmp_path / "dev", 10, 6, 8900, *options), timeout=300)
    liars = {i for i, k in enumerate(DevnetConfig(nodes=10, adversaries="lying_tester=0.5").kinds()) if k != "honest"}
    summary = json.loads((tmp_path / "dev" / "summary.json").read_text())
    assert summary["rounds"] == 6 and summary["verified"]["round"] == 6, output
    assert "rounds challenged: 4" in " ".join(output.split()), output
    assert [c["round"] for c in summary["challenges"]] == [4]
    assert summary["challenges"][0]["challenger"] not in liars
    audit = audit_run(tmp_path / "dev")
    # the liar of round 4 is named; beyond one report per test block, the appellants' reports
    # of the challenged round were re-run too
    assert audit.lies and {f.tester for f in audit.lies} <= liars, output
    assert 4 in {f.round for f in audit.lies}
    assert audit.reports == 6 + 3 and audit.checked == audit.reports
    # the explorer's index names the challenger of round 4 and no other
    from derelayl.evm.cli import contract_target
    from derelayl.explorer.index import ChainIndex

    target = contract_target(tmp_path / "dev", None, None, None)
    assert target is not None
    node, address = target
    try:
        index = ChainIndex(None, client=ContractClient(node, address))
        index.follow()
    finally:
        node.close()
    challengers = {r["round"]: r["challenger"] for r in index.rounds if r["challenger"] >= 0}
    assert challengers == {4: summary["challenges"][0]["challenger"]}


def _holder(state, role: str) -> int | None:
    """A participant holding ``role`` in the state's current round and phase."""
    roles = state.roles
    if role == "model owner":
        return int(roles.model_owners[0])
    if role == "trainer" and state.phase == Phase.COMMIT and len(state.pairs):
        return int(state.pairs.trainer[0])
    if role == "tester" and state.phase == Phase.TEST:
        return int(roles.testers[0])
    if role == "miner":
        return int(roles.block_miners[int(state.phase)])
    return None


@needs_anvil
def test_nodes_killed_at_random_moments_are_restarted_and_nothing_is_lost(tmp_path: Path) -> None:
    # Prepare: a devnet of 8 nodes for 10 rounds, and a way to read its chain
    out = tmp_path / "dev"
    devnet = _devnet(out, 8, 10, 8730)
    while not (out / "devnet.json").exists():
        assert devnet.poll() is None, devnet.stdout.read().decode() if devnet.stdout else ""
        time.sleep(0.2)
    client = _client(out)
    rng = random.Random(7)
    killed: list[tuple[str, int, int, str]] = []
    # Execute: kill -9 a model owner, a trainer, the tester and a miner, one at a time
    for role in ("model owner", "trainer", "tester", "miner"):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            client.sync()
            state = client.state
            who = _holder(state, role) if 1 <= state.round <= 6 else None
            if who is not None and who not in {k[1] for k in killed} and rng.random() < 0.5:
                pid = int((out / "nodes" / str(who) / "pid").read_text())
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                killed.append((role, who, state.round, state.phase.name.lower()))
                time.sleep(rng.uniform(0.0, 1.0))
                break
            time.sleep(0.05)
    output = _wait(devnet, timeout=600)
    checked = runner.invoke(app, ["verify", str(out)])
    # Assert: four kills, four restarts, every round settled, the history valid
    summary = json.loads((out / "summary.json").read_text())
    assert len(killed) == 4, killed
    assert sum(summary["restarts"].values()) == 4, (killed, summary["restarts"], output[-2000:])
    assert summary["rounds"] == 10
    assert checked.exit_code == 0 and "round 10" in checked.output, checked.output
    # nothing lost: every committed model is in its trainer's store, money adds up (verify)
    client = _stopped_client(out)
    client.sync()
    for event in client.history.events:
        block = event.operation
        if type(block).__name__ == "CommitBlock":
            for trainer, digest in zip(block.trainers.tolist(), block.commitments, strict=True):
                assert (out / "nodes" / str(trainer) / "models" / f"{digest.hex()}.safetensors").exists()


@needs_anvil
def test_newcomers_on_other_addresses_register_and_take_part(tmp_path: Path) -> None:
    # Prepare: a devnet of 8 nodes; two more nodes with keys of their own on 127.0.0.2/.3
    out = tmp_path / "dev"
    devnet = _devnet(out, 8, 8, 8750)
    while not (out / "devnet.json").exists():
        assert devnet.poll() is None
        time.sleep(0.2)
    record = json.loads((out / "devnet.json").read_text())
    urls = ",".join(node["url"] for node in record["nodes"])
    chain = connect(record["rpc"], funder=EvmKey(ANVIL_DEV_KEY))
    newcomers = []
    for j, host in enumerate(("127.0.0.2", "127.0.0.3")):
        home = tmp_path / f"newcomer{j}"
        key = new_key(home / "key.json")
        chain.fund([key.address])
        args = [*CLI, "node", "--key", str(home / "key.json"), "--rpc", record["rpc"], "--contract", record["contract"]]
        args += ["--data", f"digits:{j}/8", "--home", str(home), "--host", host, "--port", "8799", "--peers", urls]
        args += ["--rounds", "8"]
        log = (home / "node.log").open("wb")
        newcomers.append((key, subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)))
    # Execute
    _wait(devnet, timeout=600)
    for _, process in newcomers:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    # Assert: both registered; their bids made it into deposit blocks
    client = _stopped_client(out)
    client.sync()
    state = client.state
    indices = [state.key_index.get(key_of_address(k.address)) for k, _ in newcomers]
    assert None not in indices and min(indices) >= 8, indices  # type: ignore[type-var]
    bidders = set()
    for event in client.history.events:
        if isinstance(event.operation, DepositBlock):
            bidders |= set(event.operation.trainer_bids.participant.tolist())
    assert set(indices) & bidders, (indices, sorted(bidders))
    chain.close()
    client.close()


def test_a_devnet_on_the_embedded_chain_verifies_itself_and_refuses_to_resume(tmp_path: Path) -> None:
    """--chain embedded (what `auto` picks without anvil): the nodes reach py-evm over
    JSON-RPC; the devnet replays the contract against its storage before the chain stops.
    The chain lived in memory, so resuming or verifying the folder later is refused, plainly."""
    out = tmp_path / "dev"
    output = _wait(_devnet(out, 4, 2, 8790, "--chain", "embedded", "--local-epochs", "0"), timeout=300)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "embedded-rpc" and summary["rounds"] == 2, output
    assert summary["verified"]["round"] == 2 and summary["verified"]["blocks"] == 8
    again = runner.invoke(app, ["devnet", "--nodes", "4", "--rounds", "3", "--out", str(out), "--chain", "embedded"])
    assert again.exit_code != 0 and "ran on the embedded EVM" in again.output, again.output
    checked = runner.invoke(app, ["verify", str(out)])
    assert checked.exit_code != 0 and "embedded EVM" in checked.output, checked.output


@needs_anvil
def test_a_devnet_relay_trains_a_plugin_task_as_run_does(tmp_path: Path) -> None:
    """Your own data and model on the network: every node builds its shard and the genesis
    from the same config (`--task FILE.toml`, `--data FILE.toml:I/N`), as `run --task` does."""
    plugin = tmp_path / "plug.py"
    plugin.write_text(
        "import numpy as np\nfrom torch import nn\n\n"
        "def load(n=240):\n    rng = np.random.default_rng(1)\n    y = np.arange(n) % 3\n"
        "    return rng.normal(0, 1, (n, 5)).astype(np.float32) + 2.0 * y[:, None], y\n\n"
        "def net(n_features, n_classes):\n"
        "    return nn.Sequential(nn.Linear(n_features, 8), nn.Tanh(), nn.Linear(8, n_classes))\n"
    )
    config = tmp_path / "task.toml"
    config.write_text(
        'name = "plugged"\n[data]\ndataset = "plug.py:load"\npreprocess = "none"\n'
        '[model]\nfactory = "plug.py:net"\n[methods.fedavg]\nrounds = 1\n'
    )
    output = _wait(_devnet(tmp_path / "dev", 4, 2, 8780, "--task", str(config)), timeout=300)
    local = runner.invoke(
        app,
        [
            "run",
            "--task",
            str(config),
            "--participants",
            "4",
            "--rounds",
            "2",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ],
    )
    devnet = json.loads((tmp_path / "dev" / "summary.json").read_text())
    run = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert local.exit_code == 0, local.output
    assert devnet["rounds"] == 2 and devnet["takeovers"] == [], output
    assert devnet["accuracy_per_round"] == run["accuracy_per_round"] and devnet["balances"] == run["balances"]
