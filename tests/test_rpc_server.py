"""The embedded EVM served over JSON-RPC (``evm/rpc_server.py``), what ``devnet`` uses on a
machine without anvil: a real server process on loopback, reached with httpx. Malformed
requests get JSON-RPC errors (never a 5xx or a dead server); values come back as JSON-RPC
quantities and data. (``test_chain_clients.py`` runs whole rounds of the contract through it.)"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from derelayl.evm.node import ANVIL_DEV_KEY, Node, embedded_rpc
from derelayl.evm.rpc_server import to_rpc
from derelayl.evm.signing import EvmKey


@pytest.fixture(scope="module")
def server() -> Iterator[Node]:
    node = embedded_rpc()
    yield node
    node.close()


def _post(node: Node, body: object) -> httpx.Response:
    return httpx.post(node.url, json=body, timeout=10)


def test_values_come_back_as_json_rpc_quantities_and_data() -> None:
    assert to_rpc({"number": 10, "ok": True, "hash": b"\x01\x02", "logsBloom": 0, "n": None}) == {
        "number": "0xa",
        "ok": True,
        "hash": "0x0102",
        "logsBloom": "0x" + "00" * 256,
        "n": None,
    }
    assert to_rpc([1, "0xab"]) == ["0x1", "0xab"]


def test_the_deployer_is_funded_and_blocks_are_mined_on_request(server: Node) -> None:
    assert server.w3.eth.get_balance(EvmKey(ANVIL_DEV_KEY).address) > 10**21
    before = server.block_number()
    answer = _post(server, {"jsonrpc": "2.0", "id": 7, "method": "evm_mine", "params": []}).json()
    assert answer["id"] == 7 and "error" not in answer
    assert server.block_number() == before + 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"jsonrpc": "2.0", "id": 1, "method": "admin_stop", "params": []}, -32601),
        ({"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": "x"}, -32602),
        ({"jsonrpc": "2.0", "id": 1, "params": []}, -32600),
        ([1, 2], -32600),
        ({"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": ["not an address", "latest"]}, -32000),
        ({"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": ["0x00"]}, -32000),
    ],
)
def test_bad_requests_get_a_json_rpc_error_and_the_server_answers_on(server: Node, body: object, code: int) -> None:
    response = _post(server, body)
    assert response.status_code == 200
    answers = response.json() if isinstance(response.json(), list) else [response.json()]
    assert all(a["error"]["code"] == code and a["error"]["message"] for a in answers), answers
    assert server.block_number() >= 1


def test_unparsable_and_oversized_bodies_are_refused(server: Node) -> None:
    assert httpx.post(server.url, content=b"{not json", timeout=10).status_code == 400
    assert httpx.post(server.url, content=b"[" * 100_000, timeout=10).status_code == 400
    assert httpx.post(server.url, content=b" " * (5 * 1024 * 1024), timeout=30).status_code == 413
    batch = _post(server, [{"jsonrpc": "2.0", "id": i, "method": "eth_blockNumber", "params": []} for i in range(3)])
    assert [a["id"] for a in batch.json()] == [0, 1, 2]
