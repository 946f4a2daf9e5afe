"""What a participant holds and what it moves: ``ModelBook`` (the models the chain names, by
digest, read through the content-addressed store, with a small cache) and ``Traffic`` (bytes
moved, by kind, counted where they move). Shared by every participant with real models
(``RelayBrain``) and by the runs that add up its traffic.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

from derelayl.errors import ModelError
from derelayl.fhe.scoring import read_manifest
from derelayl.learning.serialization import Weights, model_digest, param_bytes, weights_from_bytes, weights_to_bytes
from derelayl.learning.store import ModelStore
from derelayl.protocol.state import State

__all__ = ["ModelBook", "Traffic"]

_CACHE = 64


@dataclass
class Traffic:
    """Bytes moved and work done, cumulative; add brains' traffic with ``Traffic.total``."""

    owner_to_trainer: int = 0
    trainer_to_tester: int = 0
    commit_miner_copies: int = 0
    test_cases: int = 0
    fhe_exchange: int = 0
    """Encrypted scoring: queries to trainers, their replies and trainers' public keys."""
    rechecks: int = 0
    """Encrypted re-checks (``RelayBrain.rechecks``): the ciphertexts, queries, replies and keys
    a trainer moves to re-score models it does not hold."""
    local_epochs: int = 0
    samples: int = 0

    @property
    def total_bytes(self) -> int:
        moved = (self.owner_to_trainer, self.trainer_to_tester, self.commit_miner_copies, self.test_cases)
        return sum(moved) + self.fhe_exchange + self.rechecks

    @classmethod
    def total(cls, parts: Iterable[Traffic]) -> Traffic:
        out = cls()
        for part in parts:
            for f in fields(cls):
                setattr(out, f.name, getattr(out, f.name) + getattr(part, f.name))
        return out


class ModelBook:
    """Where models are found: their bytes in a content-addressed ``ModelStore``, and the
    public index from ledger model id to digest, followed from the chain (``follow``).

    The index is chain data, so one book may serve every agent of a process; a node would
    build its own from the blocks it verifies. Decoded weights are cached by digest (bytes
    are re-hashed when first read)."""

    def __init__(self, store: ModelStore, genesis: bytes, fetch: Callable[[bytes], bytes] | None = None) -> None:
        self.store = store
        self.fetch = fetch
        """Where a model missing from the store comes from (a node asks the peer that holds it);
        its bytes are re-hashed before they are stored."""
        self._cache: OrderedDict[bytes, Weights] = OrderedDict()
        self.committed_as: dict[bytes, bytes] = {}
        """Model file digest -> the commitment (manifest) that names it (encrypted scoring)."""
        self.index: dict[int, bytes] = {0: store.put(genesis)}
        self.model_bytes = param_bytes(self.load(self.index[0]))
        """Bytes one transfer of a model moves (float32 parameters, as for every method)."""

    @classmethod
    def of_genesis(cls, store: ModelStore, weights: Weights, meta: dict[str, Any]) -> ModelBook:
        """A book whose model 0 is ``weights`` (the shared initial model)."""
        return cls(store, weights_to_bytes(weights, {**meta, "round": -1, "trainer": 0, "parent": ""}))

    def follow(self, state: State) -> None:
        """Call after every applied block (and while a stored chain is replayed): after a
        commit block the state names each new model id's committed digest."""
        if state.commitments:
            self.index.update(zip(state.commits.model_id.tolist(), state.commitments, strict=True))

    def digest_of(self, model_id: int) -> bytes:
        digest = self.index.get(int(model_id))
        if digest is None:
            raise ModelError(f"model id {model_id} has no committed digest in the chain followed so far")
        return digest

    def raw(self, digest: bytes) -> bytes:
        """A model's (or commitment manifest's) bytes, fetched from a peer if missing."""
        if self.fetch is not None and not self.store.has(digest):
            data = self.fetch(digest)
            # Verify the bytes are the model the chain names before keeping them
            if model_digest(data) != digest:
                raise ModelError(f"model {digest.hex()[:16]} from a peer hashes to {model_digest(data).hex()[:16]}")
            self.store.put(data)
        return self.store.get(digest)

    def load(self, digest: bytes) -> Weights:
        cached = self._cache.get(digest)
        if cached is None:
            data = self.raw(digest)
            manifest = read_manifest(data)  # an encrypted-scoring commitment names its model file
            if manifest is not None:
                self.committed_as[bytes.fromhex(manifest["model"])] = digest
                return self.load(bytes.fromhex(manifest["model"]))
            cached, _ = weights_from_bytes(data, name=f"model {digest.hex()[:16]}")
            self._cache[digest] = cached
            if len(self._cache) > _CACHE:
                self._cache.popitem(last=False)
        return cached

    def weights(self, model_id: int) -> Weights:
        return self.load(self.digest_of(model_id))
