"""Encrypted scoring inside a round: what a trainer commits and how a tester scores it.

With encrypted scoring on, a trainer's commitment is not the digest of its model file but of
a small *manifest* naming three content-addressed objects: the model file (kept by the
trainer, handed to the next trainer if the model is selected), the encrypted model (sent to
the testers) and the trainer's public key. Signing the manifest's digest binds all three.

A tester fetches the encrypted model and the public key, evaluates on its own cases with
masks drawn from a seed of its own (``query.evaluate``), asks the model's trainer to decrypt
(``query.decrypt_query``), unmasks and counts the correct predictions. The whole exchange is a
``Transcript``; ``check`` re-derives a claimed score from it, the published cases and the
objects the manifest names, so any node can refuse a wrong score. What it cannot check (the
trainer's decryption) and why that does not pay is in ``docs/fhe.md``.

``FheScoring`` serves every participant of one process (``derelayl run``, the experiment):
keys by participant (written to ``key_dir`` before first use, so a resumed run has them),
one store for encrypted models and public keys, and the trainer side of each decryption.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from derelayl import jsonsafe
from derelayl.fhe.ckks import MAGIC, SCHEME, EncryptedModel, FheError, KeyPair, QuadMLP, encrypt_model
from derelayl.fhe.query import Cases, decrypt_query, evaluate, logits_from_reply
from derelayl.folders import write_atomic
from derelayl.learning.store import DirModelStore, MemoryModelStore, ModelStore

__all__ = [
    "MANIFEST_MAGIC",
    "NEAR_TIE",
    "FheScoring",
    "Transcript",
    "check_model",
    "encrypted_scoring",
    "honest_counts",
    "read_manifest",
    "shuffled",
]

MANIFEST_MAGIC = b"DRLFHE-COMMIT1\n"
_FIELDS = {"model", "ciphertext", "key", "scheme", "trainer"}


def read_manifest(data: bytes) -> dict[str, Any] | None:
    """The manifest in ``data``, or None if ``data`` is a plain model file."""
    if not data.startswith(MANIFEST_MAGIC):
        return None
    try:
        m = jsonsafe.loads(data[len(MANIFEST_MAGIC) :])
        if not isinstance(m, dict) or set(m) != _FIELDS:
            raise ValueError(f"fields {sorted(m) if isinstance(m, dict) else type(m).__name__}")
        for k in ("model", "ciphertext", "key", "scheme"):
            if not isinstance(m[k], str) or len(bytes.fromhex(m[k])) != 32:
                raise ValueError(f"{k} is not a 32-byte hex digest")
        if not isinstance(m["trainer"], int) or isinstance(m["trainer"], bool) or m["trainer"] < 0:
            raise ValueError("trainer is not a participant index")
    except (ValueError, TypeError) as exc:
        raise FheError(f"commitment manifest is malformed ({exc})") from exc
    if m["scheme"] != SCHEME.digest().hex():
        raise FheError("commitment manifest names another FHE scheme")
    return m


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class Transcript:
    """One tester's encrypted scoring of one commitment: enough, with the published cases,
    to re-check the score (``FheScoring.check``)."""

    commitment: bytes
    mask_seed: int
    query_digest: bytes
    reply: NDArray[np.float64]
    """The trainer's rounded, masked per-case sums (signed by the trainer on a network)."""
    score: int
    bytes_moved: dict[str, int]
    order_seed: int | None = None
    """The cases went into the query in the order this seed shuffles them to (``shuffled``)."""


def shuffled(x: NDArray[Any], y: NDArray[Any], order_seed: int | None) -> tuple[NDArray[Any], NDArray[Any]]:
    """``(x, y)`` in the order a scorer's secret ``order_seed`` puts them in (as given: None).
    Once cases are published (an appeal, a re-check), the model's trainer knows them and their
    labels; were they queried in the published order, it could add to each slot of its reply
    whatever makes its model right there, and no mask would hide that. Shuffled, it cannot tell
    which slot holds which case."""
    if order_seed is None:
        return x, y
    order = np.random.default_rng(order_seed).permutation(len(y))
    return np.asarray(x)[order], np.asarray(y)[order]


