"""A method's learning curve: one point per round, cumulative bytes and work."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Curve", "Point"]


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

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "info": self.info, "rounds": [asdict(p) for p in self.points]}
