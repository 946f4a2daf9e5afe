"""The contract backend (issue 7). Prints figures and ratios; asserts nothing.

1. tx/s: ERC-20 transfers through the contract on each backend, against plain ether
   transfers on the same node in the same run.
2. Reference size (256 participants, the reference preset; ~40 models selected per round in
   steady state): gas per phase and per round, rounds/s on each backend, against the same
   network on the signed SQLite chain in the same run.
3. Gas vs lineage depth: one small network run to round 1000; gas per phase around depth 10
   and around depth 1000, with the models per round of each window.
4. Challenges: the reference size with three pooled testers, three appellants and challenges
   on; in the steady state every other round is challenged. Gas per phase of the challenged
   and the unchallenged rounds, and of ``challenge()``, against the reference rounds of part 2.

Run: python benchmarks/bench_contract.py [--participants 256] [--rounds 30] [--depth 1000]
     [--backends embedded,anvil] [--only tx|reference|depth|challenge]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from derelayl.agents import Agent, LatentBrain
from derelayl.evm.client import ContractClient
from derelayl.evm.node import Node, anvil, anvil_path, embedded
from derelayl.evm.signing import derive_evm_keys
from derelayl.learning.latent import LatentTrainer
from derelayl.ledger import Chain, SQLiteLedger, derive_keys
from derelayl.ledger.client import LocalChainClient
from derelayl.protocol import Params, Phase, Transfer, preset
from derelayl.protocol.blocks import Challenge
from derelayl.protocol.state import State
from derelayl.runtime.driver import RoundDriver

PHASES = ("deposit", "commit", "test", "settle")
SEED = b"\x2a" * 32
BOND = 10_000
"""Units (0.01 coin): a tenth of a round's test-case reward, so many participants hold it after
a few rounds."""
WINDOW = 2


def _node(kind: str) -> Node:
    return embedded() if kind == "embedded" else anvil()


def _network(kind: str, params: Params, n: int) -> tuple[Node, ContractClient, RoundDriver]:
    node = _node(kind)
    keys = derive_evm_keys(42, n)
    node.fund([k.address for k in keys])
    client = ContractClient.deploy(node, params, SEED, [k.public for k in keys], keys[0], mix_randomness=False)
    agents = [Agent(client.signer(k), LatentBrain(LatentTrainer(seed=42))) for k in keys]
    return node, client, RoundDriver(client, agents)


def _play(
    client: ContractClient,
    driver: RoundDriver,
    rounds: int,
    record: dict[int, Any],
    challenge: Callable[[State], int | None] | None = None,
) -> float:
    """Run until ``rounds`` have settled; record gas per phase of each round (and of a
    challenge, if ``challenge`` sends one before a settle phase and returns its gas); seconds
    taken."""
    t0 = time.perf_counter()
    while client.state.round < rounds:
        r, phase = client.state.round, int(client.state.phase)
        models = len(client.state.commits)
        entry = record.setdefault(r, {"gas": [0, 0, 0, 0], "models": 0, "selected": 0, "challenge": None})
        if challenge is not None and phase == Phase.SETTLE:
            entry["challenge"] = challenge(client.state)
        driver.step()
        entry["gas"][phase] = int(client.last_tx["gasUsed"])
        if phase == 3:
            entry["models"] = models
            entry["selected"] = len(client.state.live)
    return time.perf_counter() - t0


def bench_tx_rate(kinds: list[str], count: int = 100) -> None:
    print(f"1. transactions per second ({count} each, one per block)")
    for kind in kinds:
        node, client, _ = _network(kind, preset("minimal"), 4)
        a, b = [client.signer(k) for k in derive_evm_keys(42, 2)]
        for _ in range(20):  # warm-up: first calls pay for imports and caches
            node.send(a.key, b.address, value=1, gas=21_000)
            client.send(Transfer(0, 1, 0), a)
        t0 = time.perf_counter()
        for _ in range(count):
            node.send(a.key, b.address, value=1, gas=21_000)
        ether = count / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(count):
            client.send(Transfer(0, 1, 0), a)
        token = count / (time.perf_counter() - t0)
        print(
            f"   {kind:9s} ether transfers {ether:6.1f} tx/s   contract transfers {token:6.1f} tx/s   "
            f"ratio {token / ether:.2f}"
        )
        node.close()


def bench_reference(kinds: list[str], n: int, rounds: int) -> None:
    params = preset("reference")
    print(f"2. reference preset, {n} participants, {rounds} rounds (steady state: last 10 rounds)")
    keys = derive_keys(42, n)
    with tempfile.TemporaryDirectory() as tmp:
        chain = Chain.create(SQLiteLedger(Path(tmp) / "chain.sqlite"), params, SEED, [k.public for k in keys], keys[0])
        local = LocalChainClient(chain)
        agents = [Agent(local.signer(k), LatentBrain(LatentTrainer(seed=42))) for k in keys]
        t0 = time.perf_counter()
        RoundDriver(local, agents).run(rounds)
        sqlite_rate = rounds / (time.perf_counter() - t0)
        local.close()
    print(f"   signed SQLite chain (baseline): {sqlite_rate:.2f} rounds/s")
    for kind in kinds:
        node, client, driver = _network(kind, params, n)
        record: dict[int, Any] = {}
        seconds = _play(client, driver, rounds, record)
        steady = [record[r] for r in range(rounds - 10, rounds)]
        per_phase = [int(statistics.median(e["gas"][p] for e in steady)) for p in range(4)]
        settle_max = max(e["gas"][3] for e in record.values())
        print(
            f"   {kind:9s} {rounds / seconds:.2f} rounds/s ({rounds / seconds / sqlite_rate:.2f}x the SQLite chain); "
            f"models/round {statistics.median(e['models'] for e in steady):.0f}, "
            f"selected {statistics.median(e['selected'] for e in steady):.0f}"
        )
        print(
            "             median gas: "
            + ", ".join(f"{p} {g:,}" for p, g in zip(PHASES, per_phase, strict=True))
            + f"; round {sum(per_phase):,}; largest settle {settle_max:,} (block limit 30,000,000)"
        )
        node.close()


def bench_depth(kind: str, depth: int, n: int = 16) -> None:
    params = Params(test_cases=100, k=4)
    print(f"3. gas vs lineage depth ({kind}, {n} participants, reference rules, run to round {depth})")
    node, client, driver = _network(kind, params, n)
    record: dict[int, Any] = {}
    t0 = time.perf_counter()
    _play(client, driver, depth, record)
    head = client.contract.functions.head().call()
    print(
        f"   ran {depth} rounds in {time.perf_counter() - t0:.0f} s; kept levels at the end "
        f"{head[11] - head[12]}, lineage depth {head[11] - 1}"
    )
    windows = {"depth ~10": range(10, 20), f"depth ~{depth}": range(depth - 10, depth)}
    medians = {}
    for name, rounds in windows.items():
        entries = [record[r] for r in rounds]
        medians[name] = [statistics.median(e["gas"][p] for e in entries) for p in range(4)]
        models = statistics.median(e["models"] for e in entries)
        print(
            f"   {name:12s} models/round {models:.0f}: "
            + ", ".join(f"{p} {g:,.0f}" for p, g in zip(PHASES, medians[name], strict=True))
        )
    early, late = medians.values()
    print("   late/early: " + ", ".join(f"{p} {b / a:.3f}" for p, a, b in zip(PHASES, early, late, strict=True)))
    node.close()


def bench_challenges(kind: str, n: int, rounds: int) -> None:
    params = dataclasses.replace(
        preset("reference"),
        testers=3,
        pooled_cases=True,
        appeal_testers=3,
        challenge_bond=BOND,
        challenge_window=WINDOW,
    )
    print(
        f"4. challenges ({kind}, {n} participants, reference rules with 3 pooled testers, 3 appellants, "
        f"bond {BOND:,} units, window {WINDOW} blocks; {rounds} rounds, every other one of the last 10 challenged)"
    )
    node, client, driver = _network(kind, params, n)

    def challenge(state: State) -> int | None:
        # a wrong challenge (the testers told the truth): the appellants agree with them and
        # the bond is forfeited to them, the whole appeal path of the settlement
        if state.round < rounds - 10 or state.round % 2 or state.dispute is None or state.dispute.open:
            return None
        assert state.roles is not None
        testers = set(state.roles.testers.tolist())
        who = max((p for p in range(state.n_participants) if p not in testers), key=lambda p: state.balances[p])
        assert state.balances[who] >= BOND
        client.send(Challenge(state.round, who), driver.by_key[state.keys[who]].signer)
        return int(client.last_tx["gasUsed"])

    record: dict[int, Any] = {}
    _play(client, driver, rounds, record, challenge)
    steady = [record[r] for r in range(rounds - 10, rounds)]
    for name, entries in (
        ("unchallenged", [e for e in steady if e["challenge"] is None]),
        ("challenged", [e for e in steady if e["challenge"] is not None]),
    ):
        per_phase = [int(statistics.median(e["gas"][p] for e in entries)) for p in range(4)]
        extra = int(statistics.median(e["challenge"] for e in entries)) if name == "challenged" else 0
        models = statistics.median(e["models"] for e in entries)
        print(
            f"   {name:12s} ({len(entries)} rounds, models/round {models:.0f}) median gas: "
            + ", ".join(f"{p} {g:,}" for p, g in zip(PHASES, per_phase, strict=True))
            + (f", challenge {extra:,}" if extra else "")
            + f"; round {sum(per_phase) + extra:,}"
        )
    print(f"   largest settle {max(e['gas'][3] for e in record.values()):,} (block limit 30,000,000)")
    node.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--depth", type=int, default=1000)
    parser.add_argument("--backends", default="embedded,anvil")
    parser.add_argument("--only", choices=["tx", "reference", "depth", "challenge"], help="Run one part.")
    args = parser.parse_args()
    kinds = [k for k in args.backends.split(",") if k == "embedded" or anvil_path() is not None]
    if args.only in (None, "tx"):
        bench_tx_rate(kinds)
    if args.only in (None, "reference"):
        bench_reference(kinds, args.participants, args.rounds)
    if args.only in (None, "depth"):
        bench_depth("anvil" if "anvil" in kinds else "embedded", args.depth)
    if args.only in (None, "challenge"):
        bench_challenges("anvil" if "anvil" in kinds else "embedded", args.participants, args.rounds)


if __name__ == "__main__":
    main()
