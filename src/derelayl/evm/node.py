"""Ethereum nodes our code starts or reaches, and transactions sent to them.

- ``embedded()``: py-evm through ``eth-tester``, in this process (pip only; the default);
- ``anvil()``: the anvil binary from the npm package ``@foundry-rs/anvil`` (installed by
  ``scripts/setup`` into ``.tools/``), started on a free loopback port and stopped with us;
  ``--state FILE`` keeps its chain across restarts;
- ``embedded_rpc()``: the embedded EVM served over JSON-RPC by a process of ours
  (``evm/rpc_server.py``), for a network of nodes on a machine without anvil;
- ``connect(url)``: any Ethereum JSON-RPC URL a user gives.

Every failure to reach a node, a wrong chain id or a missing contract is a ``LedgerError``
with one line that says what was wrong.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from derelayl.errors import ConfigError, LedgerError
from derelayl.evm.reasons import expand
from derelayl.evm.signing import EvmKey

__all__ = ["ANVIL_DEV_KEY", "Node", "anvil", "anvil_path", "connect", "embedded", "embedded_rpc"]

log = logging.getLogger(__name__)

ANVIL_DEV_KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
"""anvil's first development account (public knowledge; holds test ether on a fresh anvil)."""
_ROOT = Path(__file__).resolve().parents[3]
_ANVIL = _ROOT / ".tools" / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
_ERROR_STRING = "0x08c379a0"
"""The selector of ``Error(string)``, which a revert with a reason returns."""
GAS_PER_TX = 29_000_000
"""Gas limit of a phase transaction (the block limit is 30M: a settlement must fit one block)."""


