"""CKKS scoring of a committed model: the tester computes on the trainer's encrypted weights.

The scheme (TenSEAL 0.3.18, Microsoft SEAL's CKKS): the *trainer* holds the secret key of its
own long-lived key pair. It encrypts its model's weights; a tester evaluates the encrypted
model on its own plaintext test cases without seeing either the weights or a decryption; the
trainer decrypts only *masked* per-case sums and so learns nothing about the cases. Who can
learn or fake what is written in ``docs/fhe.md``.

The model family is a one-hidden-layer MLP with the quadratic activation
``quad(h) = 0.25 + 0.5 h + 0.125 h^2`` (the least-squares fit of ReLU on [-2, 2]), which CKKS
evaluates exactly; ``ModelSpec(activation="quad")`` trains it. Evaluation needs three
multiplicative levels and no rotations, so the tester needs the relinearisation key only
(no Galois keys):

* layer 1 — cases are packed ``batch`` to a ciphertext, ``block`` slots per case (block = the
  next power of two >= hidden). Ciphertext ``C_i`` holds weight column ``W1[:, i]`` tiled
  once per case (the last column is the bias, against a constant input of 1), so
  ``h = sum_i C_i * x_i`` is one plaintext multiplication per input feature.
* activation — ``a' = h^2 + 4 h + 2`` (``quad / 0.125``; the 0.125 is folded into layer 2).
* layer 2 — ciphertext ``R_c`` holds ``0.125 * W2[c, :]`` tiled per case; the tester
  computes ``P_c = R_c * a' + mask`` and sends the ``P_c`` to the trainer, who decrypts,
  sums each case's block, adds its bias ``b2[c]`` and returns those sums, rounded. The tester
  subtracts its masks' sums and reads the logits.

The tester's evaluation and the trainer's decryption of its query are in ``query``.
Ciphertexts are SEAL's, made and evaluated through ``seal`` (seeded symmetric encryption,
one rescale per sum of products, layer 2's weights encrypted at the level they are used).
Every byte string here is validated before use (``FheError`` names what is wrong).
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from derelayl import jsonsafe
from derelayl.errors import DerelaylError
from derelayl.fhe.seal import Scratch, Seal

__all__ = [
    "QUAD",
    "SCHEME",
    "EncryptedModel",
    "FheError",
    "KeyPair",
    "QuadMLP",
    "Scheme",
    "encrypt_model",
]

QUAD = (0.25, 0.5, 0.125)
"""``quad(h) = c0 + c1 h + c2 h^2``: ReLU's least-squares quadratic on [-2, 2]."""
MASK_RANGE = 2.0**12
"""Masks are uniform in +-MASK_RANGE: far above a logit's share (|P| ~ 10), far below the
2^19 the scheme can carry (50-bit data prime, 2^30 scale)."""
REPLY_STEP = 2.0**-10
"""The trainer rounds what it returns to this step (above CKKS noise): the tester gets
logits, not raw decryptions (a raw CKKS decryption leaks the noise, and from it the key:
Li & Micciancio, Eurocrypt 2021)."""
MAX_BLOB = 1 << 31
MAGIC = b"DRLFHE2\n"
"""Starts every container (encrypted model, query); 2: SEAL ciphertexts, seeded when fresh."""
LAYER2_LEVEL = 2
"""Layer 2's weights meet the activation two rescales below the top: they are encrypted there."""


class FheError(DerelaylError):
    """An encrypted model, key, query or reply that is malformed or does not fit."""


@dataclass(frozen=True)
class Scheme:
    """CKKS parameters: 128-bit security for N = 8192 allows 218 bits of modulus; 190 used."""

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (50, 30, 30, 30, 50)
    scale_bits: int = 30
    layout: int = 2
    """1: TenSEAL vectors, all at the top level; 2: SEAL ciphertexts, seeded, layer 2 lower."""

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def scale(self) -> float:
        return 2.0**self.scale_bits

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes), "library": "tenseal 0.3.18"}

    def digest(self) -> bytes:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).digest()


SCHEME = Scheme()


def _ts() -> Any:
    import tenseal as ts

    return ts


def block_width(hidden: int) -> int:
    return 1 << max(0, (hidden - 1).bit_length())


