"""One place that turns settings into the learning side of a run: dataset, split, private
shards, model spec, shared initial weights, trainer and evaluator. Every method of an
experiment (and ``derelayl run --task digits``) is built from the same ``LearningSetup``,
so they share split, model and initial weights."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from derelayl.errors import ConfigError
from derelayl.learning.data import Dataset, Shard, load_dataset, preprocess
from derelayl.learning.partition import Split, make_split
from derelayl.learning.plugin import PluginModel, arrays_to_dataset, resolve
from derelayl.learning.serialization import Weights
from derelayl.learning.torch_models import ModelSpec, TorchEvaluator, TorchTrainer, TrainConfig, init_weights

__all__ = ["LearningSetup", "build_setup"]


@dataclass
class LearningSetup:
    dataset: Dataset
    split: Split
    spec: ModelSpec | PluginModel
    """What builds the model: the built-in MLP or a plugin (``derelayl.learning.plugin``)."""
    train_config: TrainConfig
    init: Weights
    x_test: NDArray[np.float32]
    y_test: NDArray[np.int64]
    dataset_options: dict[str, Any] = field(default_factory=dict)

    def shards(self) -> list[Shard]:
        """Fresh private shards (each call: new objects with empty access logs)."""
        return [
            Shard.of(p, self.dataset, np.array(idx, dtype=np.int64)) for p, idx in enumerate(self.split.participants)
        ]

    def trainer(self, config: TrainConfig | None = None) -> TorchTrainer:
        return TorchTrainer(self.spec.build, config or self.train_config)

    def evaluator(self) -> TorchEvaluator:
        return TorchEvaluator(self.spec.build)

    def test_accuracy(self, evaluator: TorchEvaluator, weights: Weights) -> float:
        """Global test accuracy: measurement only, never seen by the protocol."""
        return evaluator.evaluate(weights, self.x_test, self.y_test)

    def train_pool(self) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """All participants' data pooled (the centralized baseline only)."""
        idx = np.array([i for p in self.split.participants for i in p], dtype=np.int64)
        return self.dataset.x[idx], self.dataset.y[idx]


def build_setup(
    dataset: str | Dataset | tuple[Any, Any] = "digits",
    participants: int = 20,
    partition: str = "dirichlet",
    test_fraction: float = 0.2,
    split_seed: int = 0,
    hidden: tuple[int, ...] = (64,),
    activation: str = "relu",
    train_config: TrainConfig | None = None,
    init_seed: int = 0,
    partition_options: dict[str, Any] | None = None,
    dataset_options: dict[str, Any] | None = None,
    preprocessing: str = "standardize",
    model: Callable[[int, int], Any] | str | None = None,
) -> LearningSetup:
    """``dataset``: a built-in name, ``module:function`` / ``file.py:function`` (called with
    ``dataset_options``), a ``Dataset`` or ``(x, y)``. ``model``: a function
    ``(n_features, n_classes) -> nn.Module`` or its name; None: the MLP of ``hidden``."""
    raw = _dataset(dataset, dataset_options or {})
    split = make_split(raw, participants, partition, test_fraction, split_seed, **(partition_options or {}))
    pool = np.array([i for p in split.participants for i in p], dtype=np.int64)
    data = preprocess(raw, preprocessing, pool)
    split = dataclasses.replace(split, preprocessing=dict(data.preprocessing))
    spec: ModelSpec | PluginModel
    if model is None:
        spec = ModelSpec(data.n_features, data.n_classes, tuple(hidden), activation)
    else:
        factory = resolve(model) if isinstance(model, str) else model
        name = model if isinstance(model, str) else getattr(model, "__qualname__", "custom")
        spec = PluginModel(factory, data.n_features, data.n_classes, name)
    test = np.array(split.test, dtype=np.int64)
    return LearningSetup(
        dataset=data,
        split=split,
        spec=spec,
        train_config=train_config or TrainConfig(),
        init=init_weights(functools.partial(spec.build), init_seed),
        x_test=data.x[test],
        y_test=data.y[test],
        dataset_options=dict(dataset_options or {}),
    )


def _dataset(dataset: str | Dataset | tuple[Any, Any], options: dict[str, Any]) -> Dataset:
    if isinstance(dataset, str) and ":" in dataset:
        try:
            made = resolve(dataset)(**options)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"dataset {dataset}: the function failed: {type(exc).__name__}: {exc}") from exc
        return arrays_to_dataset(dataset, made)  # type: ignore[no-any-return]
    if isinstance(dataset, str):
        return load_dataset(dataset, **options)
    return arrays_to_dataset("custom", dataset)  # type: ignore[no-any-return]
