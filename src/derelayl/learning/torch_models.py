"""PyTorch adapters: a model spec, seeded initial weights, a trainer and an evaluator.

Models are passed around as weight dictionaries (``Weights``), so that parents, children and
averages are plain data, and one ``nn.Module`` per trainer is reused for speed. Any
``nn.Module`` factory works: ``TorchTrainer(factory=...)`` takes a zero-argument callable.
Training is deterministic for a given seed (a local ``torch.Generator`` shuffles batches;
the caller fixes the thread count).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from derelayl.errors import ConfigError, ModelError
from derelayl.learning.serialization import Weights

__all__ = ["ModelSpec", "TorchEvaluator", "TorchTrainer", "TrainConfig", "average", "init_weights"]


class Quad(nn.Module):
    """``0.25 + 0.5 h + 0.125 h^2``: ReLU's least-squares quadratic on [-2, 2], the activation
    homomorphic (CKKS) scoring evaluates exactly (``derelayl.fhe``)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return 0.25 + 0.5 * h + 0.125 * h * h


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "quad": Quad}


@dataclass(frozen=True)
class ModelSpec:
    """An MLP: ``in_features -> hidden... -> n_classes``."""

    in_features: int
    n_classes: int
    hidden: tuple[int, ...] = (64,)
    activation: str = "relu"

    def __post_init__(self) -> None:
        if self.activation not in _ACTIVATIONS:
            raise ConfigError(f"model.activation must be one of {', '.join(_ACTIVATIONS)}, got {self.activation!r}")
        if self.in_features < 1 or self.n_classes < 2 or any(h < 1 for h in self.hidden):
            raise ConfigError(f"model sizes must be positive (and >= 2 classes): {self}")

    def build(self) -> nn.Module:
        layers: list[nn.Module] = []
        width = self.in_features
        for h in self.hidden:
            layers += [nn.Linear(width, h), _ACTIVATIONS[self.activation]()]
            width = h
        layers.append(nn.Linear(width, self.n_classes))
        return nn.Sequential(*layers)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hidden": list(self.hidden)}


def init_weights(factory: Callable[[], nn.Module], seed: int) -> Weights:
    """The shared initial weights: the module's own init under a fixed seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = factory()
    return {name: t.detach().clone() for name, t in module.state_dict().items()}


def average(models: Sequence[Weights], weights: Sequence[float] | None = None) -> Weights:
    """Weighted average of models with identical keys and shapes."""
    if not models:
        raise ModelError("average of no models")
    w = np.ones(len(models)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    return {name: sum(float(wi) * m[name] for wi, m in zip(w, models, strict=True)) for name in models[0]}  # type: ignore[misc]


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 0.05
    batch_size: int = 32
    local_epochs: int = 1
    momentum: float = 0.0
    weight_decay: float = 0.0
    prox_mu: float = 0.0
    """FedProx-style pull toward the parent: loss += mu/2 * ||w - w_parent||^2."""
    optimizer: str | Callable[..., Any] = "sgd"
    """``sgd`` (with ``momentum`` and ``weight_decay``), ``adam``, or a function
    ``(parameters, config) -> torch.optim.Optimizer`` (``derelayl.learning.plugin``)."""

    def make_optimizer(self, parameters: Any) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(parameters, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        if self.optimizer == "adam":
            return torch.optim.Adam(parameters, lr=self.lr, weight_decay=self.weight_decay)
        if callable(self.optimizer):
            made = self.optimizer(parameters, self)
            if not isinstance(made, torch.optim.Optimizer):
                raise ConfigError(f"the optimizer function returned {type(made).__name__}, not a torch optimizer")
            return made
        raise ConfigError(f"train.optimizer must be sgd, adam or a function, got {self.optimizer!r}")

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.batch_size < 1 or self.local_epochs < 0:
            raise ConfigError(f"training needs lr > 0, batch_size >= 1, local_epochs >= 0: {self}")
        if self.momentum < 0 or self.weight_decay < 0 or self.prox_mu < 0:
            raise ConfigError(f"momentum, weight_decay and prox_mu must be >= 0: {self}")


@dataclass
class TorchTrainer:
    """Implements ``Trainer[Weights]``: SGD on the trainer's data, from the parent's weights."""

    factory: Callable[[], nn.Module]
    config: TrainConfig = field(default_factory=TrainConfig)
    _module: nn.Module | None = field(default=None, repr=False)

    def module(self) -> nn.Module:
        if self._module is None:
            self._module = self.factory()
        return self._module

    def train(
        self,
        parent: Weights,
        x: NDArray[np.float32],
        y: NDArray[np.int64],
        seed: int,
        epochs: int | None = None,
        correction: Weights | None = None,
    ) -> Weights:
        """``correction``: added to each parameter's gradient at every step (SCAFFOLD's
        ``c - c_i``), by parameter name."""
        cfg = self.config
        net = self.module()
        try:
            net.load_state_dict(parent)
        except RuntimeError as exc:
            raise ModelError(f"parent model does not fit the model spec: {exc}") from exc
        net.train()
        anchor = [p.detach().clone() for p in net.parameters()] if cfg.prox_mu > 0 else []
        opt = cfg.make_optimizer(net.parameters())
        xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
        gen = torch.Generator().manual_seed(seed)
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(cfg.local_epochs if epochs is None else epochs):
            order = torch.randperm(len(yt), generator=gen)
            for start in range(0, len(yt), cfg.batch_size):
                batch = order[start : start + cfg.batch_size]
                loss = loss_fn(net(xt[batch]), yt[batch])
                if anchor:
                    loss = loss + 0.5 * cfg.prox_mu * sum(
                        ((p - a) ** 2).sum() for p, a in zip(net.parameters(), anchor, strict=True)
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if correction is not None:
                    for name, p in net.named_parameters():
                        p.grad.add_(correction[name])  # type: ignore[union-attr]
                opt.step()
        return {name: t.detach().clone() for name, t in net.state_dict().items()}

    def steps(self, samples: int, epochs: int | None = None) -> int:
        """SGD steps one call of ``train`` takes on ``samples`` samples."""
        per_epoch = -(-samples // self.config.batch_size)
        return per_epoch * (self.config.local_epochs if epochs is None else epochs)

    def parameter_names(self) -> list[str]:
        return [name for name, _ in self.module().named_parameters()]


@dataclass
class TorchEvaluator:
    """Implements ``Evaluator[Weights]``: accuracy on the given cases; ``correct`` gives the
    count of correct predictions, the integer score a tester reports to the ledger."""

    factory: Callable[[], nn.Module]
    _module: nn.Module | None = field(default=None, repr=False)

    def evaluate(self, model: Weights, x: NDArray[np.float32], y: NDArray[np.int64]) -> float:
        return self.correct(model, x, y) / max(int(y.size), 1)

    def correct(self, model: Weights, x: NDArray[np.float32], y: NDArray[np.int64]) -> int:
        return int((self.predict(model, x) == y).sum())

    def predict(self, model: Weights, x: NDArray[np.float32]) -> NDArray[np.int64]:
        """The class the model puts each case in."""
        if self._module is None:
            self._module = self.factory()
        net = self._module
        try:
            net.load_state_dict(model)
        except RuntimeError as exc:
            raise ModelError(f"model does not fit the model spec: {exc}") from exc
        net.eval()
        with torch.no_grad():
            return net(torch.from_numpy(np.ascontiguousarray(x))).argmax(dim=1).numpy().astype(np.int64)
