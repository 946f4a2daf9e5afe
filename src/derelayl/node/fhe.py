"""Encrypted scoring between nodes (``derelayl node --fhe on``; ``docs/fhe.md``).

A tester reads a commitment's manifest through the usual model fetch (``GET /models/<d>``,
the same entitlement), then asks the trainer's node for what the manifest names:

- ``GET /fhe/<sha256>`` (anyone): an encrypted model or a public key this node holds. Both
  are safe to hand to anyone; the tester re-hashes what it gets.
- ``POST /fhe/decrypt/<commitment>`` (signed like a model fetch, by a participant the chain
  entitles to that commitment now: the round's testers): the body is the tester's masked
  query; the answer is the trainer's rounded per-case sums (float64, little-endian). Only
  this node's own commitments are answered, each signed request once, and each requester
  one query per commitment and round (the same query again is answered again: a retry).

A selected model's file goes to the next trainer as before: the file digest is looked up
through the commitment that names it (``commitment_of``).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from derelayl.errors import DerelaylError, ModelError
from derelayl.fhe.query import reply_shape
from derelayl.fhe.scoring import FheScoring, read_manifest
from derelayl.node.wire import FetchRequest

if TYPE_CHECKING:
    from derelayl.node.core import Node

__all__ = ["MAX_QUERY_BYTES", "FheExchange"]

MAX_QUERY_BYTES = 128 << 20
"""A query for 500 pooled cases is ~12 MB."""


class FheExchange:
    def __init__(self, node: Node, scoring: FheScoring) -> None:
        self.node, self.scoring = node, scoring
        self.asked: dict[tuple[int, int, bytes], bytes] = {}
        """(round, requester, commitment) -> the digest of the one query answered for it."""
        scoring.fetch_object = self.fetch_object
        scoring.ask = self.ask

    # ------------------------------------------------------------ serving

    def serve_object(self, digest: bytes) -> bytes:
        if not self.scoring.store.has(digest):
            raise FileNotFoundError("this node holds no encrypted model or key with that digest")
        return self.scoring.store.get(digest)

    def answer(self, request: FetchRequest, query: bytes) -> bytes:
        """The reply to a tester's query about one of this node's commitments;
        ``PermissionError`` if the chain does not entitle the requester now, ``LookupError``
        if this node is at another round."""
        node = self.node
        who = node.entitled_requester(request)
        me, store = node.view.me, node.models.store
        manifest = read_manifest(store.get(request.digest)) if store.has(request.digest) else None
        if me is None or manifest is None or manifest["trainer"] != me:
            raise FileNotFoundError("that is not an encrypted commitment of this node's participant")
        # one query per requester, commitment and round: a decryption oracle would let a
        # requester read the model's outputs on as many inputs as it likes
        asked, digest = (request.round, who, request.digest), hashlib.sha256(query).digest()
        with node.lock:
            if self.asked.setdefault(asked, digest) != digest:
                raise PermissionError("one query per commitment and round: this requester has asked another")
            for old in [k for k in self.asked if k[0] < request.round]:
                del self.asked[old]
        node.spend(request)
        reply = self.scoring.decrypt(me, manifest, query)  # a malformed query: FheError
        node.stats["fhe_answers"] += 1
        return np.ascontiguousarray(reply, dtype="<f8").tobytes()

    def commitment_of(self, digest: bytes) -> bytes:
        """The commitment naming model file ``digest`` among those the chain entitles anyone to
        now (``digest`` itself if none does)."""
        models = self.node.models
        if digest not in models.committed_as:
            for commitment in self.node.view.entitled:
                if models.store.has(commitment):
                    manifest = read_manifest(models.store.get(commitment))
                    if manifest is not None:
                        models.committed_as[bytes.fromhex(manifest["model"])] = commitment
        return models.committed_as.get(digest, digest)

    # ------------------------------------------------------------ asking

    def fetch_object(self, digest: bytes, trainer: int) -> bytes:
        node, last = self.node, None
        for state in node.while_acting(f"encrypted object {digest.hex()[:16]}"):
            try:
                data = node.peers.fetch_fhe(state.keys[trainer], digest)
                node.stats["bytes_in"] += len(data)
                return data
            except (LookupError, OSError, DerelaylError) as exc:
                last = exc
        raise ModelError(f"encrypted object {digest.hex()[:16]} could not be fetched ({last})")

    def ask(self, trainer: int, commitment: bytes, query: bytes) -> NDArray[np.float64]:
        node, last = self.node, None
        shape = reply_shape(query)
        for state in node.while_acting(f"decryption of {commitment.hex()[:16]}"):
            request = FetchRequest.make(node.signer, state.round, commitment)
            try:
                data = node.peers.ask_decrypt(state.keys[trainer], request, query)
            except (LookupError, OSError, DerelaylError) as exc:
                last = exc
                continue
            node.stats["bytes_in"] += len(data)
            if len(data) != 8 * int(np.prod(shape)):
                raise ModelError(f"trainer {trainer} answered {len(data)} bytes, expected {8 * int(np.prod(shape))}")
            return np.frombuffer(data, dtype="<f8").reshape(shape).copy()
        raise ModelError(f"trainer {trainer} did not answer the query on {commitment.hex()[:16]} ({last})")
