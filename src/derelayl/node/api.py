"""A node's HTTP API (FastAPI). Thin: every handler decodes strictly, calls the ``Node``, and
maps its refusals to a 4xx with one clear reason. Nothing is stored for a refused request.

- ``GET /status`` (anyone): the key it serves, round, phase.
- ``POST /messages`` (a signed bid, commitment, co-tester scores or join): 202; 400
  malformed, 403 bad signature, 409 other round, unknown sender or already received (a replay),
  413 too large, 429 inbox full.
- ``GET /models/<sha256>`` (a participant the chain entitles now, signed request): the model's
  bytes; 400 malformed, 403 not entitled / bad signature / replayed, 404 not held, 409 other
  round.
- ``GET /cases/<sha256>`` (anyone, once published): the test cases' bytes; 404.
- ``GET /fhe/<sha256>`` (anyone; encrypted scoring): an encrypted model or public key; 404.
- ``POST /fhe/decrypt/<commitment>`` (a tester the chain entitles now, signed like a model
  fetch; body: a masked query): the trainer's reply; 400 malformed, 403, 404 not this node's
  commitment, 409 other round, 413 too large. (``derelayl.node.fhe``.)
- ``POST /peers`` (anyone): ``{"url": ...}`` announces a node; 400 malformed, 413 too large.
  ``GET /peers``: the URLs this node knows (peer exchange).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from derelayl import jsonsafe
from derelayl.errors import DerelaylError, MalformedError
from derelayl.fhe.ckks import FheError
from derelayl.node.core import Node
from derelayl.node.fhe import MAX_QUERY_BYTES
from derelayl.node.wire import FetchRequest, message_from_json

__all__ = ["MAX_BODY", "make_app"]

MAX_BODY = 64 << 10
"""Bytes a posted message may have (512 scores as JSON are ~12 KB)."""


def _error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


def _digest(text: str) -> bytes:
    if len(text) != 64:
        raise MalformedError("a digest is 64 hex digits")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise MalformedError("a digest is 64 hex digits") from None
    if len(raw) != 32:  # fromhex skips spaces
        raise MalformedError("a digest is 64 hex digits")
    return raw


def _refused(exc: Exception) -> JSONResponse:
    """A refused fetch or query as its 4xx: malformed 400 (a query CKKS cannot take too), not
    entitled 403, not held 404, another round 409 ("try again")."""
    for kinds, status in (
        ((MalformedError, FheError), 400),
        (PermissionError, 403),
        (FileNotFoundError, 404),
        (LookupError, 409),
    ):
        if isinstance(exc, kinds):
            return _error(status, str(exc))
    return _error(500, str(exc))


def _by_digest(get: Any, digest: str) -> Response:
    """Bytes anyone may have by their SHA-256 (published cases, encrypted models, keys)."""
    try:
        data = get(_digest(digest))
    except MalformedError as exc:
        return _error(400, str(exc))
    except FileNotFoundError as exc:
        return _error(404, str(exc))
    return Response(data, media_type="application/octet-stream")


async def _read(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is declared or read to be over ``limit`` bytes (the
    rest is never read: a huge body costs no memory and no wait)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def make_app(node: Node) -> FastAPI:
    app = FastAPI(title="derelayl node", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/status")
    def status() -> dict[str, Any]:
        view = node.view
        return {
            "address": node.signer.address,
            "key": node.signer.public.hex(),
            "participant": view.me,
            "round": view.round,
            "phase": view.phase.name.lower(),
            "contract": node.client.address,
        }

    @app.post("/messages")
    async def post_message(request: Request) -> Response:
        body = await _read(request, MAX_BODY)
        if body is None:
            return _error(413, f"a message is at most {MAX_BODY} bytes")
        try:
            signed = message_from_json(jsonsafe.loads(body))
        except (ValueError, RecursionError):
            return _error(400, "the body is not JSON")
        except MalformedError as exc:
            return _error(400, str(exc))
        try:
            result = node.accept(signed)
        except FileExistsError as exc:
            return _error(409, str(exc))
        except PermissionError as exc:
            return _error(403, str(exc))
        except OverflowError as exc:
            return _error(429, str(exc))
        except DerelaylError as exc:
            return _error(409, str(exc))
        return JSONResponse({"result": result}, status_code=202)

    @app.post("/peers")
    async def post_peer(request: Request) -> Response:
        body = await _read(request, 1024)
        if body is None:
            return _error(413, "an announcement is at most 1024 bytes")
        try:
            url = jsonsafe.loads(body)["url"]
        except (ValueError, KeyError, TypeError, RecursionError):
            return _error(400, 'an announcement is {"url": "http://host:port"}')
        if not isinstance(url, str) or not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]{1,200}", url):
            return _error(400, "url must be http(s)://host:port")
        added = node.peers.add(url)
        return JSONResponse({"result": "added" if added else "known"}, status_code=202)

    @app.get("/peers")
    def get_peers() -> dict[str, Any]:
        return {"peers": list(node.peers.urls)}

    @app.get("/models/{digest}")
    def get_model(digest: str, request: Request) -> Response:
        try:
            fetch = FetchRequest.parse(digest, dict(request.headers))
            hint = request.headers.get("x-phase", "")
            data = node.model_for(fetch, int(hint) if hint in ("0", "1", "2", "3") else None)
        except (DerelaylError, OSError, LookupError) as exc:
            return _refused(exc)
        return Response(data, media_type="application/octet-stream")

    @app.get("/fhe/{digest}")
    def get_fhe_object(digest: str) -> Response:
        if node.fhe is None:
            return _error(404, "this node does not do encrypted scoring")
        return _by_digest(node.fhe.serve_object, digest)

    @app.post("/fhe/decrypt/{digest}")
    async def post_fhe_query(digest: str, request: Request) -> Response:
        if node.fhe is None:
            return _error(404, "this node does not do encrypted scoring")
        body = await _read(request, MAX_QUERY_BYTES)
        if body is None:
            return _error(413, f"a query is at most {MAX_QUERY_BYTES} bytes")
        try:
            fetch = FetchRequest.parse(digest, dict(request.headers))
            reply = await run_in_threadpool(node.fhe.answer, fetch, body)
        except (DerelaylError, OSError, LookupError) as exc:
            return _refused(exc)
        return Response(reply, media_type="application/octet-stream")

    @app.get("/cases/round/{round_}")
    def get_round_cases(round_: str) -> Response:
        if not round_.isdigit() or len(round_) > 10:
            return _error(400, "a round is a non-negative integer")
        try:
            data = node.case_exchange.serve(int(round_))
        except LookupError as exc:
            return _error(425, str(exc))
        except FileNotFoundError as exc:
            return _error(404, str(exc))
        return Response(data, media_type="application/octet-stream")

    @app.get("/cases/{digest}")
    def get_cases(digest: str) -> Response:
        return _by_digest(node.cases, digest)

    return app
