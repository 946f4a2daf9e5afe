"""Numbers read off the paper's figures, to check agreement beyond eyes.

``digitise_versions`` reads the reference version-distribution PNG pixel by pixel: every
pixel column inside the axes is classified against the figure's own legend colours, giving
the share of each version bin per column (the axes and legend positions below are those of
``docs/figures/paper-fig-version-distribution.png``; they were found from its axis lines and
grid lines). ``REFERENCE_COINS`` are the values read off the coins figure's axis at round
5000 and PROTOCOL.md's stated supply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["REFERENCE_COINS", "compare_versions", "digitise_versions"]

F64 = NDArray[np.float64]

# Pixel geometry of the reference PNG (1526 x 622): axes frame and x scale.
_X0, _X1, _YTOP, _YBOT = 100, 1261, 45, 543
_PX_PER_ROUND = (1261 - 205) / 90  # tick "10" at x=205, tick "100" at x=1261
_LEGEND_X, _LEGEND_ROWS = 1350, (45, 85, 125, 165, 206, 246, 286, 326, 366, 406, 446, 486)

REFERENCE_COINS = {"final_min": 0.83e6, "final_max": 3.57e6, "supply": 4.9e8}
"""Coins figure at round 5000 (lowest and highest line, read off the axis) and the supply."""


def digitise_versions(png: Path) -> tuple[F64, F64]:
    """(round coordinate per pixel column, shares per column x 13 bins) of the reference."""
    import matplotlib.image as mpimg

    rgb = np.asarray(mpimg.imread(png))[..., :3] * 255.0
    palette = np.array([rgb[y, _LEGEND_X] for y in _LEGEND_ROWS] + [[255.0, 255.0, 255.0]])
    block = rgb[_YTOP:_YBOT, _X0:_X1]
    dist = np.stack([((block - colour) ** 2).sum(-1) for colour in palette], axis=-1)
    cls, ok = dist.argmin(-1), dist.min(-1) < 30.0**2  # grid lines and antialiasing: ignored
    counts = np.stack([((cls == c) & ok).sum(0) for c in range(13)], axis=1).astype(np.float64)
    shares = counts / counts.sum(axis=1, keepdims=True)
    rounds = 100.0 - (_X1 - np.arange(_X0, _X1)) / _PX_PER_ROUND
    return rounds, shares


def compare_versions(ours: F64, png: Path, first: int = 20, last: int = 100) -> dict[str, Any]:
    """Steady-state mean share per bin, ours (rows = rounds 1..) vs the reference's, in %."""
    rounds, ref = digitise_versions(png)
    theirs = ref[(rounds >= first) & (rounds <= last)].mean(axis=0) * 100
    mine = np.asarray(ours)[first - 1 : last].mean(axis=0) * 100
    return {
        "reference_pct": np.round(theirs, 1).tolist(),
        "ours_pct": np.round(mine, 1).tolist(),
        "max_abs_diff_points": float(np.abs(theirs - mine).max()),
        "ramp_reference_any_model_pct": [
            round(float(ref[(rounds >= r) & (rounds < r + 1), :12].sum(axis=1).mean() * 100), 1) for r in range(1, 11)
        ],
        "ramp_ours_any_model_pct": [round(float(np.asarray(ours)[r - 1, :12].sum() * 100), 1) for r in range(1, 11)],
    }
