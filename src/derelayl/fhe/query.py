"""The scoring exchange on an encrypted model (the scheme: ``ckks``): the tester encodes its
cases (``Cases``) and evaluates the model into a masked query (``evaluate``); the trainer
decrypts and sums it (``decrypt_query``); the tester unmasks the reply into logits
(``logits_from_reply``). Every byte string is validated before use (``FheError``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from derelayl.fhe.ckks import (
    LAYER2_LEVEL,
    MASK_RANGE,
    QUAD,
    REPLY_STEP,
    SCHEME,
    EncryptedModel,
    FheError,
    KeyPair,
    QuadMLP,
    block_width,
    header_int,
    load_context,
    pack,
    unpack,
)
from derelayl.fhe.seal import Scratch, Seal

__all__ = ["Cases", "decrypt_query", "evaluate", "logits_from_reply", "query_scale", "reply_shape"]


def _masks(seed: int, n_batches: int, classes: int) -> NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-MASK_RANGE, MASK_RANGE, size=(n_batches, classes, SCHEME.slots))


def query_scale(primes: list[int]) -> float:
    """The scale every query ciphertext carries, as SEAL computes it along ``evaluate``
    (``primes``: ``Seal.primes``). The trainer decrypts nothing at another scale: decoding a
    ciphertext at a small scale would magnify its noise above ``REPLY_STEP``."""
    h = SCHEME.scale * SCHEME.scale / primes[0]
    act = h * h / primes[1]
    return SCHEME.scale * act / primes[2]


def _checked_cases(x: NDArray[Any], features: int) -> NDArray[np.float64]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != features or not np.isfinite(x).all() or len(x) == 0:
        raise FheError(f"test cases must be finite, shape (n, {features}), got {x.shape}")
    return x


@dataclass(frozen=True)
class Cases:
    """A tester's cases with layer 1's plaintexts encoded, ready for any encrypted model of
    their shape. A tester scores every model of a round on the same cases, and encoding them
    was a third of an evaluation, so ``FheScoring`` keeps the last ones (``evaluate(cases=)``).
    Plaintexts depend on the scheme only, not on a key. ``batches[b]``: (index of the layer-1
    ciphertext, plaintext of its inputs) for batch ``b``, the bias column first; an all-zero
    input adds nothing and is left out (SEAL refuses the transparent ciphertext its product
    would be)."""

    x: NDArray[np.float64]
    block: int
    batches: list[list[tuple[int, Any]]]

    @classmethod
    def encode(cls, x: NDArray[Any], features: int, hidden: int) -> Cases:
        x = _checked_cases(x, features)
        block = block_width(hidden)
        batch = SCHEME.slots // block
        seal = Seal.of_parameters(SCHEME.poly_modulus_degree, list(SCHEME.coeff_mod_bit_sizes))
        batches = []
        for start in range(0, len(x), batch):
            xb = np.zeros((batch, features + 1))
            xb[: len(x[start : start + batch]), :features] = x[start : start + batch]
            xb[:, features] = 1.0
            used = [features, *np.flatnonzero(xb[:, :features].any(axis=0))]
            batches.append([(int(i), seal.encode(np.repeat(xb[:, i], block), 0, SCHEME.scale)) for i in used])
        return cls(x, block, batches)

    def fits(self, x: NDArray[Any], model: EncryptedModel) -> bool:
        return self.block == model.block and np.array_equal(self.x, _checked_cases(x, model.features))


def evaluate(
    public: bytes, model: EncryptedModel, x: NDArray[Any], mask_seed: int, cases: Cases | None = None
) -> bytes:
    """The tester's work: the masked layer-2 products of every case, as a query for the
    trainer. Deterministic in (public key, model, x, mask_seed): anyone given those can
    rebuild the query and check its digest. ``cases``: ``x`` already encoded (the same query
    comes out)."""
    if cases is None:
        cases = Cases.encode(x, model.features, model.hidden)
    elif not cases.fits(x, model):
        raise FheError("the encoded cases are not these cases, or not for this model's layout")
    ctx = load_context(public, "trainer's public key")
    seal = Seal.of(ctx)
    c0, c1, c2 = QUAD
    c = model.classes
    masks = _masks(mask_seed, len(cases.batches), c)
    parts = []
    with Scratch() as io:
        layer1, layer2 = model.ciphertexts(ctx, io)
        for b, terms in enumerate(cases.batches):
            h = seal.dot_plain([(layer1[i], plain) for i, plain in terms])
            act = seal.square_affine(h, c1 / c2, c0 / c2)  # = quad(h) / c2
            for k in range(c):
                parts.append(io.save(seal.multiply_add(layer2[k], act, masks[b, k])))
    header = {"kind": "query", "scheme": SCHEME.digest().hex(), "cases": len(cases.x), "classes": c}
    header["block"] = cases.block
    return pack(header, parts)


def decrypt_query(key: KeyPair, model: QuadMLP, query: bytes) -> NDArray[np.float64]:
    """The trainer's work: per case and class, the sum of its block of the masked products
    plus the output bias, rounded to ``REPLY_STEP``. Shape (batches, classes, batch)."""
    header, parts = unpack(query, "query")
    _, hidden, c = model.shape
    block = block_width(hidden)
    if header.get("kind") != "query" or header.get("scheme") != SCHEME.digest().hex():
        raise FheError("query: not a query under this scheme")
    if header_int(header, "classes", c, c, "query") != c or header_int(header, "block", block, block, "query") != block:
        raise FheError("query: layout does not match the model")
    n = header_int(header, "cases", 1, 1 << 20, "query")
    batch = SCHEME.slots // block
    n_batches = -(-n // batch)
    if len(parts) != n_batches * c:
        raise FheError(f"query: {len(parts)} ciphertexts, expected {n_batches * c}")
    seal = key.seal
    scale = query_scale(seal.primes)
    out = np.zeros((n_batches, c, batch))
    with Scratch() as io:
        for i, part in enumerate(parts):
            try:
                ct = seal.load(part, LAYER2_LEVEL + 1, io)
            except Exception as exc:  # SEAL's validation errors from C++
                raise FheError(f"query: ciphertext {i} does not load at the last level ({exc})") from exc
            if ct.scale != scale:
                raise FheError(f"query: ciphertext {i} has scale {ct.scale}, not the evaluation's {scale}")
            values = seal.decrypt(ct)
            if values.size != SCHEME.slots or not np.isfinite(values).all():
                raise FheError(f"query: ciphertext {i} decrypts to {values.size} values")
            b, k = divmod(i, c)
            out[b, k] = values.reshape(batch, block)[:, :hidden].sum(axis=1) + model.b2[k]
    return np.round(out / REPLY_STEP) * REPLY_STEP


def reply_shape(query: bytes) -> tuple[int, int, int]:
    """(batches, classes, batch): the shape of a trainer's reply to ``query`` (a tester
    decodes the reply's bytes with it)."""
    header, _ = unpack(query, "query")
    n = header_int(header, "cases", 1, 1 << 20, "query")
    c = header_int(header, "classes", 2, 4096, "query")
    block = header_int(header, "block", 1, SCHEME.slots, "query")
    batch = SCHEME.slots // block
    return -(-n // batch), c, batch


def logits_from_reply(reply: NDArray[Any], mask_seed: int, n_cases: int, hidden: int) -> NDArray[np.float64]:
    """The tester's unmasking: reply minus its masks' block sums -> logits, shape (n, classes)."""
    reply = np.asarray(reply, dtype=np.float64)
    if reply.ndim != 3 or not np.isfinite(reply).all():
        raise FheError(f"reply must be a finite (batches, classes, batch) array, got shape {reply.shape}")
    n_batches, c, batch = reply.shape
    block = block_width(hidden)
    if batch != SCHEME.slots // block or n_batches != -(-n_cases // batch):
        raise FheError(f"reply shape {reply.shape} does not fit {n_cases} cases of hidden width {hidden}")
    masks = _masks(mask_seed, n_batches, c).reshape(n_batches, c, batch, block)[..., :hidden].sum(axis=3)
    logits = (reply - masks).transpose(0, 2, 1).reshape(n_batches * batch, c)
    return logits[:n_cases]
