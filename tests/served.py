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
