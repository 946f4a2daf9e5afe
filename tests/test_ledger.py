"""The signed chain: bad input gets a clear error and leaves state and storage unchanged;
stored chains verify; tampering and truncation are caught at the right block."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pytest

from derelayl.agents.latent import LatentPopulation
from derelayl.errors import (
    BalanceError,
    ChainIntegrityError,
    DuplicateError,
    PhaseError,
    RoleError,
    SignatureError,
    StorageError,
    UnknownParticipantError,
)
from derelayl.learning.latent import LatentTrainer
from derelayl.ledger import Chain, MemoryLedger, SQLiteLedger, StoredBlock, derive_keys
from derelayl.ledger.codec import encode_block, message_bytes, proposal_of, seal
from derelayl.ledger.crypto import KeyPair, canonical
from derelayl.protocol import Bids, Params, Phase
from derelayl.protocol.digest import compute_state_root
from derelayl.protocol.messages import BidMessage

N = 10


def _chain(ledger=None, rounds: int = 3) -> tuple[Chain, dict[int, KeyPair], LatentPopulation]:
    """A chain on a real SQLite file unless a ledger is given."""
    keys = derive_keys(1, N)
    if ledger is None:
        ledger = SQLiteLedger(Path(tempfile.mkdtemp(prefix="derelayl-test-")) / "chain.sqlite")
    chain = Chain.create(ledger, Params(test_cases=4), b"\x01" * 32, [k.public for k in keys], keys[0])
    net = LatentPopulation(LatentTrainer(seed=1))
    signers = dict(enumerate(keys))
    while chain.state.round < rounds:
        chain.produce(net.next_block(chain.state), signers)
    return chain, signers, net


def _until(chain: Chain, signers, net, phase: Phase) -> None:
    while chain.state.phase != phase:
        chain.produce(net.next_block(chain.state), signers)


def _body(chain: Chain, block, signers) -> dict:
    """A block's body, every message signed by its own sender (the test holds every key)."""
    return encode_block(proposal_of(block, chain.chain_id, signers, {}))


def _at_head(chain: Chain, block):  # type: ignore[no-untyped-def]
    """The block as the chain would time it (a local chain's block time is its height)."""
    return dataclasses.replace(block, time=chain.height)


def _sealed(chain: Chain, block, body) -> StoredBlock:
    return seal(
        _at_head(chain, block),
        body,
        height=chain.height,
        prev=chain.head_hash,
        state_root=b"\x00" * 32,
        miner=_keys()[block.miner],
    )


def _keys() -> dict[int, KeyPair]:
    return dict(enumerate(derive_keys(1, N)))


def _rejects(chain: Chain, stored: StoredBlock, error: type[Exception], match: str) -> None:
    """Assert the block is refused and nothing changed."""
    height, root, head = chain.height, compute_state_root(chain.state), chain.head_hash
    stored_bytes = _file_bytes(chain)
    with pytest.raises(error, match=match):
        chain.append(stored)
    assert (chain.height, compute_state_root(chain.state), chain.head_hash) == (height, root, head)
    assert _file_bytes(chain) == stored_bytes


def _file_bytes(chain: Chain) -> bytes | None:
    ledger = chain.ledger
    return ledger.path.read_bytes() if isinstance(ledger, SQLiteLedger) else None


def _deposit(chain, net):
    block = net.next_block(chain.state)
    return block, _body(chain, block, _keys())


def test_unsigned_bid_is_rejected() -> None:
    chain, _, net = _chain()
    block, body = _deposit(chain, net)
    body["trainer_bids"][0][2] = ""
    _rejects(chain, _sealed(chain, block, body), SignatureError, "unsigned")


def test_forged_bid_is_rejected() -> None:
    chain, _, net = _chain()
    block, body = _deposit(chain, net)
    forger = KeyPair.from_seed(b"mallory")
    who, amount, _ = body["trainer_bids"][0]
    forged = message_bytes(chain.chain_id, BidMessage(block.round, who, "trainer", amount))
    body["trainer_bids"][0][2] = forger.sign(forged).hex()
    _rejects(chain, _sealed(chain, block, body), SignatureError, f"participant {who}: signature does not verify")


def test_bid_replayed_from_earlier_round_is_rejected() -> None:
    chain, signers, net = _chain(rounds=1)
    old_body: dict = {"trainer_bids": []}
    for _ in range(20):
        block, body = _deposit(chain, net)
        trainers = set(chain.state.roles.trainers.tolist())
        again = [b for b in old_body["trainer_bids"] if b[0] in trainers]
        if again:
            break
        chain.produce(block, signers)
        _until(chain, signers, net, Phase.DEPOSIT)
        old_body = body
    # the same signed bid as last round, by someone who is a trainer again this round
    assert again, "no trainer bid in two consecutive rounds"
    body["trainer_bids"] = [again[0]]
    _rejects(chain, _sealed(chain, block, body), SignatureError, "replayed")


