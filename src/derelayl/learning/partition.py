"""The split: a global test set (measurement only) and one index list per participant.

Partitions: ``iid``, ``dirichlet`` (label proportions per participant ~ Dirichlet(alpha)),
``shards`` (sort by label, cut into ``shards_per_participant * n`` pieces, deal them out)
and ``natural`` (the dataset's own users, LEAF-style). ``Split`` round-trips through
``split.json`` so another framework can be run on exactly the same samples.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from derelayl import jsonsafe
from derelayl.errors import ConfigError
from derelayl.folders import write_atomic
from derelayl.learning.data import Dataset

__all__ = ["PARTITIONS", "Split", "make_split", "split_test"]

I64 = NDArray[np.int64]


@dataclass(frozen=True)
class Split:
    dataset: str
    seed: int
    test: list[int]
    participants: list[list[int]]
    preprocessing: dict[str, Any] = field(default_factory=dict)
    partition: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "seed": self.seed,
            "test": self.test,
            "participants": self.participants,
            "preprocessing": self.preprocessing,
            "partition": self.partition,
        }

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.to_json()) + "\n")

    @classmethod
    def load(cls, path: Path) -> Split:
        try:
            data = jsonsafe.loads(path.read_text())
            return cls(
                str(data["dataset"]),
                int(data["seed"]),
                [int(i) for i in data["test"]],
                [[int(i) for i in p] for p in data["participants"]],
                dict(data.get("preprocessing", {})),
                dict(data.get("partition", {})),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: not a valid split.json ({exc})") from exc

    def validate(self, n_samples: int) -> None:
        """Every index in range; test and participants disjoint and without repeats."""
        everything = [*self.test, *(i for p in self.participants for i in p)]
        if any(i < 0 or i >= n_samples for i in everything):
            raise ConfigError(f"split of {self.dataset}: index out of range 0..{n_samples - 1}")
        if len(set(everything)) != len(everything):
            raise ConfigError(f"split of {self.dataset}: a sample is used twice")


def split_test(y: I64, fraction: float, seed: int) -> tuple[I64, I64]:
    """Stratified (train, test) positions."""
    from sklearn.model_selection import train_test_split

    positions = np.arange(y.size)
    train, test = train_test_split(positions, test_size=fraction, random_state=seed, stratify=y)
    return np.sort(train).astype(np.int64), np.sort(test).astype(np.int64)


def _iid(train: I64, y: I64, n: int, rng: np.random.Generator, **_: Any) -> list[I64]:
    return [np.sort(part) for part in np.array_split(rng.permutation(train), n)]


def _dirichlet(
    train: I64, y: I64, n: int, rng: np.random.Generator, alpha: float = 0.5, min_size: int = 2, **_: Any
) -> list[I64]:
    """Per class, split its samples over participants in Dirichlet(alpha) proportions;
    redraw (bounded) until every participant has at least ``min_size`` samples."""
    if alpha <= 0:
        raise ConfigError(f"dirichlet alpha must be > 0, got {alpha}")
    for _attempt in range(1000):
        parts: list[list[int]] = [[] for _ in range(n)]
        for label in np.unique(y[train]):
            members = rng.permutation(train[y[train] == label])
            share = rng.dirichlet(np.full(n, alpha))
            cuts = (np.cumsum(share) * members.size).astype(int)[:-1]
            for p, chunk in enumerate(np.split(members, cuts)):
                parts[p].extend(int(i) for i in chunk)
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    raise ConfigError(f"dirichlet(alpha={alpha}) could not give {n} participants {min_size}+ samples each")


def _shards(
    train: I64, y: I64, n: int, rng: np.random.Generator, shards_per_participant: int = 2, **_: Any
) -> list[I64]:
    order = train[np.argsort(y[train], kind="stable")]
    pieces = np.array_split(order, n * shards_per_participant)
    deal = rng.permutation(len(pieces))
    return [np.sort(np.concatenate([pieces[j] for j in deal[p::n]])) for p in range(n)]


PARTITIONS = {"iid": _iid, "dirichlet": _dirichlet, "shards": _shards, "natural": None}


def make_split(
    dataset: Dataset, participants: int, partition: str, test_fraction: float, seed: int, **options: Any
) -> Split:
    """The global test set (stratified) and each participant's training indices."""
    if participants < 2:
        raise ConfigError(f"participants must be at least 2, got {participants}")
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if partition not in PARTITIONS:
        raise ConfigError(f"unknown partition {partition!r}; choose from {', '.join(PARTITIONS)}")
    train, test = split_test(dataset.y, test_fraction, seed)
    rng = np.random.default_rng(seed)
    if partition == "natural":
        if dataset.users is None:
            raise ConfigError(f"dataset {dataset.name!r} has no natural users; use iid, dirichlet or shards")
        users = np.unique(dataset.users)
        if users.size != participants:
            raise ConfigError(f"natural partition: dataset has {users.size} users, config asks {participants}")
        parts = [train[dataset.users[train] == u] for u in users]
    else:
        parts = PARTITIONS[partition](train, dataset.y, participants, rng, **options)  # type: ignore[misc]
    return Split(
        dataset.name,
        seed,
        [int(i) for i in test],
        [[int(i) for i in p] for p in parts],
        dict(dataset.preprocessing),
        {"kind": partition, "test_fraction": test_fraction, **options},
    )
