"""A method's learning curve: one point per round, cumulative bytes and work."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Budget", "Curve", "Point"]


@dataclass(frozen=True)
class Point:
    round: int
    accuracy: float
    """Global test accuracy (measurement only) of the method's model for this round."""
    bytes: int
    """Cumulative bytes moved (model parameters as float32; plus data where a method moves data)."""
    local_epochs: int
    """Cumulative passes of a participant over its own data (centralized: passes over the pool)."""
    samples: int
    """Cumulative training samples processed (forward + backward)."""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Curve:
    method: str
    points: list[Point] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def add(self, point: Point) -> None:
        self.points.append(point)

    @property
    def final(self) -> Point:
        return self.points[-1]

    def at_bytes(self, budget: int) -> Point:
        """The last point whose cumulative bytes do not exceed ``budget``."""
        within = [p for p in self.points if p.bytes <= budget]
        return within[-1] if within else self.points[0]

    def at_samples(self, budget: int) -> Point:
        """The last point whose cumulative training samples do not exceed ``budget``."""
        within = [p for p in self.points if p.samples <= budget]
        return within[-1] if within else self.points[0]

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "info": self.info, "rounds": [asdict(p) for p in self.points]}


@dataclass(frozen=True)
class Budget:
    """When a method stops: once every given budget of ``bytes`` and ``samples`` is reached
    (so that the curve can be read at each), and never after ``rounds`` rounds (or
    ``max_rounds`` when ``rounds`` is not given)."""

    rounds: int | None = None
    bytes: int | None = None
    samples: int | None = None
    max_rounds: int = 10_000

    def more(self, point: Point) -> bool:
        """Whether to run another round after ``point``."""
        if point.round >= (self.rounds if self.rounds is not None else self.max_rounds):
            return False
        if self.bytes is None and self.samples is None:
            return True
        return (self.bytes is not None and point.bytes < self.bytes) or (
            self.samples is not None and point.samples < self.samples
        )