def test_replayed_bid_within_round_is_a_duplicate() -> None:
    chain, _, net = _chain()
    block, body = _deposit(chain, net)
    body["trainer_bids"].append(body["trainer_bids"][0])
    _rejects(chain, _sealed(chain, block, body), DuplicateError, "bid twice")


def test_bid_above_balance_is_rejected() -> None:
    chain, signers, net = _chain()
    block = net.next_block(chain.state)
    t = int(block.trainer_bids.participant[0])
    bad = dataclasses.replace(block, trainer_bids=Bids.of([(t, int(chain.state.balances[t]) + 1)]))
    _rejects(chain, _sealed(chain, bad, _body(chain, bad, signers)), BalanceError, "above its balance")


def test_bid_by_non_trainer_is_rejected() -> None:
    chain, signers, net = _chain()
    block = net.next_block(chain.state)
    miner = int(chain.state.roles.miners[-1])
    bad = dataclasses.replace(block, trainer_bids=Bids.of([(miner, 0)]))
    _rejects(chain, _sealed(chain, bad, _body(chain, bad, signers)), RoleError, "not a trainer")


def test_unknown_participant_is_rejected() -> None:
    chain, _, net = _chain()
    block, body = _deposit(chain, net)
    body["trainer_bids"][0][0] = 999
    _rejects(chain, _sealed(chain, block, body), UnknownParticipantError, "unknown participant 999")


def test_commitment_after_testing_block_is_rejected() -> None:
    chain, signers, net = _chain()
    _until(chain, signers, net, Phase.COMMIT)
    commit = net.next_block(chain.state)
    chain.produce(commit, signers)  # now in TEST phase
    late = dataclasses.replace(commit, miner=chain.state.roles.block_miners[1])
    chain.produce(net.next_block(chain.state), signers)  # the testing block
    stored = _sealed(chain, late, _body(chain, late, signers))
    _rejects(chain, stored, PhaseError, "out of phase")


def test_duplicate_commitment_is_rejected() -> None:
    chain, signers, net = _chain()
    _until(chain, signers, net, Phase.COMMIT)
    commit = net.next_block(chain.state)
    dup = dataclasses.replace(commit, commitments=(commit.commitments[0],) * len(commit.commitments))
    assert len(dup.commitments) > 1
    _rejects(chain, _sealed(chain, dup, _body(chain, dup, signers)), DuplicateError, "duplicate")


def test_block_signed_by_someone_else_is_rejected() -> None:
    chain, signers, net = _chain()
    block = net.next_block(chain.state)
    stored = seal(
        _at_head(chain, block),
        _body(chain, block, signers),
        height=chain.height,
        prev=chain.head_hash,
        state_root=b"\0" * 32,
        miner=signers[(block.miner + 1) % N],
    )
    _rejects(chain, stored, SignatureError, "not signed by its miner")


def test_wrong_state_root_is_rejected() -> None:
    chain, signers, net = _chain()
    block = net.next_block(chain.state)
    stored = _sealed(chain, block, _body(chain, block, signers))  # zero state root
    from derelayl.errors import ProtocolError

    _rejects(chain, stored, ProtocolError, "state root")


def test_valid_block_from_elsewhere_is_accepted() -> None:
    # Prepare: a second chain replica fed the first one's blocks
    chain, signers, net = _chain(MemoryLedger(), rounds=2)
    replica = Chain.open(_copy(chain.ledger))
    # Execute
    for _ in range(4):
        chain.produce(net.next_block(chain.state), signers)
        replica.append(chain.ledger.head())
    # Assert
    assert replica.head_hash == chain.head_hash
    assert compute_state_root(replica.state) == compute_state_root(chain.state)


def _copy(ledger: MemoryLedger) -> MemoryLedger:
    out = MemoryLedger()
    for b in ledger.blocks():
        out.append(b)
    return out


# ---------------------------------------------------------------- storage


def test_sqlite_chain_reopens_and_verifies(tmp_path: Path) -> None:
    chain, _, _ = _chain(SQLiteLedger(tmp_path / "c.sqlite"), rounds=4)
    head, height = chain.head_hash, chain.height
    chain.ledger.close()
    again = Chain.open(SQLiteLedger(tmp_path / "c.sqlite"))
    assert (again.head_hash, again.height) == (head, height)


