"""The other nodes a node talks to, over HTTP (httpx).

A ``PeerBook`` starts from a list of URLs (``--peers``); each peer's ``/status`` says which
participant key it serves, so a model can be asked of the node that holds it. A phase's
messages go to its drawn miner and the volunteers after it (``send_to``: they are who can
produce the phase), to everyone while a peer's key is not yet known; a peer that does not
answer is retried on the next call, never waited for.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from derelayl.errors import DerelaylError
from derelayl.learning.data import MAX_CASES_BYTES
from derelayl.node.wire import FetchRequest, message_to_json
from derelayl.protocol.messages import Signed

__all__ = ["PeerBook"]

log = logging.getLogger(__name__)
MAX_MODEL_BYTES = 256 << 20


class PeerBook:
    def __init__(self, urls: list[str], own_url: str | None = None, timeout: float = 5.0) -> None:
        self.own_url = (own_url or "").rstrip("/")
        self.urls = [u.rstrip("/") for u in urls if u.rstrip("/") != self.own_url]
        self.client = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=64))
        self.by_key: dict[bytes, str] = {}
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="peers")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    MAX_PEERS = 1024

    def add(self, url: str) -> bool:
        """Add a peer's URL (an announcement, or --peers); False if it was known or the book
        is full. A URL is only used for models once its /status names a registered key."""
        url = url.rstrip("/")
        with self.lock:
            if url in self.urls or url == self.own_url or len(self.urls) >= self.MAX_PEERS:
                return False
            self.urls.append(url)
            return True

    def announce(self, own_url: str) -> None:
        """Tell every peer where this node serves (they add it to their books)."""
        for url in list(self.urls):
            self.pool.submit(self._announce, url, own_url)

    def _announce(self, url: str, own_url: str) -> None:
        try:
            self.client.post(f"{url}/peers", json={"url": own_url})
        except httpx.HTTPError as exc:
            log.debug("announce to %s failed: %s", url, exc)

    def exchange(self) -> None:
        """Learn the peers' peers (one level of gossip): a node that joined from elsewhere
        announced itself to some of them."""
        for url in list(self.urls):
            try:
                answer = self.client.get(f"{url}/peers", timeout=2.0).json()["peers"]
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                continue
            for other in answer[: self.MAX_PEERS] if isinstance(answer, list) else []:
                if isinstance(other, str) and other.startswith(("http://", "https://")) and len(other) < 200:
                    self.add(other)

    def resolve(self) -> None:
        """Ask every peer not yet known which key it serves."""
        known = set(self.by_key.values())
        for url in list(self.urls):
            if url in known:
                continue
            try:
                answer = self.client.get(f"{url}/status", timeout=2.0)
                key = bytes.fromhex(answer.json()["key"])
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                continue
            with self.lock:
                self.by_key[key] = url

    def broadcast(self, messages: list[Signed]) -> None:
        body = [message_to_json(m) for m in messages]
        for url in list(self.urls):
            self.pool.submit(self._post, url, body)

    def send_to(self, keys: list[bytes], messages: list[Signed]) -> None:
        """Post to the nodes serving ``keys`` (the phase's miner and the volunteers after it);
        to everyone if one of them is not known yet."""
        urls = [self.by_key.get(k) for k in keys]
        if None in urls:
            self.resolve()
            urls = [self.by_key.get(k) for k in keys]
        if None in urls:
            self.broadcast(messages)
            return
        body = [message_to_json(m) for m in messages]
        for url in dict.fromkeys(u for u in urls if u is not None):
            self.pool.submit(self._post, url, body)

    def _post(self, url: str, body: list[dict[str, object]]) -> None:
        for item in body:
            try:
                self.client.post(f"{url}/messages", json=item)
            except httpx.HTTPError as exc:
                log.debug("post to %s failed: %s", url, exc)
                return

    def fetch_cases(self, key: bytes, round_: int) -> bytes:
        """A tester's published cases of ``round_`` from its node. ``LookupError``: not there
        yet (retry)."""
        return self._get(key, f"/cases/round/{round_}", MAX_CASES_BYTES)

    def fetch_fhe(self, key: bytes, digest: bytes) -> bytes:
        """An encrypted model or public key from the node serving ``key`` (encrypted scoring)."""
        return self._get(key, f"/fhe/{digest.hex()}", MAX_MODEL_BYTES)

    def _get(self, key: bytes, path: str, limit: int) -> bytes:
        url = self._url_of(key)
        try:
            answer = self.client.get(f"{url}{path}")
        except httpx.HTTPError as exc:
            raise LookupError(f"{url}: {type(exc).__name__}") from None
        if answer.status_code != 200:
            raise LookupError(f"{url}: {answer.status_code}")
        if len(answer.content) > limit:
            raise DerelaylError(f"{url} sent more than {limit} bytes for {path}")
        return answer.content

    def ask_decrypt(self, key: bytes, request: FetchRequest, query: bytes) -> bytes:
        """The trainer's reply to a masked query on its commitment ``request.digest``."""
        url = self._url_of(key)
        try:
            answer = self.client.post(
                f"{url}/fhe/decrypt/{request.digest.hex()}", content=query, headers=request.headers(), timeout=60.0
            )
        except httpx.HTTPError as exc:
            raise LookupError(f"{url}: {type(exc).__name__}") from None
        if answer.status_code in (404, 409, 425, 503):
            raise LookupError(f"{url}: {answer.status_code}")
        if answer.status_code != 200:
            raise DerelaylError(f"{url} refused the query: {answer.status_code} {answer.content[:200]!r}")
        return answer.content

    def _url_of(self, key: bytes) -> str:
        url = self.by_key.get(key)
        if url is None:
            self.resolve()
            url = self.by_key.get(key)
        if url is None:
            self.exchange()
            self.resolve()
            url = self.by_key.get(key)
        if url is None:
            raise LookupError("no peer serves that participant")
        return url

    def fetch(self, key: bytes, request: FetchRequest, phase: int | None = None) -> bytes:
        """A model from the node serving ``key``. ``LookupError``: not there yet (retry);
        ``DerelaylError``: refused."""
        url = self._url_of(key)
        try:
            headers = request.headers() | ({} if phase is None else {"X-Phase": str(phase)})
            with self.client.stream("GET", f"{url}/models/{request.digest.hex()}", headers=headers) as answer:
                if answer.status_code in (404, 409, 425, 503):
                    raise LookupError(f"{url}: {answer.status_code}")
                if answer.status_code != 200:
                    raise DerelaylError(f"{url} refused the model: {answer.status_code} {answer.read()[:200]!r}")
                data = bytearray()
                for chunk in answer.iter_bytes():
                    data += chunk
                    if len(data) > MAX_MODEL_BYTES:
                        raise DerelaylError(f"{url} sent more than {MAX_MODEL_BYTES} bytes")
                return bytes(data)
        except httpx.HTTPError as exc:
            raise LookupError(f"{url}: {type(exc).__name__}") from None
