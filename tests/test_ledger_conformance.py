"""One conformance suite for every ``Ledger`` backend (memory, SQLite; an EVM backend joins
by adding a factory). Each test runs once per backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from derelayl.agents.latent import LatentPopulation
from derelayl.errors import StorageError
from derelayl.learning.latent import LatentTrainer
from derelayl.ledger import Chain, Ledger, MemoryLedger, SQLiteLedger, StoredBlock, derive_keys
from derelayl.protocol import Params

Factory = Callable[[], Ledger]


@pytest.fixture(params=["memory", "sqlite"])
def make_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    if request.param == "memory":
        return MemoryLedger
    return lambda: SQLiteLedger(tmp_path / "chain.sqlite")


def _block(height: int) -> StoredBlock:
    return StoredBlock(height, bytes([height]) * 32, b'{"h":%d}' % height, b"{}", b"sig")


def test_empty_ledger(make_ledger: Factory) -> None:
    ledger = make_ledger()
    assert ledger.height() == 0 and ledger.head() is None and list(ledger.blocks()) == []


def test_append_get_head_and_order(make_ledger: Factory) -> None:
    # Prepare
    ledger = make_ledger()
    # Execute
    for h in range(3):
        ledger.append(_block(h))
    # Assert
    assert ledger.height() == 3
    assert ledger.get(1) == _block(1)
    assert ledger.head() == _block(2)
    assert [b.height for b in ledger.blocks(start=1)] == [1, 2]


def test_out_of_order_append_is_refused_and_changes_nothing(make_ledger: Factory) -> None:
    ledger = make_ledger()
    ledger.append(_block(0))
    with pytest.raises(StorageError, match="does not follow"):
        ledger.append(_block(2))
    with pytest.raises(StorageError, match="does not follow"):
        ledger.append(_block(0))
    assert ledger.height() == 1 and ledger.head() == _block(0)


def test_missing_height_is_a_storage_error(make_ledger: Factory) -> None:
    ledger = make_ledger()
    with pytest.raises(StorageError, match="no block at height 5"):
        ledger.get(5)


def test_a_chain_round_trips_through_the_backend(make_ledger: Factory) -> None:
    # Prepare
    keys = derive_keys(4, 8)
    chain = Chain.create(make_ledger(), Params(test_cases=3), b"\x04" * 32, [k.public for k in keys], keys[0])
    net, signers = LatentPopulation(LatentTrainer(seed=4)), dict(enumerate(keys))
    # Execute
    while chain.state.round < 5:
        chain.produce(net.next_block(chain.state), signers)
    again = Chain.open(chain.ledger)
    # Assert
    assert (again.head_hash, again.height, again.state.round) == (chain.head_hash, 21, 5)