def _tamper(path: Path, height: int, column: str, edit) -> None:
    db = sqlite3.connect(path)
    (value,) = db.execute(f"SELECT {column} FROM blocks WHERE height = ?", (height,)).fetchone()
    db.execute(f"UPDATE blocks SET {column} = ? WHERE height = ?", (edit(bytes(value)), height))
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("column", "edit", "reason"),
    [
        (
            "body",
            lambda b: b.replace(b'"scores":[', b'"scores":[9,', 1) if b'"scores"' in b else b + b" ",
            "tampered bytes",
        ),
        ("header", lambda b: b[:-2] + b"0}", "tampered bytes"),
        ("signature", lambda b: bytes([b[0] ^ 1]) + b[1:], "bad signature"),
    ],
)
def test_tampered_byte_is_caught_at_its_block(tmp_path: Path, column, edit, reason) -> None:
    chain, _, _ = _chain(SQLiteLedger(tmp_path / "c.sqlite"), rounds=3)
    chain.ledger.close()
    _tamper(tmp_path / "c.sqlite", 7, column, edit)
    with pytest.raises(ChainIntegrityError, match=reason) as info:
        Chain.open(SQLiteLedger(tmp_path / "c.sqlite"))
    assert info.value.height == 7


def test_resealed_rule_violation_is_caught(tmp_path: Path) -> None:
    """A miner who re-signs a block with a changed score is caught by the rules, not the hash."""
    chain, signers, net = _chain(MemoryLedger(), rounds=2)
    _until(chain, signers, net, Phase.TEST)
    block = net.next_block(chain.state)
    body = _body(chain, block, signers)
    body["scores"][0] += 100  # the tester lies, then signs consistently
    stored = seal(
        _at_head(chain, block),
        body,
        height=chain.height,
        prev=chain.head_hash,
        state_root=compute_state_root(chain.state),
        miner=signers[block.miner],
    )
    chain.ledger.append(stored)
    with pytest.raises(ChainIntegrityError, match="rule violation") as info:
        Chain.open(chain.ledger)
    assert info.value.height == stored.height


def test_truncated_database_file_gives_a_clear_error(tmp_path: Path) -> None:
    chain, _, _ = _chain(SQLiteLedger(tmp_path / "c.sqlite"), rounds=3)
    chain.ledger.close()
    path = tmp_path / "c.sqlite"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises((StorageError, ChainIntegrityError), match=r"c\.sqlite|block"):
        Chain.open(SQLiteLedger(path))
    assert path.read_bytes() == data[: len(data) // 2]  # storage left as it was


def test_garbage_file_is_not_a_chain(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StorageError, match="not a readable chain file"):
        SQLiteLedger(path)


def test_genesis_records_params_and_keys() -> None:
    chain, _, _ = _chain(rounds=0)
    body = json.loads(chain.ledger.get(0).body)
    assert body["params"]["k"] == 4 and len(body["keys"]) == N
    assert canonical(body) == chain.ledger.get(0).body
    assert np.all(chain.state.balances == 0)


def test_crash_mid_write_leaves_previous_head(tmp_path: Path) -> None:
    """A process that dies inside the write transaction of a block leaves the chain at the
    previous head: SQLite rolls the half-written block back on the next open."""
    import subprocess
    import sys

    # Prepare
    chain, _, _ = _chain(SQLiteLedger(tmp_path / "c.sqlite"), rounds=2)
    head, height = chain.head_hash, chain.height
    chain.ledger.close()
    # Execute: a writer that dies (os._exit) after inserting, before committing
    script = (
        "import os, sqlite3\n"
        f"db = sqlite3.connect({str(tmp_path / 'c.sqlite')!r}, isolation_level=None)\n"
        "db.execute('PRAGMA synchronous=FULL')\n"
        "db.execute('BEGIN IMMEDIATE')\n"
        f"db.execute('INSERT INTO blocks VALUES (?, ?, ?, ?, ?)', ({height}, b'h', b'{{}}', b'{{}}', b's'))\n"
        "os._exit(9)\n"
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    # Assert
    again = Chain.open(SQLiteLedger(tmp_path / "c.sqlite"))
    assert (again.head_hash, again.height) == (head, height)


def test_co_tester_scores_are_signed_by_each_tester() -> None:
    # Prepare: a chain with three testers per round
    keys = derive_keys(2, N)
    params = Params(test_cases=4, testers=3)
    chain = Chain.create(MemoryLedger(), params, b"\x02" * 32, [k.public for k in keys], keys[0])
    net = LatentPopulation(LatentTrainer(seed=2))
    signers = dict(enumerate(keys))
    _until(chain, signers, net, Phase.TEST)
    block = net.next_block(chain.state)
    body = _body(chain, block, signers)
    # Execute: the testing miner alters a co-tester's scores but keeps its signature
    body["co_testers"][0][2] = [s + 1 for s in body["co_testers"][0][2]]
    stored = seal(
        _at_head(chain, block),
        body,
        height=chain.height,
        prev=chain.head_hash,
        state_root=b"\0" * 32,
        miner=signers[block.miner],
    )
    # Assert
    _rejects(chain, stored, SignatureError, "co-tester scores of participant")
    chain.produce(block, signers)  # the honest block is accepted
    assert Chain.open(chain.ledger).head_hash == chain.head_hash
