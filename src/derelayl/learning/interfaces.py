"""The two small interfaces between the protocol's participants and machine learning.

A ``Trainer`` turns a parent model and the trainer's own data into a child model; an
``Evaluator`` scores a model on test cases (higher is better). The paper's abstract
latent-score model (``derelayl.learning.latent``) and the PyTorch adapters
(``derelayl.learning.torch_models``) are two implementations: the latent one works on
scores in vectorised form, the PyTorch one on weight dictionaries.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

__all__ = ["Evaluator", "M", "Trainer"]

M = TypeVar("M")
M_in = TypeVar("M_in", contravariant=True)


class Trainer(Protocol[M]):
    """parent model + the trainer's local data -> child model. Deterministic given ``seed``."""

    def train(self, parent: M, x: NDArray[np.float32], y: NDArray[np.int64], seed: int) -> M: ...


class Evaluator(Protocol[M_in]):
    """model + test cases -> score (higher is better)."""

    def evaluate(self, model: M_in, x: NDArray[np.float32], y: NDArray[np.int64]) -> float: ...
