"""Your own model, data and optimizer: what ``derelayl`` trains need not be the built-in MLP
on a bundled dataset.

In Python, hand ``build_setup`` any of:

- ``dataset``: a ``Dataset``, a pair of arrays ``(x, y)`` (``x``: samples x features, finite;
  ``y``: class labels 0..C-1), or the name of a function returning either;
- ``model``: a function ``(n_features, n_classes) -> torch.nn.Module`` (a ``ModelSpec`` is the
  built-in MLP);
- ``TrainConfig(optimizer=...)``: ``"sgd"`` (default), ``"adam"``, or the name of a function
  ``(parameters, config) -> torch.optim.Optimizer``.

In a config file the same go in as names: ``[data] dataset = "cnn.py:load"``,
``[model] factory = "cnn.py:build"``, ``[train] optimizer = "cnn.py:adam"``. A name is
``module:function`` (imported) or ``file.py:function`` (a path relative to the config's
folder). Naming code in a config runs that code: use configs you trust, as with any plugin.
Samples stay flat (one row per sample, as in ``split.json``); a convolutional model reshapes
its input itself (see ``examples/cnn_digits.py``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from derelayl.errors import ConfigError

__all__ = ["MAX_SAMPLES", "PluginModel", "arrays_to_dataset", "resolve"]

MAX_SAMPLES = 10_000_000
MAX_FEATURES = 1_000_000


def resolve(name: str, base: Path | None = None) -> Callable[..., Any]:
    """The function ``name`` (``module:function`` or ``file.py:function``) refers to."""
    if not isinstance(name, str) or name.count(":") != 1:
        raise ConfigError(f"{name!r} is not module:function or file.py:function")
    where, attr = name.split(":")
    if not where or not attr.isidentifier():
        raise ConfigError(f"{name!r} is not module:function or file.py:function")
    if where.endswith(".py"):
        path = Path(where) if base is None or Path(where).is_absolute() else base / where
        if not path.is_file():
            raise ConfigError(f"{name}: no file {path}")
        key = f"derelayl_plugin_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(key)
        if module is None:
            spec = importlib.util.spec_from_file_location(key, path)
            if spec is None or spec.loader is None:
                raise ConfigError(f"{name}: cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[key] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[key]
                raise ConfigError(f"{name}: loading {path} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise ConfigError(f"{name}: cannot import {where} ({type(exc).__name__}: {exc})") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{name}: {where} has no function {attr}")
    return fn  # type: ignore[no-any-return]


def arrays_to_dataset(name: str, made: Any) -> Any:
    """A ``Dataset`` from what a data function returned (a ``Dataset`` or ``(x, y)``),
    checked: 2-D finite features, integer labels 0..C-1 with at least 2 classes, sizes."""
    from derelayl.learning.data import Dataset

    if isinstance(made, Dataset):
        x, y, classes = made.x, made.y, made.n_classes
    elif isinstance(made, tuple) and len(made) == 2:
        x, y, classes = made[0], made[1], None
    else:
        raise ConfigError(f"dataset {name}: expected a Dataset or a pair (x, y), got {type(made).__name__}")
    try:
        x = np.asarray(x, dtype=np.float32)
        y_raw = np.asarray(y)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"dataset {name}: x and y must be numeric arrays ({exc})") from exc
    if x.ndim != 2 or y_raw.ndim != 1 or len(x) != len(y_raw):
        raise ConfigError(f"dataset {name}: x must be samples x features and y one label per sample")
    if not 2 <= len(y_raw) <= MAX_SAMPLES or not 1 <= x.shape[1] <= MAX_FEATURES:
        raise ConfigError(f"dataset {name}: {len(y_raw)} samples x {x.shape[1]} features is out of range")
    if not np.isfinite(x).all():
        raise ConfigError(f"dataset {name}: x holds NaN or infinite values")
    if not np.issubdtype(y_raw.dtype, np.integer) or y_raw.min() < 0:
        raise ConfigError(f"dataset {name}: y must hold integer class labels 0..C-1")
    y = y_raw.astype(np.int64)
    n_classes = int(classes) if classes is not None else int(y.max()) + 1
    if n_classes < 2 or y.max() >= n_classes:
        raise ConfigError(f"dataset {name}: needs labels 0..C-1 with C >= 2, got max label {int(y.max())}")
    if isinstance(made, Dataset):
        return Dataset(made.name, x, y, n_classes, made.preprocessing, made.users)
    return Dataset(name, x, y, n_classes, {"raw": f"from {name}"})


@dataclass(frozen=True)
class PluginModel:
    """A model made by a function ``(n_features, n_classes) -> nn.Module``; ``name`` is what
    model files record (``to_dict``)."""

    factory: Callable[[int, int], Any]
    in_features: int
    n_classes: int
    name: str = "custom"

    def build(self) -> Any:
        from torch import nn

        try:
            module = self.factory(self.in_features, self.n_classes)
        except Exception as exc:
            raise ConfigError(f"model {self.name}: the factory failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(module, nn.Module):
            raise ConfigError(f"model {self.name}: the factory returned {type(module).__name__}, not a torch.nn.Module")
        return module

    def to_dict(self) -> dict[str, Any]:
        return {"factory": self.name, "in_features": self.in_features, "n_classes": self.n_classes}