class FheScoring:
    def __init__(
        self,
        models_store: ModelStore,
        load_plain: Callable[[bytes], Any],
        store: ModelStore,
        key_dir: Path | None = None,
    ) -> None:
        """``models_store``: where manifests go (the model store: commitments live there);
        ``load_plain``: weights by model digest (``ModelBook.load``); ``store``: encrypted
        models and public keys; ``key_dir``: where each participant's secret key is kept."""
        self.models_store = models_store
        self.load_plain = load_plain
        self.store = store
        self.key_dir = key_dir
        self._keys: dict[int, KeyPair] = {}
        self._publics: dict[int, bytes] = {}
        self._delivered: set[tuple[int, bytes]] = set()
        self.read_commitment: Callable[[bytes], bytes] = models_store.get
        """A commitment's bytes (a node fetches the ones it lacks: ``ModelBook.raw``)."""
        self.fetch_object: Callable[[bytes, int], bytes] | None = None
        """An encrypted model or public key this process lacks, by (digest, trainer): a node
        asks the trainer's node. Re-hashed before it is kept."""
        self.ask: Callable[[int, bytes, bytes], NDArray[np.float64]] | None = None
        """(trainer, commitment, query) -> reply from the trainer's node; None: in process."""
        self.seconds: Counter[str] = Counter()
        """Where the time goes: keygen, encrypt, evaluate, decrypt (cumulative)."""
        self.measure_clear = False
        """Measurement only (benchmarks): also score each model in the clear from its file and
        record (commitment, encrypted score, clear score, max logit error) in ``agreement``."""
        self.near_tie = NEAR_TIE
        """How close a case's two largest logits may be for ``honest`` to let it go either way."""
        self.agreement: list[tuple[bytes, int, int, float]] = []
        self._cases: Cases | None = None

    # ------------------------------------------------------------------ keys

    def key(self, who: int) -> KeyPair:
        if who not in self._keys:
            path = None if self.key_dir is None else self.key_dir / f"participant-{who}.key"
            if path is not None and path.exists():
                self._keys[who] = KeyPair.from_secret(path.read_bytes(), str(path))
            else:
                start = time.perf_counter()
                self._keys[who] = KeyPair.generate()
                self.seconds["keygen"] += time.perf_counter() - start
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_atomic(path, self._keys[who].secret())
        return self._keys[who]

    def public_digest(self, who: int) -> bytes:
        if who not in self._publics:
            self._publics[who] = self.store.put(self.key(who).public())
        return self._publics[who]

    # ------------------------------------------------------------------ trainer side

    def commit(self, me: int, weights: Any, model_digest: bytes) -> tuple[bytes, int]:
        """Encrypt ``weights`` under ``me``'s key; (the manifest's digest, to commit; bytes
        of the encrypted model)."""
        key = self.key(me)
        start = time.perf_counter()
        encrypted = encrypt_model(key, QuadMLP.from_weights(weights, f"model {model_digest.hex()[:16]}"))
        self.seconds["encrypt"] += time.perf_counter() - start
        manifest = {
            "model": model_digest.hex(),
            "ciphertext": self.store.put(encrypted).hex(),
            "key": self.public_digest(me).hex(),
            "scheme": SCHEME.digest().hex(),
            "trainer": me,
        }
        text = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        return self.models_store.put(MANIFEST_MAGIC + text), len(encrypted)

    def decrypt(self, trainer: int, manifest: dict[str, Any], query: bytes) -> NDArray[np.float64]:
        """What the trainer of a committed model answers a tester's query with."""
        plain = QuadMLP.from_weights(self.load_plain(bytes.fromhex(manifest["model"])))
        key = self.key(trainer)
        start = time.perf_counter()
        reply = decrypt_query(key, plain, query)
        self.seconds["decrypt"] += time.perf_counter() - start
        return reply

    # ------------------------------------------------------------------ tester side

    def manifest(self, commitment: bytes) -> dict[str, Any] | None:
        return read_manifest(self.read_commitment(commitment))

    def score(
        self,
        tester: int,
        commitment: bytes,
        x: NDArray[Any],
        y: NDArray[Any],
        mask_seed: int,
        order_seed: int | None = None,
    ) -> Transcript:
        """``tester`` scores ``commitment`` on cases ``(x, y)`` under encryption, the cases
        shuffled by ``order_seed`` (``shuffled``), the outputs masked by ``mask_seed``."""
        x, y = shuffled(x, y, order_seed)
        manifest = self.manifest(commitment)
        if manifest is None:
            raise FheError(f"commitment {commitment.hex()[:16]} is a plain model, not an encrypted one")
        key_digest, public, encrypted = self._objects(manifest)
        start = time.perf_counter()
        query = evaluate(public, encrypted, x, mask_seed, self.encoded(x, encrypted))
        self.seconds["evaluate"] += time.perf_counter() - start
        if self.ask is None:
            reply = self.decrypt(manifest["trainer"], manifest, query)
        else:
            reply = self.ask(manifest["trainer"], commitment, query)
        moved = {"ciphertext": len(encrypted.data), "query": len(query), "reply": reply.size * 8, "key": 0}
        if (tester, key_digest) not in self._delivered:
            self._delivered.add((tester, key_digest))
            moved["key"] = len(public)
        score = _count(reply, mask_seed, y, encrypted.hidden)
        if self.measure_clear:
            clear = QuadMLP.from_weights(self.load_plain(bytes.fromhex(manifest["model"]))).logits(x)
            logits = logits_from_reply(reply, mask_seed, len(y), encrypted.hidden)
            right = int((clear.argmax(axis=1) == np.asarray(y)).sum())
            self.agreement.append((commitment, score, right, float(np.abs(logits - clear).max())))
        return Transcript(commitment, mask_seed, _digest(query), reply, score, moved, order_seed)

    def check(self, transcript: Transcript, x: NDArray[Any], y: NDArray[Any], claimed: int) -> None:
        """Refuse (``FheError``) a claimed score that the transcript does not support: the
        query must be the re-evaluation of the committed encrypted model on the published
        cases with the revealed mask seed, and the score what the reply gives."""
        manifest = self.manifest(transcript.commitment)
        if manifest is None:
            raise FheError(f"commitment {transcript.commitment.hex()[:16]} is not an encrypted model")
        _, public, encrypted = self._objects(manifest)
        x, y = shuffled(x, y, transcript.order_seed)
        query = evaluate(public, encrypted, x, transcript.mask_seed, self.encoded(x, encrypted))
        if _digest(query) != transcript.query_digest:
            raise FheError(
                f"model {transcript.commitment.hex()[:16]}: the query answered is not the evaluation on these cases"
            )
        supported = _count(transcript.reply, transcript.mask_seed, y, encrypted.hidden)
        if claimed != supported:
            who = transcript.commitment.hex()[:16]
            raise FheError(f"model {who}: claimed score {claimed}, the ciphertexts support {supported}")

    def honest(self, transcript: Transcript, y: NDArray[Any]) -> tuple[int, ...]:
        """The counts an honest scoring of ``transcript``'s model on cases ``y`` may give, read
        from this scorer's own decryption (``honest_counts``)."""
        manifest = self.manifest(transcript.commitment)
        if manifest is None:
            raise FheError(f"commitment {transcript.commitment.hex()[:16]} is not an encrypted model")
        hidden = self._objects(manifest)[2].hidden
        y = shuffled(y, y, transcript.order_seed)[1]
        logits = logits_from_reply(transcript.reply, transcript.mask_seed, len(y), hidden)
        return honest_counts(logits, y, self.near_tie)

    def encoded(self, x: NDArray[Any], model: EncryptedModel) -> Cases:
        """``x`` encoded for ``model``: the last cases encoded if these are they (one entry is
        enough: a tester scores all of a round's models on its cases in a row; 34 MB per 100
        cases)."""
        if self._cases is None or not self._cases.fits(x, model):
            self._cases = None  # (freed before the next one is made)
            self._cases = Cases.encode(x, model.features, model.hidden)
        return self._cases

    def _objects(self, manifest: dict[str, Any]) -> tuple[bytes, bytes, EncryptedModel]:
        key_digest = bytes.fromhex(manifest["key"])
        public = self._object(key_digest, manifest["trainer"])
        encrypted = EncryptedModel.parse(self._object(bytes.fromhex(manifest["ciphertext"]), manifest["trainer"]))
        return key_digest, public, encrypted

    def _object(self, digest: bytes, trainer: int) -> bytes:
        if not self.store.has(digest) and self.fetch_object is not None:
            data = self.fetch_object(digest, trainer)
            # Verify the bytes are the object the manifest names before keeping them
            if _digest(data) != digest:
                raise FheError(
                    f"object {digest.hex()[:16]} from trainer {trainer} hashes to {_digest(data).hex()[:16]}"
                )
            self.store.put(data)
        return self.store.get(digest)

    # ------------------------------------------------------------------ housekeeping

    def prune(self, keep: list[bytes]) -> int:
        """Discard stored encrypted models not named by the manifests in ``keep`` (the live
        models: a settled round's other ciphertexts are never scored again); returns how
        many. Public keys stay."""
        wanted = set()
        for commitment in keep:
            manifest = self.manifest(commitment) if self.models_store.has(commitment) else None
            if manifest is not None:
                wanted.add(bytes.fromhex(manifest["ciphertext"]))
        removed = 0
        for digest in self.store.digests():
            if digest not in wanted and self.store.peek(digest, len(MAGIC)) == MAGIC:  # (keys are TenSEAL contexts)
                self.store.discard(digest)
                removed += 1
        return removed