class TxFailed(LedgerError):
    """A transaction the contract reverted; ``reason`` is its revert string."""

    def __init__(self, reason: str, receipt: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.receipt = receipt


@dataclass
class Node:
    w3: Any
    kind: str
    funder: EvmKey | None
    """An account with ether to pay participants' gas (the node's development account)."""
    url: str = ""
    process: subprocess.Popen[bytes] | None = None
    _nonces: dict[str, int] = field(default_factory=dict)

    @property
    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    def block_number(self) -> int:
        return int(self.w3.eth.block_number)

    def mine(self, blocks: int) -> None:
        """Mine ``blocks`` empty blocks (the clock a live chain keeps while nobody sends)."""
        if blocks <= 0:
            return
        if self.kind == "embedded":
            self.w3.provider.ethereum_tester.mine_blocks(blocks)
            return
        for _ in range(blocks):  # anvil, the embedded JSON-RPC server and most dev nodes speak it
            self.w3.provider.make_request("evm_mine", [])

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # anvil runs in its own process group: stop it and anything it started
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ transactions

    def fees(self) -> dict[str, int]:
        if self.kind == "anvil":
            return {"maxFeePerGas": 0, "maxPriorityFeePerGas": 0}
        base = int(self.w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
        return {"maxFeePerGas": 2 * base + 1, "maxPriorityFeePerGas": 1}

    def send(self, key: EvmKey, to: str | None, data: bytes | str = b"", value: int = 0, gas: int = GAS_PER_TX) -> Any:
        """Sign and send a transaction; wait for its receipt. A revert raises ``TxFailed``
        with the contract's reason and leaves the contract unchanged."""
        from eth_account import Account

        sender = key.address
        nonce = self._nonces.get(sender)
        if nonce is None:
            nonce = int(self.w3.eth.get_transaction_count(sender, "pending"))
        tx: dict[str, Any] = {
            "chainId": self.chain_id,
            "nonce": nonce,
            "gas": gas,
            "value": value,
            "data": data,
            "type": 2,
            **self.fees(),
        }
        if to is not None:
            tx["to"] = to
        signed = Account.sign_transaction(tx, key.secret)
        try:
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        except Exception as exc:  # eth-tester executes on send and raises on revert
            self._nonces.pop(sender, None)
            raise TxFailed(_reason(exc)) from None
        self._nonces[sender] = nonce + 1
        receipt = self._receipt(tx_hash)
        if receipt["status"] != 1:
            raise TxFailed(self._replay_reason(tx, sender, receipt), receipt)
        return receipt

    def _receipt(self, tx_hash: Any, timeout: float = 120.0) -> Any:
        """Poll for the receipt with a short, growing pause (web3's own wait sleeps 0.1 s, which
        dominates on a node that mines every transaction at once)."""
        from web3.exceptions import TransactionNotFound

        deadline, pause = time.monotonic() + timeout, 0.001
        while True:
            try:
                return self.w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                if time.monotonic() > deadline:
                    raise LedgerError(f"transaction {tx_hash.hex()} not mined within {timeout:.0f} s") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)

    def _replay_reason(self, tx: dict[str, Any], sender: str, receipt: Any) -> str:
        """The revert reason of a mined transaction that failed (a receipt carries none): the
        node's trace of the transaction itself, if it traces (anvil; geth with the debug API),
        else the call replayed at the block the transaction was mined in. That block's number
        is the one the transaction saw (``block.number``, the phase clock of ``_timed_out`` and
        the challenge window); the block before has the state but a number one lower, and at a
        phase's exact timeout its replay said ``WrongMinerError`` where the transaction had
        failed a later check. On a node that mines each transaction alone (eth-tester, anvil's
        automine) the mined block's contract state is the one the transaction saw: a reverted
        transaction changes only its sender's nonce and ether."""
        traced = self._traced_reason(receipt)
        if traced is not None:
            return traced
        call = {k: v for k, v in tx.items() if k in ("to", "data", "value", "gas")} | {"from": sender}
        try:
            self.w3.eth.call(call, int(receipt["blockNumber"]))
        except Exception as exc:
            return _reason(exc)
        return "reverted (no reason given)"

    def _traced_reason(self, receipt: Any) -> str | None:
        """The revert reason in the node's call trace of the mined transaction, or None if the
        node does not trace or the trace has no ``Error(string)`` output."""
        if self.kind == "embedded":
            return None  # eth-tester has no debug_traceTransaction
        tx_hash = receipt["transactionHash"]
        tx_hash = tx_hash if isinstance(tx_hash, str) else "0x" + bytes(tx_hash).hex()
        config = {"tracer": "callTracer", "tracerConfig": {"onlyTopCall": True}}
        try:
            response = self.w3.provider.make_request("debug_traceTransaction", [tx_hash, config])
        except Exception:  # a node without the method may answer with an HTTP error
            return None
        result = response.get("result") if isinstance(response, dict) else None
        output = result.get("output") if isinstance(result, dict) else None
        if not isinstance(output, str) or not output.startswith(_ERROR_STRING):
            return None
        from eth_abi import decode

        try:
            (text,) = decode(["string"], bytes.fromhex(output[len(_ERROR_STRING) :]))
        except Exception:
            return None
        return expand(str(text)) or "reverted (no reason given)"

    def fund(self, addresses: list[str], amount: int = 10**19) -> None:
        """Give each address ``amount`` wei from the funder, if it has less than half of it."""
        if self.funder is None:
            return
        for address in addresses:
            if int(self.w3.eth.get_balance(address)) < amount // 2:
                self.send(self.funder, address, value=amount, gas=21_000)


def _reason(exc: Exception) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    if isinstance(exc.args[0] if exc.args else None, dict):
        text = str(exc.args[0].get("message", text))
    for prefix in ("execution reverted: ", "execution reverted:", "Transaction reverted: "):
        if prefix in text:
            text = text.split(prefix, 1)[1]
    return expand(text.strip().strip("'\"")) or "reverted (no reason given)"


# ---------------------------------------------------------------- backends


def embedded() -> Node:
    """py-evm in this process: a fresh chain with funded development accounts."""
    try:
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider, Web3
    except ImportError as exc:  # pragma: no cover - the evm extra is part of the set-up
        raise ConfigError(f"the embedded EVM needs the evm extra ({exc.name} is missing); run scripts/setup") from exc
    backend = PyEVMBackend()
    w3 = Web3(EthereumTesterProvider(EthereumTester(backend)))
    funder = EvmKey(backend.account_keys[0].to_bytes())
    return Node(w3, "embedded", funder)


def anvil_path() -> Path | None:
    """The anvil binary installed by scripts/setup, or one on PATH."""
    if _ANVIL.exists():
        return _ANVIL
    found = shutil.which("anvil")
    return Path(found) if found else None


def die_with_parent() -> None:
    """In the child: ask Linux to send SIGTERM when the process that started it dies (even by
    kill -9), so anvil writes its --state file and exits (and a devnet's nodes stop) instead of
    lingering."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def anvil(
    state: Path | None = None, port: int | None = None, chain_id: int = 31337, block_time: float | None = None
) -> Node:
    """Start anvil on loopback (its binary run directly: the npm wrapper leaves the server
    running when killed) and wait until it answers. ``block_time``: also mine a block every
    so many seconds (besides one per transaction), so that phase deadlines pass while a
    network waits for a silent participant."""
    binary = anvil_path()
    if binary is None:
        raise ConfigError("anvil is not installed: run scripts/setup with npm available (npm i @foundry-rs/anvil)")
    port = port or _free_port()
    args = [
        str(binary),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--chain-id",
        str(chain_id),
        "--gas-limit",
        "30000000",
        "--block-base-fee-per-gas",
        "0",
        "--gas-price",
        "0",
        "--balance",
        "1000000",
        "--silent",
    ]
    if state is not None:
        args += ["--state", str(state), "--state-interval", "1"]  # a kill -9 loses at most a second
    if block_time is not None:
        args += ["--block-time", str(block_time), "--mixed-mining"]
    return _start(args, port, "anvil", EvmKey(ANVIL_DEV_KEY))


def embedded_rpc(port: int | None = None, fund: list[str] | None = None) -> Node:
    """Start the embedded EVM (py-evm) as a JSON-RPC server on loopback — for machines without
    anvil. Its chain lives in memory; ``fund`` addresses get ether (anvil's development account
    always does, so it can deploy and fund as on anvil)."""
    port = port or _free_port()
    fund = [EvmKey(ANVIL_DEV_KEY).address, *(fund or [])]
    args = [sys.executable, "-m", "derelayl.evm.rpc_server", "--port", str(port)]
    for address in fund:
        args += ["--fund", address]
    return _start(args, port, "embedded-rpc", EvmKey(ANVIL_DEV_KEY))


def _start(args: list[str], port: int, kind: str, funder: EvmKey, timeout: float = 60.0) -> Node:
    """Run a chain server in its own process group (dies with us) and wait until it answers."""
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace").strip() if process.stderr else ""
            raise LedgerError(f"{kind} exited at start ({err.splitlines()[-1] if err else 'no message'})")
        try:
            node = connect(url, funder=funder, kind=kind)
            node.process = process
            return node
        except LedgerError:
            if time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                raise LedgerError(f"{kind} did not answer on {url} within {timeout:.0f} s") from None
            time.sleep(0.1)


def connect(url: str, funder: EvmKey | None = None, chain_id: int | None = None, kind: str = "rpc") -> Node:
    """A JSON-RPC node at ``url``; checks that it answers (and its chain id, if given)."""
    from web3 import Web3

    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--rpc must be an http(s) URL, got {url!r}")
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
    try:
        actual = int(w3.eth.chain_id)
    except Exception as exc:
        raise LedgerError(f"cannot reach an Ethereum node at {url} ({type(exc).__name__})") from None
    if chain_id is not None and actual != chain_id:
        raise LedgerError(f"the node at {url} is chain {actual}, not the expected chain {chain_id}")
    return Node(w3, kind, funder, url=url)
