"""Tasks ``derelayl run`` knows, by name. Each entry imports its module only when chosen,
so the latent task runs without PyTorch installed."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from derelayl.errors import ConfigError
from derelayl.runtime.local import RunConfig, Task

__all__ = ["TASKS", "default_participants", "make_task"]

# name -> (module, class, default participants)
TASKS: dict[str, tuple[str, str, int]] = {
    "latent": ("derelayl.runtime.latent_task", "LatentTask", 64),
    "digits": ("derelayl.runtime.torch_task", "TorchTask", 20),
}


def default_participants(task: str) -> int:
    return _entry(task)[2]


def _entry(task: str) -> tuple[str, str, int]:
    try:
        return TASKS[task]
    except KeyError:
        raise ConfigError(f"unknown task {task!r}; choose from {', '.join(TASKS)}") from None


def make_task(config: RunConfig, out_dir: Path) -> Task:
    module, name, _ = _entry(config.task)
    factory: Callable[[RunConfig, Path], Task] = getattr(importlib.import_module(module), name)
    return factory(config, out_dir)
