"""``derelayl devnet``: a network of node processes on one machine.

Starts the chain (anvil, from ``scripts/setup``, or without it the embedded py-evm served over
JSON-RPC, ``evm/rpc_server.py``: both mine every transaction, and the devnet
adds an empty block every ``block_time`` seconds once every node is up, so phase deadlines
measure silence, not start-up), gives each
node a fresh key and a Dirichlet shard, deploys the contract with the nodes as founding
participants, starts one ``derelayl node`` process per participant on loopback, and follows
the chain itself: progress per round (the accuracy of the protocol's first-ranked model,
read from its trainer's store for measurement only), then ``summary.json``, per-node logs
and a figure. Ctrl-C (or the last round) stops every process it started. Rerun on the same
folder to resume: anvil's chain is kept in ``OUT/anvil-state.json`` and every node's key and
store in ``OUT/nodes/<i>/`` (the embedded chain lives in memory: it cannot be resumed).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from derelayl.errors import ConfigError
from derelayl.evm.client import ContractClient
from derelayl.evm.node import ANVIL_DEV_KEY, Node, anvil, anvil_path, die_with_parent, embedded_rpc
from derelayl.evm.signing import EvmKey
from derelayl.evm.tools import verify_contract
from derelayl.folders import FolderLock, write_atomic
from derelayl.node.devnet_config import DevnetConfig
from derelayl.node.keys import load_key, new_key
from derelayl.node.runner import genesis_digest
from derelayl.protocol.blocks import Challenge, SettleBlock
from derelayl.protocol.state import State
from derelayl.protocol.types import UNIT, format_units

__all__ = ["DevnetConfig", "run_devnet"]

log = logging.getLogger(__name__)
RECORD = "devnet.json"


class Devnet:
    def __init__(self, config: DevnetConfig, out: Path, say: Callable[[str], None]) -> None:
        self.say = say
        self.config = config
        self.kinds = config.kinds()
        """Each node's behaviour (``--adversaries``), drawn once."""
        self.out = out
        self.processes: list[subprocess.Popen[bytes] | None] = []
        self.chain: Node | None = None
        self.record: dict[str, Any] = {}
        self.stopping = threading.Event()
        self.restarts: dict[int, int] = {}

    # ------------------------------------------------------------ start

    def start(self) -> ContractClient:
        c = self.config
        record_path = self.out / RECORD
        previous = json.loads(record_path.read_text()) if record_path.exists() else None
        if previous is not None and previous.get("config", {}).get("nodes") != c.nodes:
            raise ConfigError(f"{self.out} holds a devnet of {previous['config']['nodes']} nodes; use another --out")
        self.say("starting the chain")
        self.chain = self._chain(previous)
        keys = [self._key(i) for i in range(c.nodes)]
        if previous is None:
            self.chain.fund([k.address for k in keys])
            params = c.params()
            genesis = genesis_digest(c.data_spec())
            client = ContractClient.deploy(
                self.chain,
                params,
                _beacon(c.seed),
                [k.public for k in keys],
                EvmKey(ANVIL_DEV_KEY),
                mix_randomness=c.chain_randomness,
                genesis_model=genesis,
            )
            self.record = {
                "config": asdict(c),
                "backend": self.chain.kind,
                "rpc": self.chain.url,
                "chain_id": self.chain.chain_id,
                "contract": client.address,
                "genesis_block": client.history.genesis_block,
                "nodes": [{"address": k.address, "url": self._url(i)} for i, k in enumerate(keys)],
            }
            write_atomic(record_path, json.dumps(self.record, indent=2) + "\n")
        else:
            self.record = {**previous, "rpc": self.chain.url}
            client = ContractClient(self.chain, previous["contract"], since=previous.get("genesis_block", 0))
        urls = ",".join(self._url(i) for i in range(c.nodes))
        self.say(f"starting {c.nodes} nodes")
        for i in range(c.nodes):
            self.processes.append(self.start_node(i, urls))
        self.wait_ready()
        threading.Thread(target=self.tick, name="chain-clock", daemon=True).start()
        return client

    def _chain(self, previous: dict[str, Any] | None) -> Node:
        backend = self.config.chain
        if backend == "auto":
            backend = "anvil" if anvil_path() is not None else "embedded"
        before = None if previous is None else ("embedded" if previous.get("backend") == "embedded-rpc" else "anvil")
        if before == "embedded":
            raise ConfigError(
                f"{self.out} ran on the embedded EVM, whose chain ended when that devnet stopped; use another --out"
            )
        if before == "anvil" and backend != "anvil":
            raise ConfigError(f"{self.out} holds an anvil chain; resuming it needs anvil (--chain anvil)")
        if backend == "embedded":
            log.info("chain: the embedded EVM over JSON-RPC (in memory: this devnet cannot be resumed)")
            return embedded_rpc()
        if anvil_path() is None:
            raise ConfigError(
                "--chain anvil needs anvil: run scripts/setup where npm is available (it installs @foundry-rs/anvil)"
            )
        return anvil(state=self.out / "anvil-state.json")

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until every node answers ``/status`` (torch, the data split and the chain replay
        take a while per process on a small machine)."""
        import httpx

        pending = set(range(self.config.nodes))
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while pending:
                _check_alive(self)
                for i in sorted(pending):
                    try:
                        if client.get(f"{self._url(i)}/status").status_code == 200:
                            pending.discard(i)
                    except httpx.HTTPError:
                        pass
                self.say(f"nodes ready {self.config.nodes - len(pending)}/{self.config.nodes}")
                if pending and time.monotonic() > deadline:
                    raise ConfigError(
                        f"nodes {sorted(pending)} did not answer within {timeout:.0f} s (see their node.log)"
                    )
                time.sleep(0.2)

    def tick(self) -> None:
        """The chain's clock: an empty block every ``block_time`` seconds (besides one per
        transaction), started once every node is up, so phase deadlines measure silence and
        not start-up."""
        assert self.chain is not None
        w3 = self.chain.w3
        while not self.stopping.wait(self.config.block_time):
            try:
                w3.provider.make_request("evm_mine", [])
            except Exception as exc:  # the chain is going away with the devnet
                log.debug("tick: %s", exc)
                return

    def _key(self, i: int) -> EvmKey:
        path = self.out / "nodes" / str(i) / "key.json"
        return load_key(path) if path.exists() else new_key(path)

    def _url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.config.base_port + i}"

    def node_args(self, i: int, urls: str) -> list[str]:
        c = self.config
        home = self.out / "nodes" / str(i)
        return [
            sys.executable,
            "-m",
            "derelayl.cli",
            "node",
            "--key",
            str(home / "key.json"),
            "--rpc",
            self.record["rpc"],
            "--contract",
            self.record["contract"],
            "--data",
            f"{c.data_spec().task}:{i}/{c.nodes}",
            "--home",
            str(home),
            "--port",
            str(c.base_port + i),
            "--peers",
            urls,
            "--seed",
            str(c.seed),
            "--split-seed",
            str(c.seed),
            "--rounds",
            str(c.rounds),
            "--local-epochs",
            str(c.local_epochs),
            "--fhe",
            "on" if c.fhe else "off",
            *(["--post-commitments"] if c.post_commitments else []),
            *(["--rechecks", str(c.rechecks)] if c.rechecks else []),
            *self._behaviour(i),
        ]

    def _behaviour(self, i: int) -> list[str]:
        kinds = self.kinds
        if kinds[i] == "honest":
            return []
        group = ",".join(str(p) for p, k in enumerate(kinds) if k == kinds[i])
        return ["--behave", kinds[i], "--group", group]

    def start_node(self, i: int, urls: str) -> subprocess.Popen[bytes]:
        home = self.out / "nodes" / str(i)
        home.mkdir(parents=True, exist_ok=True)
        logfile = (home / "node.log").open("ab")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            self.node_args(i, urls),
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            preexec_fn=die_with_parent,  # a devnet killed with -9 does not leave its nodes running
        )
        (home / "pid").write_text(f"{process.pid}\n")
        return process

    def supervise(self) -> None:
        """Restart a node whose process died (a crash, or kill -9): it catches up from the chain
        and its own store. A node that keeps dying stops the devnet."""
        urls = ",".join(self._url(i) for i in range(self.config.nodes))
        for i, process in enumerate(self.processes):
            if process is None or process.poll() in (None, 0):  # running, or done with its rounds
                continue
            self.restarts[i] = self.restarts.get(i, 0) + 1
            if self.restarts[i] > 10:
                _check_alive(self)
            log.warning("node %d exited (%s); restarting", i, process.returncode)
            self.processes[i] = self.start_node(i, urls)

    # ------------------------------------------------------------ stop

    def stop(self) -> None:
        self.stopping.set()
        for process in self.processes:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes:
            if process is None:
                continue
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self.chain is not None:
            self.chain.close()


def _beacon(seed: int) -> bytes:
    from derelayl.runtime.local import run_seed

    return run_seed(seed)


def _top_accuracy(out: Path, state: State, models: Any, setup: Any, evaluator: Any) -> tuple[int, float]:
    """The global test accuracy of the protocol's first-ranked model, read from the store of
    the node that trained it (measurement only: no node ever sees the global test set)."""
    from derelayl.errors import ModelError
    from derelayl.fhe.scoring import read_manifest
    from derelayl.learning.serialization import weights_from_bytes

    best = int(state.live.model_id[0])
    digest = models.index.get(best)
    if digest is None:
        return best, float("nan")
    if models.store.has(digest):
        return best, setup.test_accuracy(evaluator, models.load(digest))
    folder = out / "nodes" / str(int(state.live.owner[0])) / "models"
    try:
        data = (folder / f"{digest.hex()}.safetensors").read_bytes()
        manifest = read_manifest(data)  # encrypted scoring: the commitment names the model file
        if manifest is not None:
            data = (folder / f"{manifest['model']}.safetensors").read_bytes()
        weights, _ = weights_from_bytes(data)
    except (OSError, ModelError):
        return best, float("nan")
    return best, setup.test_accuracy(evaluator, weights)


def run_devnet(
    config: DevnetConfig,
    out: Path,
    on_round: Callable[[State, str], None] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a devnet to ``config.rounds``; ``on_round`` gets each settled round and
    a line about it, ``on_status`` a few words on what is happening (start-up, then the phase).
    The folder is locked while the devnet runs."""
    config.validate()
    with FolderLock(out, "derelayl devnet"):
        return _run_locked(config, out, on_round, on_status)


