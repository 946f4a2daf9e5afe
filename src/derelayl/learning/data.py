"""Datasets with no downloads, and the private per-participant ``Shard``.

Three datasets, each returned in a fixed order so that ``split.json`` can name samples by
index: scikit-learn's bundled ``digits`` (8x8 images, 10 classes), the LEAF-style
``synthetic`` federated benchmark (generated; natural per-user partition), and the bundled
``breast_cancer`` (30 features, 2 classes). Preprocessing (``preprocess``) happens after the
split and is recorded with it.

A ``Shard`` holds one participant's data. Its arrays are only handed to the reader whose
id is the shard's owner; every read is logged so tests can prove that no other
participant's code path touched it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from derelayl.errors import ConfigError, DataAccessError, MalformedError

__all__ = ["DATASETS", "DataAccessError", "Dataset", "Shard", "load_dataset", "preprocess"]

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]


@dataclass(frozen=True)
class Dataset:
    name: str
    x: F32
    y: I64
    n_classes: int
    preprocessing: dict[str, Any]
    users: I64 | None = None
    """Natural owner of each sample (LEAF-style datasets), else None."""

    @property
    def n_features(self) -> int:
        return int(self.x.shape[1])

    def __len__(self) -> int:
        return int(self.y.size)


def _digits(**_: Any) -> Dataset:
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = raw.data.astype(np.float32)
    return Dataset("digits", x, raw.target.astype(np.int64), 10, {"raw": "pixel counts 0..16 (sklearn order)"})


def _breast_cancer(**_: Any) -> Dataset:
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer()
    x = raw.data.astype(np.float32)
    return Dataset("breast_cancer", x, raw.target.astype(np.int64), 2, {"raw": "sklearn features (sklearn order)"})


def _synthetic(
    alpha: float = 1.0,
    beta: float = 1.0,
    users: int = 20,
    features: int = 60,
    classes: int = 10,
    seed: int = 0,
    **_: Any,
) -> Dataset:
    """Synthetic(alpha, beta) of LEAF / FedProx: each user k has its own softmax model
    W_k ~ N(u_k, 1), u_k ~ N(0, alpha) and input mean v_k ~ N(B_k, 1), B_k ~ N(0, beta);
    x ~ N(v_k, diag(j^-1.2)), y = argmax(W_k x + b_k). Sizes follow a log-normal law."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(rng.lognormal(4.0, 0.8, users).astype(np.int64) + 40, 400)
    cov = np.arange(1, features + 1, dtype=np.float64) ** -1.2
    xs, ys, owners = [], [], []
    for k in range(users):
        u, b_mean = rng.normal(0, alpha), rng.normal(0, beta)
        w = rng.normal(u, 1, (features, classes))
        b = rng.normal(u, 1, classes)
        v = rng.normal(b_mean, 1, features)
        x = rng.normal(v, np.sqrt(cov), (int(sizes[k]), features))
        xs.append(x)
        ys.append(np.argmax(x @ w + b, axis=1))
        owners.append(np.full(int(sizes[k]), k))
    pre = {
        "generator": "LEAF synthetic",
        "alpha": alpha,
        "beta": beta,
        "users": users,
        "features": features,
        "classes": classes,
        "seed": seed,
        "raw": "as generated",
    }
    return Dataset(
        "synthetic",
        np.concatenate(xs).astype(np.float32),
        np.concatenate(ys).astype(np.int64),
        classes,
        pre,
        np.concatenate(owners).astype(np.int64),
    )


DATASETS = {"digits": _digits, "synthetic": _synthetic, "breast_cancer": _breast_cancer}