@dataclass(frozen=True)
class QuadMLP:
    """The clear model: ``x -> W2 quad(W1 x + b1) + b2`` (float64)."""

    w1: NDArray[np.float64]
    b1: NDArray[np.float64]
    w2: NDArray[np.float64]
    b2: NDArray[np.float64]

    @classmethod
    def from_weights(cls, weights: dict[str, Any], name: str = "model") -> QuadMLP:
        """From a ``ModelSpec(hidden=(H,), activation="quad")`` state dict."""
        need = {"0.weight", "0.bias", "2.weight", "2.bias"}
        if set(weights) != need:
            raise FheError(
                f"{name}: encrypted scoring takes a one-hidden-layer MLP (keys {sorted(need)}), got {sorted(weights)}"
            )
        w1, b1, w2, b2 = (
            np.asarray(weights[k].detach().double().numpy()) for k in ("0.weight", "0.bias", "2.weight", "2.bias")
        )
        if w1.ndim != 2 or w2.ndim != 2 or b1.shape != (w1.shape[0],) or w2.shape[1] != w1.shape[0]:
            raise FheError(f"{name}: layer shapes do not chain: {w1.shape}, {b1.shape}, {w2.shape}, {b2.shape}")
        if b2.shape != (w2.shape[0],) or not all(np.isfinite(a).all() for a in (w1, b1, w2, b2)):
            raise FheError(f"{name}: output bias shape {b2.shape} or non-finite weights")
        return cls(w1, b1, w2, b2)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(features, hidden, classes)."""
        return int(self.w1.shape[1]), int(self.w1.shape[0]), int(self.w2.shape[0])

    def logits(self, x: NDArray[Any]) -> NDArray[np.float64]:
        c0, c1, c2 = QUAD
        h = np.asarray(x, dtype=np.float64) @ self.w1.T + self.b1
        return (c0 + c1 * h + c2 * h * h) @ self.w2.T + self.b2


# ----------------------------------------------------------------------------- containers


def pack(header: dict[str, Any], parts: list[bytes]) -> bytes:
    text = json.dumps({**header, "parts": len(parts)}, sort_keys=True).encode()
    out = io.BytesIO()
    out.write(MAGIC + struct.pack("<I", len(text)) + text)
    for p in parts:
        out.write(struct.pack("<Q", len(p)) + p)
    return out.getvalue()


def unpack(data: bytes, what: str) -> tuple[dict[str, Any], list[bytes]]:
    if not isinstance(data, bytes) or not data.startswith(MAGIC) or len(data) > MAX_BLOB:
        raise FheError(f"{what}: not a derelayl FHE container")
    try:
        (n,) = struct.unpack_from("<I", data, len(MAGIC))
        at = len(MAGIC) + 4
        header = jsonsafe.loads(data[at : at + n])
        at += n
        if not isinstance(header, dict) or not isinstance(header.get("parts"), int):
            raise ValueError("header is not an object with a part count")
        parts = []
        for _ in range(header["parts"]):
            (size,) = struct.unpack_from("<Q", data, at)
            at += 8
            if at + size > len(data):
                raise ValueError("truncated")
            parts.append(data[at : at + size])
            at += size
        if at != len(data):
            raise ValueError("trailing bytes")
    except (struct.error, ValueError, DerelaylError) as exc:
        raise FheError(f"{what}: malformed container ({exc})") from exc
    return header, parts


def header_int(header: dict[str, Any], key: str, lo: int, hi: int, what: str) -> int:
    v = header.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise FheError(f"{what}: {key} must be an integer in {lo}..{hi}, got {v!r}")
    return v


# ----------------------------------------------------------------------------- keys


class KeyPair:
    """A trainer's CKKS key pair. ``public()`` is what testers get: the parameters and the
    relinearisation key, no secret key and no Galois keys. The context is a symmetric-key
    one: the trainer, who holds the secret key, is the only one who encrypts under it."""

    def __init__(self, context: Any) -> None:
        if not context.has_secret_key():
            raise FheError("a key pair needs its secret key")
        self.context = context
        self.seal = Seal.of(context)

    @classmethod
    def generate(cls, scheme: Scheme = SCHEME) -> KeyPair:
        ts = _ts()
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            scheme.poly_modulus_degree,
            coeff_mod_bit_sizes=list(scheme.coeff_mod_bit_sizes),
            encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
        )
        ctx.global_scale = 2.0**scheme.scale_bits
        ctx.generate_relin_keys()
        return cls(ctx)

    def public(self) -> bytes:
        return bytes(self.context.serialize(save_secret_key=False, save_galois_keys=False, save_relin_keys=True))

    def secret(self) -> bytes:
        return bytes(self.context.serialize(save_secret_key=True, save_galois_keys=False, save_relin_keys=True))

    @classmethod
    def from_secret(cls, data: bytes, what: str = "key file") -> KeyPair:
        return cls(load_context(data, what, secret=True))


def load_context(data: bytes, what: str, secret: bool = False) -> Any:
    """A serialized TenSEAL context; refused unless CKKS with ``SCHEME``'s parameters (and,
    for a tester, without a secret key: a tester is never handed one)."""
    if not isinstance(data, bytes) or not 0 < len(data) < MAX_BLOB:
        raise FheError(f"{what}: empty or oversized context")
    try:
        ctx = _ts().context_from(data)
    except Exception as exc:  # TenSEAL raises ValueError/RuntimeError from C++
        raise FheError(f"{what}: not a TenSEAL context ({type(exc).__name__})") from exc
    if ctx.has_secret_key() != secret:
        raise FheError(f"{what}: {'has no' if secret else 'carries a'} secret key")
    if not ctx.has_relin_keys():
        raise FheError(f"{what}: has no relinearisation key")
    ctx.global_scale = 2.0**SCHEME.scale_bits
    return ctx


# ----------------------------------------------------------------------------- model


@dataclass(frozen=True)
class EncryptedModel:
    """What a tester receives: ``shape`` in the clear (it is in the model spec anyway) and
    the ciphertexts, serialized. ``bytes()`` is what is sent and hashed."""

    data: bytes
    features: int
    hidden: int
    classes: int

    @property
    def block(self) -> int:
        return block_width(self.hidden)

    @classmethod
    def parse(cls, data: bytes, what: str = "encrypted model") -> EncryptedModel:
        header, parts = unpack(data, what)
        if header.get("kind") != "model" or header.get("scheme") != SCHEME.digest().hex():
            raise FheError(f"{what}: not an encrypted model under this scheme")
        f = header_int(header, "features", 1, 4096, what)
        h = header_int(header, "hidden", 1, SCHEME.slots, what)
        c = header_int(header, "classes", 2, 4096, what)
        if len(parts) != f + 1 + c:
            raise FheError(f"{what}: {len(parts)} ciphertexts, expected {f + 1 + c}")
        return cls(data, f, h, c)

    def ciphertexts(self, context: Any, io: Scratch) -> tuple[list[Any], list[Any]]:
        """(layer 1, layer 2): SEAL ciphertexts under ``context``, each at the level it is
        used at and at the scheme's scale."""
        seal, parts = Seal.of(context), unpack(self.data, "encrypted model")[1]
        out: list[Any] = []
        for i, part in enumerate(parts):
            level = 0 if i <= self.features else LAYER2_LEVEL
            try:
                ct = seal.load(part, level, io)
            except Exception as exc:  # SEAL's validation errors (ValueError, RuntimeError) from C++
                raise FheError(f"encrypted model: ciphertext {i} does not load at level {level} ({exc})") from exc
            if ct.scale != SCHEME.scale:
                raise FheError(f"encrypted model: ciphertext {i} has scale {ct.scale}, not 2^{SCHEME.scale_bits}")
            out.append(ct)
        return out[: self.features + 1], out[self.features + 1 :]


def encrypt_model(key: KeyPair, model: QuadMLP) -> bytes:
    f, h, c = model.shape
    block = block_width(h)
    if block > SCHEME.slots:
        raise FheError(f"hidden width {h} does not fit {SCHEME.slots} slots")
    batch = SCHEME.slots // block
    with Scratch() as io:

        def tiled(column: NDArray[np.float64], level: int) -> bytes:
            row = np.zeros(block)
            row[:h] = column
            return key.seal.encrypt(np.tile(row, batch), level, SCHEME.scale, io)

        columns = [*model.w1.T, model.b1]  # the bias is the weight of a constant input 1
        parts = [tiled(col, 0) for col in columns] + [tiled(QUAD[2] * model.w2[k], LAYER2_LEVEL) for k in range(c)]
    header = {"kind": "model", "scheme": SCHEME.digest().hex(), "features": f, "hidden": h, "classes": c}
    return pack(header, parts)
