"""A FastAPI app served for real on loopback (uvicorn in a thread) for the length of an
``ExitStack``; shared by the node API tests."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import httpx


def serve(stack: contextlib.ExitStack, app: Any) -> httpx.Client:
    """Start ``app`` on a free port; an httpx client on it (both closed with ``stack``)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="http", daemon=True)
    thread.start()
    stack.callback(thread.join, 10)
    stack.callback(setattr, server, "should_exit", True)
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the HTTP server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0))


def node_on_anvil(stack: contextlib.ExitStack, name: str, spec: Any, seed: int, home: Any) -> tuple[Any, ...]:
    """A contract on a fresh anvil for ``spec.of`` funded participants, and participant 0's
    ``Node`` as ``runner.run_node`` builds it (without signals or its loop): (anvil, keys,
    the other participants' client, node). Everything closes with ``stack``."""
    from dataclasses import replace

    from derelayl.evm.client import ContractClient
    from derelayl.evm.node import ANVIL_DEV_KEY, anvil
    from derelayl.evm.signing import EvmKey, derive_evm_keys
    from derelayl.node.core import Node
    from derelayl.node.peers import PeerBook
    from derelayl.node.runner import _brain_factory, genesis_digest
    from derelayl.protocol.params import preset

    chain = anvil()
    stack.callback(chain.close)
    keys = derive_evm_keys(name, spec.of)
    chain.fund([k.address for k in keys])
    client = ContractClient.deploy(
        chain,
        replace(preset("reference"), phase_timeout=40),
        seed.to_bytes(32, "big"),
        [k.public for k in keys],
        EvmKey(ANVIL_DEV_KEY),
        mix_randomness=False,
        genesis_model=genesis_digest(spec),
    )
    node = Node(keys[0], home, chain, client.address, _brain_factory(spec, seed), PeerBook([]))
    stack.callback(node.peers.close)
    return chain, keys, client, node
