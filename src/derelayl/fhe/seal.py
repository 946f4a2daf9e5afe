"""Microsoft SEAL under TenSEAL (``tenseal.sealapi``): the ciphertext work of ``ckks``.

Keys and contexts stay TenSEAL's (``ckks.KeyPair``, ``ckks.load_context``: a tester's
context is refused if it carries a secret key). The ciphertexts are made, evaluated and
serialized with SEAL's own API on the same context, because TenSEAL's ``CKKSVector``, the
first cut, cost more than the scheme needs (measured in ``docs/fhe.md``):

* it encrypts with ``encrypt_symmetric(plain, destination)``, which expands a fresh
  ciphertext's uniform half; SEAL's ``encrypt_symmetric(plain)`` keeps that half as the seed
  it was drawn from, so a fresh ciphertext serializes to half the bytes (the same RLWE
  ciphertext: the uniform half is public either way, and a loader re-expands the seed);
* it rescales after every plaintext product, where a sum of products needs one rescale;
* it encrypts every ciphertext at the top level, where a ciphertext first used two levels
  down can be encrypted there, over fewer primes (fewer bytes, less work; the security level
  is that of the top modulus, and a lower level's modulus is smaller still).

Serialized ciphertexts are SEAL's format (compressed; on load, checked against the context
by SEAL, then for level and size here and for scale in ``ckks``). ``tenseal.sealapi`` saves
and loads through file paths only, so bytes pass through one private scratch file
(``Scratch``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Scratch", "Seal"]


def _sealapi() -> Any:
    import tenseal.sealapi as sa

    return sa


class Scratch:
    """A private file for SEAL's path-only ``save``/``load``: an anonymous in-memory file where
    Linux has them (``memfd_create``), else a temporary file. (On a disk file system, each
    truncating open of a temporary file cost milliseconds, as much as the encryption.)"""

    def __enter__(self) -> Scratch:
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
            self._fd = os.memfd_create("derelayl-fhe", os.MFD_CLOEXEC)
            self.path = f"/proc/self/fd/{self._fd}"
        else:
            self._dir = tempfile.TemporaryDirectory(prefix="derelayl-fhe-")
            self.path = str(Path(self._dir.name) / "object")
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        os.close(self._fd)
        if self._dir is not None:
            self._dir.cleanup()

    def save(self, obj: Any) -> bytes:
        obj.save(self.path)
        return os.pread(self._fd, os.fstat(self._fd).st_size, 0)

    def load(self, obj: Any, context: Any, data: bytes) -> Any:
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        obj.load(context, self.path)
        return obj


class Seal:
    """SEAL's evaluator, encoder and (for a key holder) encryptor and decryptor on one TenSEAL
    context; ``levels[i]`` is the parameter id of ciphertexts ``i`` rescales below the top."""

    def __init__(self, context: Any, relin: Any = None, secret: Any = None) -> None:
        """``context``: a SEAL context; ``relin``, ``secret``: its keys, where held."""
        sa = _sealapi()
        self.sa, self.context, self.relin = sa, context, relin
        self.encoder = sa.CKKSEncoder(context)
        self.evaluator = sa.Evaluator(context)
        self.levels = []
        data = context.first_context_data()
        while data is not None:
            self.levels.append(data.parms_id())
            data = data.next_context_data()
        self.primes = [context.get_context_data(p).parms().coeff_modulus()[-1].value() for p in self.levels]
        """``primes[i]``: the prime a rescale from level ``i`` divides by."""
        self.encryptor = None if secret is None else sa.Encryptor(context, secret)
        self.decryptor = None if secret is None else sa.Decryptor(context, secret)

    @classmethod
    def of(cls, context: Any) -> Seal:
        """On a TenSEAL context, with the keys it holds."""
        secret = context.data.secret_key() if context.has_secret_key() else None
        return cls(context.data.seal_context(), context.data.relin_keys(), secret)

    @classmethod
    def of_parameters(cls, degree: int, bits: list[int]) -> Seal:
        """No keys: for encoding plaintexts, which depend on the parameters only."""
        sa = _sealapi()
        parms = sa.EncryptionParameters(sa.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(degree)
        parms.set_coeff_modulus(sa.CoeffModulus.Create(degree, bits))
        return cls(sa.SEALContext(parms, True, sa.SEC_LEVEL_TYPE.TC128))

    def encode(self, values: NDArray[np.float64] | float, level: int, scale: float) -> Any:
        plain = self.sa.Plaintext()
        data = values.tolist() if isinstance(values, np.ndarray) else float(values)
        self.encoder.encode(data, self.levels[level], scale, plain)
        return plain

    def encrypt(self, values: NDArray[np.float64], level: int, scale: float, io: Scratch) -> bytes:
        """A fresh ciphertext of ``values`` at ``level``, serialized with its seed."""
        assert self.encryptor is not None, "encryption needs the secret key"
        return io.save(self.encryptor.encrypt_symmetric(self.encode(values, level, scale)))

    def load(self, data: bytes, level: int, io: Scratch) -> Any:
        """A two-part ciphertext at ``level`` (``ValueError`` if it is anything else)."""
        ct = io.load(self.sa.Ciphertext(), self.context, data)
        if ct.size() != 2 or ct.parms_id() != self.levels[level] or not ct.is_ntt_form():
            raise ValueError(f"not a 2-part ciphertext at level {level}")
        return ct

    def decrypt(self, ct: Any) -> NDArray[np.float64]:
        assert self.decryptor is not None, "decryption needs the secret key"
        plain = self.sa.Plaintext()
        self.decryptor.decrypt(ct, plain)
        return np.asarray(self.encoder.decode_double(plain), dtype=np.float64)

    # ------------------------------------------------------------------ evaluation

    def dot_plain(self, terms: list[tuple[Any, Any]]) -> Any:
        """``sum ct * plain`` over ``terms``, rescaled once (the products share a level and
        a scale, so they add before the one rescale)."""
        ev, acc = self.evaluator, None
        for ct, plain in terms:
            prod = self.sa.Ciphertext()
            ev.multiply_plain(ct, plain, prod)
            if acc is None:
                acc = prod
            else:
                ev.add_inplace(acc, prod)
        ev.rescale_to_next_inplace(acc)
        return acc

    def square_affine(self, h: Any, b: float, c: float) -> Any:
        """``h^2 + b h + c``, one level below ``h`` (``b h`` is encoded at ``h``'s scale, so
        both terms come out at the same scale)."""
        ev, sq, lin = self.evaluator, self.sa.Ciphertext(), self.sa.Ciphertext()
        ev.square(h, sq)
        ev.relinearize_inplace(sq, self.relin)
        ev.rescale_to_next_inplace(sq)
        ev.multiply_plain(h, self.encode(b, self._level(h), h.scale), lin)
        ev.rescale_to_next_inplace(lin)
        ev.add_inplace(sq, lin)
        ev.add_plain_inplace(sq, self.encode(c, self._level(sq), sq.scale))
        return sq

    def multiply_add(self, a: Any, b: Any, mask: NDArray[np.float64]) -> Any:
        """``a * b + mask``, relinearised and rescaled."""
        ev, out = self.evaluator, self.sa.Ciphertext()
        ev.multiply(a, b, out)
        ev.relinearize_inplace(out, self.relin)
        ev.rescale_to_next_inplace(out)
        ev.add_plain_inplace(out, self.encode(mask, self._level(out), out.scale))
        return out

    def _level(self, ct: Any) -> int:
        return self.levels.index(ct.parms_id())