def check_model(spec: Any) -> None:
    """Refuse (``ConfigError``) a model spec that encrypted scoring cannot evaluate."""
    from derelayl.errors import ConfigError

    if getattr(spec, "activation", None) != "quad" or len(getattr(spec, "hidden", ())) != 1:
        shown = spec.to_dict() if hasattr(spec, "to_dict") else spec
        raise ConfigError(
            f'encrypted scoring needs a one-hidden-layer MLP with activation = "quad"; the model is {shown}'
        )


def encrypted_scoring(spec: Any, models: Any, out_dir: Path | None) -> FheScoring:
    """The encrypted-scoring side of a process's participants, over its ``ModelBook``
    (keys and ciphertexts under ``out_dir``, or in memory); refuses a model that CKKS scoring
    cannot evaluate."""
    check_model(spec)
    if out_dir is None:
        scoring = FheScoring(models.store, models.load, MemoryModelStore())
    else:
        scoring = FheScoring(models.store, models.load, DirModelStore(out_dir / "fhe"), key_dir=out_dir / "fhe-keys")
    scoring.read_commitment = models.raw
    return scoring


NEAR_TIE = 2.0**-7
"""Two honest encrypted scorings of one model on the same cases, with different masks, can
differ only on cases whose two largest logits are closer than this: each carries CKKS noise
(measured below 6e-4) and the reply's rounding (2^-11 at most), so they differ by at most
~2e-3; 2^-7 is four times that."""


def honest_counts(logits: NDArray[Any], y: NDArray[Any], near: float = NEAR_TIE) -> tuple[int, ...]:
    """The counts of correct predictions that honest encrypted scorings of a model with these
    ``logits`` (clear, or decrypted by one scorer) may give on cases ``y``: a case whose two
    largest logits are within ``near`` may go to either of them. Early in training, when a
    model's logits are close together, such cases are common: a check that wants the count
    exactly challenges honest testers (measured: 3 such challenges in 15 honest rounds)."""
    logits, y = np.asarray(logits, dtype=np.float64), np.asarray(y)
    order = np.argsort(logits, axis=1)
    first, second = order[:, -1], order[:, -2]
    rows = np.arange(len(y))
    tied = logits[rows, first] - logits[rows, second] < near
    right = first == y
    base = int(right.sum())
    lose, gain = int((tied & right).sum()), int((tied & (second == y)).sum())
    return tuple(range(base - lose, base + gain + 1))


def _count(reply: NDArray[Any], mask_seed: int, y: NDArray[Any], hidden: int) -> int:
    logits = logits_from_reply(reply, mask_seed, len(y), hidden)
    return int((logits.argmax(axis=1) == np.asarray(y)).sum())