def _run_locked(
    config: DevnetConfig,
    out: Path,
    on_round: Callable[[State, str], None] | None,
    on_status: Callable[[str], None] | None,
) -> dict[str, Any]:
    from derelayl.agents.books import ModelBook
    from derelayl.learning.store import MemoryModelStore
    from derelayl.runtime.records import RoundLog

    started = time.perf_counter()
    devnet = Devnet(config, out, on_status or (lambda _: None))
    setup, meta = config.data_spec().learning()
    evaluator = setup.evaluator()
    models = ModelBook.of_genesis(MemoryModelStore(), setup.init, meta)
    log_path = out / "rounds.jsonl"
    records = RoundLog(log_path)
    round_started: dict[int, float] = {}
    round_seconds: dict[int, float] = {}

    def settled(state: State) -> None:
        """After a settlement (and at genesis): one record of the round."""
        measured = _top_accuracy(out, state, models, setup, evaluator)
        rec = records.record(state, lambda: {"best_model": measured[0], "best_test_accuracy": measured[1]})
        now = time.perf_counter()
        if state.round > 0:
            round_seconds[state.round] = now - round_started.get(state.round - 1, started)
        if on_round is not None and state.round > 0:
            on_round(state, _line(state, rec, round_seconds[state.round]))
        round_started[state.round] = now

    drawn: dict[str, Any] = {"next": None, "takeovers": [], "challenges": []}
    phase_seconds: dict[str, list[float]] = {}
    last_block = [time.perf_counter()]

    def on_event(event: Any, _tx: bytes, state: State) -> None:
        models.follow(state)
        op = event.operation
        if hasattr(op, "miner"):  # a block (not a join or transfer)
            now = time.perf_counter()  # seconds since the previous block, seen from here
            phase_seconds.setdefault(op.kind.name.lower(), []).append(round(now - last_block[0], 3))
            last_block[0] = now
            if drawn["next"] is not None and op.miner != drawn["next"]:
                drawn["takeovers"].append({"round": op.round, "kind": op.kind.name.lower(), "miner": op.miner})
        if isinstance(op, Challenge):  # a trainer found its models' published scores wrong
            drawn["challenges"].append({"round": op.round, "challenger": op.challenger})
        drawn["next"] = state.roles.block_miners[int(state.phase)] if state.roles is not None else None
        if isinstance(op, SettleBlock) and state.round <= config.rounds:
            settled(state)
        if on_status is not None:
            on_status(f"phase {state.phase.name.lower():<8}")

    try:
        client = devnet.start()
        client.history.on_event = on_event
        if not client.history.events:  # genesis, recorded before the nodes' first round can settle
            settled(client.state)
        client.sync()
        if client.state.roles is not None:
            drawn["next"] = client.state.roles.block_miners[int(client.state.phase)]
        while True:
            client.sync()
            state = client.state
            if state.round >= config.rounds:
                break
            devnet.supervise()
            time.sleep(0.2)
        figure = records.figure(state, out / "devnet.png", "best_test_accuracy", "global test accuracy")
        verified = verify_contract(client)  # the replay against the contract's storage, before the chain stops
    finally:
        devnet.stop()
    history = records.history(state.round)
    summary = {
        "config": asdict(config),
        "contract": devnet.record.get("contract"),
        "chain_id": devnet.record.get("chain_id"),
        "backend": devnet.record.get("backend"),
        "verified": verified,
        "rounds": state.round,
        "wall_seconds": round(time.perf_counter() - started, 3),
        "accuracy_per_round": [r["best_test_accuracy"] for r in history],
        "money": {"minted": format_units(state.minted), "burned": format_units(state.burned)},
        "balances": [format_units(int(b)) for b in state.balances],
        "balance_quantiles_coins": dict(
            zip(
                ("min", "p50", "max"),
                (float(q) for q in np.percentile(state.balances / UNIT, [0, 50, 100])),
                strict=True,
            )
        ),
        "figures": [figure],
        "round_seconds": {str(r): round(t, 3) for r, t in sorted(round_seconds.items())},
        "phase_seconds": phase_seconds,
        "takeovers": drawn["takeovers"],
        "challenges": drawn["challenges"],
        "restarts": devnet.restarts,
        "nodes": devnet.record.get("nodes"),
    }
    write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _line(state: State, rec: dict[str, Any], seconds: float) -> str:
    coins = np.percentile(state.balances / UNIT, [50, 100])
    return (
        f"acc {rec['best_test_accuracy']:.3f} (model #{rec['best_model']})  v{state.latest_version} held by "
        f"{rec['holding_latest']:.0%}  supply {format_units(state.supply)}  balance median {coins[0]:.2f} "
        f"max {coins[1]:.2f}  {seconds:.1f} s"
    )


def _check_alive(devnet: Devnet) -> None:
    for i, process in enumerate(devnet.processes):
        if process is not None and process.poll() is not None:
            tail = (devnet.out / "nodes" / str(i) / "node.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise ConfigError(f"node {i} exited ({process.returncode}): {' | '.join(tail)}")
