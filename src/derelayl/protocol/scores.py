"""The round's scores from testers' reports: the lower median per model, and which committed
models the improvement rule lets be selected. The test block sets them; in a disputed round
the appeal (``protocol.appeals``) sets them again from the appellants' reports. The contract's
``_median`` and ``_set_scores`` (``contracts/TestAndSettle.vy``) do the same."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from derelayl.protocol.state import State

__all__ = ["compute_eligible", "lower_median", "set_scores"]

I64 = NDArray[np.int64]


def lower_median(rows: I64) -> I64:
    """Per column, the lower median of the rows (one row per report)."""
    median: I64 = np.sort(rows, axis=0)[(rows.shape[0] - 1) // 2]
    return median


def compute_eligible(state: State, medians: I64) -> NDArray[np.bool_]:
    """Which committed models may be selected. ``medians``: the round's median scores, one per
    committed model, then (with the improvement rule) one per live model. A child passes if it
    scores at least its parent (the live model its pair's owner held) + ``min_improvement``."""
    n = len(state.commits)
    margin = state.params.min_improvement
    if margin is None:
        return np.ones(n, dtype=bool)
    parent = medians[n + state.pairs.live_pos[state.commit_pair]]
    # (Python integers: a score near the int64 limits + the margin must not wrap around)
    return np.array([int(c) >= int(p) + margin for c, p in zip(medians[:n], parent, strict=True)], dtype=bool)


def set_scores(state: State, medians: I64) -> None:
    """The committed models' scores and eligibility from the round's medians."""
    state.commits.score = medians[: len(state.commits)].copy()
    state.commit_eligible = compute_eligible(state, medians)
