"""Tasks ``derelayl run`` knows, by name. Each entry imports its module only when chosen,
so the latent task runs without PyTorch installed."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from derelayl.errors import ConfigError
from derelayl.runtime.local import RunConfig, Task

__all__ = ["TASKS", "default_participants", "is_config", "make_task"]

# name -> (module, class, default participants)
TASKS: dict[str, tuple[str, str, int]] = {
    "latent": ("derelayl.runtime.latent_task", "LatentTask", 64),
    "digits": ("derelayl.runtime.torch_task", "TorchTask", 20),
}


def default_participants(task: str) -> int:
    if is_config(task):
        from derelayl.experiments.config import load_config

        return int(load_config(Path(task)).data["participants"])
    return _entry(task)[2]


def is_config(task: str) -> bool:
    """A task given as an experiment config file (``.toml``): its data, model and training
    (built-in or plugins, ``derelayl.learning.plugin``) are what the participants relay-train."""
    return task.endswith(".toml")


def _entry(task: str) -> tuple[str, str, int]:
    if is_config(task):
        return ("derelayl.runtime.torch_task", "TorchTask", 0)
    try:
        return TASKS[task]
    except KeyError:
        raise ConfigError(
            f"unknown task {task!r}; choose from {', '.join(TASKS)} or an experiment config .toml"
        ) from None


def make_task(config: RunConfig, out_dir: Path) -> Task:
    module, name, _ = _entry(config.task)
    factory: Callable[[RunConfig, Path], Task] = getattr(importlib.import_module(module), name)
    return factory(config, out_dir)