def preprocess(dataset: Dataset, kind: str, fit_on: I64) -> Dataset:
    """``standardize``: z-score every feature with the mean and std of the samples ``fit_on``
    (the training pool, never the test set); ``scale``: divide by the largest absolute value
    of the training pool; ``none``. The statistics go into ``preprocessing``."""
    x = dataset.x.astype(np.float64)
    if kind == "none":
        return dataset
    if kind == "standardize":
        mean, std = x[fit_on].mean(axis=0), x[fit_on].std(axis=0)
        std[std == 0] = 1.0
        info = {
            "kind": "standardize",
            "fit_on": "training pool (all participants' samples)",
            "mean": mean.tolist(),
            "std": std.tolist(),
        }
        out = (x - mean) / std
    elif kind == "scale":
        top = float(np.abs(x[fit_on]).max()) or 1.0
        info, out = {"kind": "scale", "divide_by": top}, x / top
    else:
        raise ConfigError(f"unknown preprocess {kind!r}; choose standardize, scale or none")
    return Dataset(
        dataset.name,
        out.astype(np.float32),
        dataset.y,
        dataset.n_classes,
        {**dataset.preprocessing, **info},
        dataset.users,
    )


def load_dataset(name: str, **options: Any) -> Dataset:
    try:
        maker = DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}") from None
    return maker(**options)


@dataclass
class Shard:
    """One participant's private data, readable only by its owner."""

    owner: int
    indices: I64
    """Positions in the dataset (public: they go into split.json)."""
    _x: F32 = field(repr=False)
    _y: I64 = field(repr=False)
    reads: list[int] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, owner: int, dataset: Dataset, indices: I64) -> Shard:
        idx = np.asarray(indices, dtype=np.int64)
        return cls(owner, idx, dataset.x[idx].copy(), dataset.y[idx].copy())

    def __len__(self) -> int:
        return int(self.indices.size)

    def read(self, reader: int) -> tuple[F32, I64]:
        """The shard's arrays, for its owner only."""
        self.reads.append(reader)
        # Verify the reader is the shard's owner: private data never leaves its participant.
        if reader != self.owner:
            raise DataAccessError(f"participant {reader} tried to read participant {self.owner}'s data")
        return self._x, self._y

    def draw_test_cases(self, reader: int, n: int, seed: int) -> tuple[F32, I64]:
        """``n`` test cases from the owner's data; with replacement only if it has fewer."""
        x, y = self.read(reader)
        if len(self) == 0:
            raise DataAccessError(f"participant {self.owner} has no data to supply test cases")
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(self), size=n, replace=len(self) < n)
        return x[pick], y[pick]


def case_digest(x: F32, y: I64) -> bytes:
    """SHA-256 of test cases: shapes, float32 inputs and int64 labels, little-endian."""
    h = hashlib.sha256()
    h.update(np.asarray(x.shape, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(x, dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(y, dtype="<i8").tobytes())
    return h.digest()


def case_bytes(x: F32, y: I64) -> int:
    """Bytes moved when the test cases are published: float32 inputs + int64 labels."""
    return int(x.size) * 4 + int(y.size) * 8


MAX_CASES_BYTES = 64 << 20
"""Largest published test-case blob accepted."""


def case_blob(x: F32, y: I64) -> bytes:
    """The published form of test cases; its SHA-256 is ``learning.data.case_digest``."""
    return (
        np.asarray(x.shape, dtype="<i8").tobytes()
        + np.ascontiguousarray(x, dtype="<f4").tobytes()
        + np.ascontiguousarray(y, dtype="<i8").tobytes()
    )


def cases_from_blob(blob: bytes) -> tuple[F32, I64]:
    if len(blob) < 16 or len(blob) > MAX_CASES_BYTES:
        raise MalformedError("test cases: wrong size")
    rows, cols = (int(v) for v in np.frombuffer(blob[:16], dtype="<i8"))
    if not 0 <= cols <= MAX_CASES_BYTES // 4 or rows < 0 or 16 + rows * cols * 4 + rows * 8 != len(blob):
        raise MalformedError("test cases: shape does not match the bytes")
    x = np.frombuffer(blob[16 : 16 + rows * cols * 4], dtype="<f4").reshape(rows, cols).astype(np.float32)
    y = np.frombuffer(blob[16 + rows * cols * 4 :], dtype="<i8").astype(np.int64)
    return x, y


__all__ += ["MAX_CASES_BYTES", "case_blob", "case_bytes", "case_digest", "cases_from_blob"]
