"""What a contract at ``--contract ADDR`` says is input from outside: a stranger can deploy a
contract that emits logs shaped like DeRelayL's (the same event signatures) with any content.
``verify`` and ``inspect`` replay those logs with the rules and must refuse every lie with one
``error:`` line that names the block, never a traceback, and never trust the contract's word.

The impostor below is real Vyper, compiled and deployed on the embedded EVM served over
JSON-RPC (the same path a user's ``--rpc URL`` takes)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from derelayl.cli import app
from derelayl.evm.artifact import load_artifact
from derelayl.evm.node import Node, embedded_rpc
from derelayl.evm.signing import derive_evm_keys
from derelayl.ledger.crypto import canonical
from derelayl.protocol.params import preset

runner = CliRunner()

IMPOSTOR = """
# pragma version ~=0.4.3
event Genesis:
    params_json: String[4096]
    seed: bytes32
    genesis_model: bytes32
    participants: DynArray[address, 1024]

event Block:
    round: indexed(uint256)
    kind: uint256
    miner: uint256
    time: uint256
    randomness: bytes32
    mixed: bool

event BidLogged:
    round: indexed(uint256)
    role: uint256
    participant: uint256
    amount: uint256
    v: uint8
    r: bytes32
    s: bytes32

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256

event Checkpoint:
    round: uint256
    phase: uint256
    minted: uint256
    burned: uint256
    escrow: uint256
    beacon: bytes32

EXTENSION: public(immutable(address))

@deploy
def __init__(extension: address):
    EXTENSION = extension

@external
def genesis(params_json: String[4096], seed: bytes32, participants: DynArray[address, 1024]):
    log Genesis(params_json=params_json, seed=seed, genesis_model=empty(bytes32), participants=participants)

@external
def bid_block(round: uint256, kind: uint256, participant: uint256, amount: uint256):
    if amount > 0:
        r: bytes32 = keccak256("r")
        log BidLogged(round=round, role=0, participant=participant, amount=amount, v=27, r=r, s=r)
    log Block(round=round, kind=kind, miner=0, time=block.number, randomness=empty(bytes32), mixed=False)

@external
def transfer(sender: address, receiver: address, amount: uint256):
    log Transfer(sender=sender, receiver=receiver, value=amount)

@external
def checkpoint(minted: uint256):
    log Checkpoint(round=0, phase=0, minted=minted, burned=0, escrow=0, beacon=empty(bytes32))
"""


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    n = embedded_rpc()
    try:
        yield n
    finally:
        n.close()


def _deploy(node: Node, *, real_extension: bool = True) -> Any:
    """The impostor, pointing at a real TestAndSettle (so that its logs are what is judged), or
    at itself."""
    import vyper

    out = vyper.compile_code(IMPOSTOR, output_formats=["abi", "bytecode"])
    w3 = node.w3
    sender = {"from": w3.eth.accounts[0]}
    extension = "0x" + "00" * 20
    if real_extension:
        code = load_artifact()["extension_bytecode"]
        extension = w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction({**sender, "data": code}))[
            "contractAddress"
        ]
    factory = w3.eth.contract(abi=out["abi"], bytecode=out["bytecode"])
    receipt = w3.eth.wait_for_transaction_receipt(factory.constructor(extension).transact(sender))
    return w3.eth.contract(address=receipt["contractAddress"], abi=out["abi"])


def _call(node: Node, fn: Any) -> None:
    w3 = node.w3
    receipt = w3.eth.wait_for_transaction_receipt(fn.transact({"from": w3.eth.accounts[0]}))
    assert receipt["status"] == 1


PARTICIPANTS = [k.address for k in derive_evm_keys(3, 4)]
GOOD_PARAMS = canonical(preset("reference").to_dict()).decode()


def _genesis(node: Node, contract: Any, params_json: str = GOOD_PARAMS) -> None:
    _call(node, contract.functions.genesis(params_json, b"\x01" * 32, PARTICIPANTS))


# Each case: what the impostor logs after deployment, and words the one error line must hold.
CASES = {
    "no genesis": (lambda n, c: None, ["is not a DeRelayL contract"]),
    "two geneses": (lambda n, c: (_genesis(n, c), _genesis(n, c)), ["is not a DeRelayL contract"]),
    "deep params": (lambda n, c: _genesis(n, c, "[" * 4000), ["genesis", "nested deeper"]),
    "params not an object": (lambda n, c: _genesis(n, c, "[1, 2]"), ["genesis", "params must be a table"]),
    "fractional k": (
        lambda n, c: _genesis(n, c, GOOD_PARAMS.replace('"k":4', '"k":2.5')),
        ["genesis", "k"],
    ),
    "a contract without DeRelayL's views": (lambda n, c: _genesis(n, c), ["does not answer DeRelayL's views"]),
    "forged bid": (
        lambda n, c: (_genesis(n, c), _call(n, c.functions.bid_block(0, 0, 1, 10**6))),
        ["bid", "signature does not verify"],
    ),
    "unknown block kind": (
        lambda n, c: (_genesis(n, c), _call(n, c.functions.bid_block(0, 7, 1, 0))),
        ["Block", "not a valid BlockKind"],
    ),
    "bid of 2^255": (
        lambda n, c: (_genesis(n, c), _call(n, c.functions.bid_block(0, 0, 1, 2**255))),
        ["bid", "signature does not verify"],
    ),
    "spending money nobody has": (
        lambda n, c: (_genesis(n, c), _call(n, c.functions.transfer(PARTICIPANTS[0], PARTICIPANTS[1], 10**30))),
        ["Transfer", "amount"],
    ),
    "lying checkpoint": (
        lambda n, c: (_genesis(n, c), _call(n, c.functions.checkpoint(999))),
        ["differs from the rules", "minted 0 vs 999", "beacon 0x0101"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_an_impostor_contract_is_refused_with_one_error_line(node: Node, case: str, command: str) -> None:
    # Arrange: a fresh impostor with this case's logs
    contract = _deploy(node)
    action, words = CASES[case]
    action(node, contract)
    # Execute
    result = runner.invoke(app, [command, "--rpc", node.url, "--contract", contract.address])
    # Assert: one line naming the block and what was wrong (verify: "INVALID at EVM block N",
    # inspect: "error: block N"), no traceback
    lines = [line for line in result.output.splitlines() if line.strip()]
    text = " ".join(result.output.split())
    assert result.exit_code in (1, 2), (result.output, result.exception)
    assert lines and lines[0].startswith(("error:", "INVALID at EVM block")), result.output
    assert all(w.lower() in text.lower() for w in words), (words, result.output)
    assert "Traceback" not in result.output and not isinstance(result.exception, AssertionError)


@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_a_contract_that_delegates_to_other_code_is_refused(node: Node, command: str) -> None:
    # Arrange: an impostor with a good genesis whose EXTENSION is not DeRelayL's TestAndSettle
    contract = _deploy(node, real_extension=False)
    _genesis(node, contract)
    # Execute
    result = runner.invoke(app, [command, "--rpc", node.url, "--contract", contract.address])
    # Assert
    assert result.exit_code in (1, 2) and result.output.startswith("error:"), result.output
    assert "whose code is not DeRelayL's TestAndSettle" in result.output
