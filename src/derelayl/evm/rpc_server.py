"""The embedded EVM (py-evm through eth-tester) served over JSON-RPC on loopback.

For machines without anvil: ``derelayl devnet --chain embedded`` (and ``auto`` when anvil
is missing) starts this as a process, and nodes talk to it exactly as they talk to anvil.

web3's ``EthereumTesterProvider`` already translates JSON-RPC requests into eth-tester calls;
its answers come back half-formatted (numbers as Python ints, some bytes as bytes), so this
server only turns them back into JSON-RPC quantities and data. It speaks the methods derelayl
uses (``eth_*`` reads, ``eth_sendRawTransaction``, ``evm_mine``) and answers anything else with
a JSON-RPC error. Requests run one at a time: py-evm is not thread-safe.

The chain lives in memory: it is gone when the process stops (anvil's ``--state`` is what
keeps a chain across restarts).

Run: ``python -m derelayl.evm.rpc_server --port P [--fund ADDRESS]`` (``evm.node.embedded_rpc``
starts it and waits until it answers).
"""

from __future__ import annotations

import argparse
import json
import threading
from typing import Any

from derelayl import jsonsafe

MAX_BODY = 4 * 1024 * 1024
"""Largest request accepted (a deployment of the contract is ~50 KB)."""
MAX_BATCH = 100
MAX_DEPTH = 32
"""Deepest JSON nesting accepted, measured before parsing (why: ``derelayl/jsonsafe.py``)."""


def to_rpc(value: Any, key: str = "") -> Any:
    """eth-tester's Python values as JSON-RPC values: integers as hex quantities, bytes as hex
    data, logs blooms as 256 bytes."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if key == "logsBloom":
            return "0x" + value.to_bytes(256, "big").hex()
        return hex(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): to_rpc(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_rpc(v) for v in value]
    raise TypeError(f"cannot encode {type(value).__name__} as JSON-RPC")


class EmbeddedRpc:
    """One py-evm chain and the function that answers JSON-RPC requests against it."""

    def __init__(self, fund: list[str] | None = None, amount: int = 10**23) -> None:
        from eth_account import Account
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider, Web3

        self.backend = PyEVMBackend()
        provider = EthereumTesterProvider(EthereumTester(self.backend))
        self.w3 = Web3(provider)
        self.call = provider.request_func(self.w3, self.w3.middleware_onion)
        self.lock = threading.Lock()
        funder = self.backend.account_keys[0]
        for address in fund or []:  # the devnet's deployer gets ether, as anvil's dev account has
            tx = {
                "chainId": int(self.w3.eth.chain_id),
                "nonce": int(self.w3.eth.get_transaction_count(funder.public_key.to_checksum_address())),
                "to": address,
                "value": amount,
                "gas": 21_000,
                "maxFeePerGas": 10**11,
                "maxPriorityFeePerGas": 1,
                "type": 2,
            }
            signed = Account.sign_transaction(tx, funder.to_bytes())
            self.w3.eth.send_raw_transaction(signed.raw_transaction)

    def answer(self, request: Any) -> dict[str, Any]:
        """One JSON-RPC request object → one response object (errors included, never raises)."""
        rid = request.get("id") if isinstance(request, dict) else None
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return _error(rid, -32600, "invalid request: an object with a string method is required")
        method, params = request["method"], request.get("params", [])
        if not isinstance(params, list):
            return _error(rid, -32602, "params must be an array")
        if not method.startswith(("eth_", "evm_", "net_", "web3_")):
            return _error(rid, -32601, f"method {method!r} is not served by the embedded EVM")
        with self.lock:
            try:
                response = self.call(method, params)
            except Exception as exc:
                return _error(rid, 3 if "revert" in str(exc).lower() else -32000, _message(exc))
        if "error" in response:
            error = response["error"]
            message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
            return _error(rid, -32601 if "not implemented" in message.lower() else -32000, message)
        try:
            return {"jsonrpc": "2.0", "id": rid, "result": to_rpc(response.get("result"))}
        except TypeError as exc:
            return _error(rid, -32603, str(exc))


def _message(exc: Exception) -> str:
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    if "revert" in text.lower() and "execution reverted" not in text:
        reason = text.split(":", 1)[1].strip() if ":" in text else ""
        return f"execution reverted: {reason}".rstrip(": ")
    return text


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


def app(rpc: EmbeddedRpc) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def handle(request: Request) -> JSONResponse:
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse(_error(None, -32600, f"request larger than {MAX_BODY} bytes"), status_code=413)
        if jsonsafe.nesting(body) > MAX_DEPTH:
            return JSONResponse(_error(None, -32600, f"JSON nested deeper than {MAX_DEPTH}"), status_code=400)
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            return JSONResponse(_error(None, -32700, "parse error: the body is not JSON"), status_code=400)
        if isinstance(payload, list):
            if not payload or len(payload) > MAX_BATCH:
                return JSONResponse(_error(None, -32600, f"a batch holds 1 to {MAX_BATCH} requests"))
            return JSONResponse([rpc.answer(item) for item in payload])
        return JSONResponse(rpc.answer(payload))

    return Starlette(routes=[Route("/", handle, methods=["POST"])])


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m derelayl.evm.rpc_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fund", action="append", default=[], help="an address to give ether to at start")
    args = parser.parse_args(argv)
    server = uvicorn.Server(
        uvicorn.Config(app(EmbeddedRpc(args.fund)), host=args.host, port=args.port, log_level="warning")
    )
    server.run()


if __name__ == "__main__":
    main()
