"""Shared helpers: small networks driven by the abstract (latent) participants."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from derelayl.agents.latent import LatentPopulation
from derelayl.learning.latent import LatentTrainer
from derelayl.protocol import Params, State, preset, process_block
from derelayl.protocol.genesis import initialize_state

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("COLUMNS", "200")


def make_keys(n: int, start: int = 0) -> list[bytes]:
    return [(i + 1).to_bytes(32, "big") for i in range(start, start + n)]


def make_state(n: int = 12, params: Params | None = None, seed: bytes = b"\x07" * 32) -> State:
    return initialize_state(params or preset("minimal"), seed, make_keys(n))


def advance(state: State, net: LatentPopulation, blocks: int) -> list[object]:
    receipts = []
    for _ in range(blocks):
        receipts.append(process_block(state, net.next_block(state)))
    return receipts


@pytest.fixture
def net() -> LatentPopulation:
    return LatentPopulation(LatentTrainer(seed=3))


@pytest.fixture
def state() -> State:
    return make_state()
