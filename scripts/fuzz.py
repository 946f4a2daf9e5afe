"""The long fuzz run (issue 9): many mutated inputs, each accepted or refused with one of
derelayl's own errors. Prints the count per target and outcome; exits 1 if any input raised
anything else (with the first few such inputs' tracebacks).

Targets:
- ``blocks``: a small real chain (10 participants, 3 rounds, the paper's latent model) whose
  blocks are mutated and replayed with ``Chain.open``: raw byte flips (caught by the hashes),
  and *resealed* JSON mutations — the body or header changed, the hashes recomputed and
  signed again with the miner's key, so only the content checks stand between the mutation
  and the state (extreme and non-finite numbers, wrong types, missing and unknown keys,
  deep nesting, huge lists);
- ``genesis``: the same for block 0 (params, seed, keys);
- ``wire``: what a node's HTTP endpoints decode: signed messages (JSON), model requests
  (headers) and test-case blobs;
- ``config``: simulate configs (random TOML-like tables) through the simulator's resolver.

Run: python scripts/fuzz.py [--count 100000] [--seed 1] [--targets blocks,genesis,wire,config]
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

from derelayl.errors import DerelaylError
from derelayl.ledger.crypto import canonical, sha256

EXTREMES: list[Any] = [
    0,
    -1,
    1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**400,
    1.5,
    float("nan"),
    float("inf"),
    1e999,
    True,
    False,
    None,
    "",
    "x",
    "0x",
    "zz" * 32,
    "00" * 32,
    [],
    {},
    [1] * 1000,
    "a" * 100_000,
]


DEEP = "<deeply nested>"
"""Stands for a value nested 100,000 deep in encoded bytes (Python's own json cannot encode
it) and 200 deep in objects (``materialize``)."""


def materialize(value: Any) -> Any:
    """``value`` with every DEEP marker replaced by a list nested 200 deep."""
    if value == DEEP:
        nested: Any = 0
        for _ in range(200):
            nested = [nested]
        return nested
    if isinstance(value, dict):
        return {k: materialize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [materialize(v) for v in value]
    return value


def encode(value: Any) -> bytes:
    """Canonical JSON where possible (non-finite numbers as NaN/Infinity otherwise), DEEP
    markers expanded in the bytes."""
    try:
        data = canonical(value)
    except ValueError:
        data = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    return data.replace(json.dumps(DEEP).encode(), b"[" * 100_000 + b"0" + b"]" * 100_000)


LAST: list[str] = [""]
"""What the last mutation did (printed for accepted inputs with --show-accepted)."""


def mutate_json(value: Any, rng: random.Random) -> Any:
    """One random structural change somewhere inside ``value`` (a copy); ``LAST`` says what."""
    value = copy.deepcopy(value)
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k in node:
                paths.append((node, k))
                walk(node[k])
        elif isinstance(node, list):
            for i in range(min(len(node), 8)):
                paths.append((node, i))
                walk(node[i])

    walk(value)
    if not paths:
        LAST[0] = "replaced whole"
        return rng.choice(EXTREMES)
    parent, key = rng.choice(paths)
    action = rng.randrange(5)
    LAST[0] = f"{['set', 'delete', 'add key beside', 'nest', 'shift'][action]} {key!r}"
    if action == 0:
        parent[key] = rng.choice(EXTREMES)
    elif action == 1 and isinstance(parent, dict):
        del parent[key]
    elif action == 2 and isinstance(parent, dict):
        parent[f"unknown_{rng.randrange(100)}"] = rng.choice(EXTREMES)
    elif action == 3:
        parent[key] = DEEP
    elif isinstance(parent[key], int) and not isinstance(parent[key], bool):
        parent[key] = parent[key] + rng.choice([-1, 1, 2**32, -(2**32)])
    else:
        parent[key] = rng.choice(EXTREMES)
    return value


# ---------------------------------------------------------------- the chain


class ChainTarget:
    def __init__(self) -> None:
        from derelayl.agents import Agent, LatentBrain
        from derelayl.learning.latent import LatentTrainer
        from derelayl.ledger import Chain, derive_keys
        from derelayl.ledger.base import MemoryLedger
        from derelayl.ledger.client import LocalChainClient
        from derelayl.protocol import Params
        from derelayl.runtime.driver import RoundDriver

        self.keys = derive_keys("fuzz", 10)
        ledger = MemoryLedger()
        params = Params(k=2, test_cases=5, testers=2)
        chain = Chain.create(ledger, params, b"\x07" * 32, [k.public for k in self.keys], self.keys[0])
        client = LocalChainClient(chain)
        agents = [Agent(client.signer(k), LatentBrain(LatentTrainer(seed=1))) for k in self.keys]
        RoundDriver(client, agents).run(3)
        self.blocks = list(ledger.blocks())

    def replay(self, blocks: list[Any]) -> None:
        from derelayl.ledger import Chain
        from derelayl.ledger.base import MemoryLedger

        ledger = MemoryLedger()
        for b in blocks:
            ledger.append(b)
        Chain.open(ledger)

    def reseal(self, stored: Any, header: Any, body: Any) -> Any:
        """The block with a new header/body, hashes recomputed and signed by the key its
        header names (participant 0 for genesis)."""
        from derelayl.ledger.base import StoredBlock

        body_bytes = encode(body)
        if isinstance(header, dict):
            header = {**header, "body": sha256(body_bytes).hex()}
        header_bytes = encode(header)
        block_hash = sha256(header_bytes)
        miner = header.get("miner", 0) if isinstance(header, dict) else 0
        key = self.keys[miner] if isinstance(miner, int) and 0 <= miner < len(self.keys) else self.keys[0]
        return StoredBlock(stored.height, block_hash, header_bytes, body_bytes, key.sign(block_hash))

    def append_case(self, rng: random.Random) -> Callable[[], None]:
        """A mutated block offered to ``Chain.append`` on the chain up to its parent (what
        a node does with a block made elsewhere)."""
        from derelayl.ledger import Chain
        from derelayl.ledger.base import MemoryLedger

        blocks = self.mutated(rng, genesis=False)
        ledger = MemoryLedger()
        for b in blocks[:-1]:
            ledger.append(b)
        chain = Chain.open(ledger)
        return lambda: chain.append(blocks[-1])

    def case(self, rng: random.Random, genesis: bool) -> Callable[[], None]:
        blocks = self.mutated(rng, genesis)
        return lambda: self.replay(blocks)

    def mutated(self, rng: random.Random, genesis: bool) -> list[Any]:
        """The chain up to a random block (the genesis if ``genesis``), that block mutated."""
        i = 0 if genesis else rng.randrange(1, len(self.blocks))
        stored = self.blocks[i]
        blocks = list(self.blocks[: i + 1])
        if rng.random() < 0.2:  # raw bytes: the hashes catch it
            field = rng.choice(["header", "body", "signature"])
            LAST[0] = f"flipped a bit of the {field}"
            data = bytearray(getattr(stored, field))
            if data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            from dataclasses import replace

            blocks[i] = replace(stored, **{field: bytes(data)})
        else:
            header, body = json.loads(stored.header), json.loads(stored.body)
            if rng.random() < 0.75:
                body = mutate_json(body, rng)
            else:
                header = mutate_json(header, rng)
            blocks[i] = self.reseal(stored, header, body)
        return blocks


# ---------------------------------------------------------------- wire and config


class WireTarget:
    def __init__(self) -> None:
        import numpy as np

        from derelayl.learning.data import case_blob

        self.blob = case_blob(np.zeros((4, 64), dtype=np.float32), np.arange(4, dtype=np.int64))
        self.message = {
            "kind": "bid",
            "participant": 3,
            "round": 1,
            "role": "trainer",
            "amount": 5,
            "signature": "00" * 65,
        }
        self.headers = {"X-Round": "1", "X-Nonce": "00" * 32, "X-Signature": "00" * 65}

    def case(self, rng: random.Random) -> Callable[[], None]:
        from derelayl.learning.data import cases_from_blob
        from derelayl.node.wire import FetchRequest, message_from_json

        kind = rng.randrange(3)
        if kind == 0:
            data = materialize(mutate_json(self.message, rng))
            return lambda: message_from_json(data)
        if kind == 1:
            headers = materialize(mutate_json(self.headers, rng)) if rng.random() < 0.9 else {}
            headers = {str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in headers.items()}
            digest = rng.choice(["00" * 32, "zz", "0" * 63, "00" * 33])
            return lambda: FetchRequest.parse(digest, headers)
        blob = bytearray(self.blob)
        for _ in range(rng.randrange(1, 4)):
            if blob and rng.random() < 0.7:
                blob[rng.randrange(len(blob))] = rng.randrange(256)
            else:
                blob = blob[: rng.randrange(len(blob) + 1)]
        return lambda: cases_from_blob(bytes(blob))


class ConfigTarget:
    def __init__(self) -> None:
        self.base = {
            "participants": 20,
            "rounds": 10,
            "seeds": "1-3",
            "join_rate": 0.1,
            "protocol": {"k": 2, "test_cases": 10, "mo_budget": 1},
        }

    def case(self, rng: random.Random) -> Callable[[], None]:
        from derelayl.sim.config import resolve_config

        data = materialize(mutate_json(self.base, rng))
        return lambda: resolve_config(data)  # type: ignore[arg-type]


class ExperimentConfigTarget:
    """Mutated ``derelayl experiment`` configs (parsed, not run)."""

    def __init__(self) -> None:
        self.base = {
            "name": "fuzz",
            "seed": 0,
            "data": {"dataset": "synthetic", "participants": 10, "alpha": 0.5, "options": {"users": 10}},
            "model": {"hidden": [32, 16]},
            "train": {"lr": 0.05, "local_epochs": 1},
            "methods": {"fedavg": {"rounds": 3}, "derelayl": {"budget": "fedavg", "params": {"k": 2}}},
            "variants": [{"name": "v", "local_epochs": 2, "merge_top_k": 2}],
        }

    def case(self, rng: random.Random) -> Callable[[], None]:
        from derelayl.experiments.config import parse_config

        data = materialize(mutate_json(self.base, rng))
        return lambda: parse_config(data)  # type: ignore[arg-type]


# ---------------------------------------------------------------- main


def run(
    name: str, make: Callable[[random.Random], Callable[[], None]], count: int, rng: random.Random, show: int = 0
) -> Counter:
    outcomes: Counter = Counter()
    shown = 0
    started = time.perf_counter()
    for n in range(count):
        call = make(rng)
        try:
            call()
            outcomes["accepted"] += 1
            if outcomes["accepted"] <= show:
                print(f"  accepted ({name}): {LAST[0]}", file=sys.stderr)
        except DerelaylError as exc:
            outcomes[type(exc).__name__] += 1
        except Exception:
            outcomes["UNEXPECTED " + traceback.format_exc().strip().splitlines()[-1][:100]] += 1
            if shown < 3:
                shown += 1
                print(traceback.format_exc(), file=sys.stderr)
        if (n + 1) % max(1, count // 10) == 0:
            print(f"  {name}: {n + 1}/{count} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--targets", default="blocks,genesis,append,wire,config,experiment")
    parser.add_argument("--show-accepted", type=int, default=0, help="print what this many accepted inputs changed")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    chain = ChainTarget()
    makers: dict[str, Callable[[random.Random], Callable[[], None]]] = {
        "blocks": lambda r: chain.case(r, genesis=False),
        "genesis": lambda r: chain.case(r, genesis=True),
        "append": chain.append_case,
        "wire": WireTarget().case,
        "config": ConfigTarget().case,
        "experiment": ExperimentConfigTarget().case,
    }
    bad = 0
    for name in args.targets.split(","):
        outcomes = run(name, makers[name], args.count, rng, args.show_accepted)
        bad += sum(v for k, v in outcomes.items() if k.startswith("UNEXPECTED"))
        print(f"{name}: {args.count} inputs — " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    print("every input accepted or refused with a derelayl error" if not bad else f"{bad} UNEXPECTED exceptions")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
