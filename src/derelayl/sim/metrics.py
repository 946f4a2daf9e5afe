"""Per-round measures, computed in vectorised chunks of rounds.

The engine copies a few per-participant arrays into a chunk buffer after each round (a
memcpy each); every ``chunk`` rounds the measures of all buffered rounds are computed at
once, on a background thread, with row-wise numpy (sort, rank, bincount over a rounds x participants block). Python
work per round therefore stays constant and tiny, and memory stays bounded
(``CHUNK_ELEMENTS`` per buffer) however many rounds or participants there are.

Participants not yet registered in a row (``--join-rate``) are masked out of that row.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from derelayl.agents.policies import taker_value
from derelayl.protocol.types import UNIT
from derelayl.stats import gini_rows

__all__ = [
    "CHUNK_ELEMENTS",
    "VERSION_BINS",
    "Recorder",
    "gini_rows",
    "spearman_rows",
    "version_shares_rows",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
CHUNK_ELEMENTS = 2_000_000
VERSION_BINS = ("latest", *(f"latest-{d}" for d in range(1, 11)), "older", "none")


def _average_ranks(values: F64) -> F64:
    """Row-wise ranks (1-based, ties get their average rank); NaN stays NaN."""
    rows, cols = values.shape
    order = np.argsort(values, axis=1)  # tie order is irrelevant: ties get their average rank
    s = np.take_along_axis(values, order, axis=1)
    new = np.ones((rows, cols), dtype=bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]  # a tie group starts here (never spans rows)
    flat = new.ravel()
    starts = np.flatnonzero(flat)
    sizes = np.diff(np.append(starts, flat.size))
    group = np.cumsum(flat) - 1
    mid = starts + (sizes - 1) / 2.0  # average flat position of each tie group
    ranks_sorted = (mid[group] - np.repeat(np.arange(rows) * cols, cols) + 1.0).reshape(rows, cols)
    ranks_sorted[np.isnan(s)] = np.nan
    ranks: F64 = np.empty_like(ranks_sorted)
    np.put_along_axis(ranks, order, ranks_sorted, axis=1)
    return ranks


def _average_ranks_counts(values: I64, active: NDArray[np.bool_]) -> F64:
    """``_average_ranks`` for small non-negative integers (counts): O(n) by counting."""
    rows = values.shape[0]
    top = int(values.max(initial=0)) + 1
    code = np.where(active, values, top) + (top + 1) * np.arange(rows)[:, None]
    hist = np.bincount(code.ravel(), minlength=(top + 1) * rows).reshape(rows, top + 1)[:, :top]
    below = np.cumsum(hist, axis=1) - hist
    avg = below + (hist + 1) / 2.0
    ranks = np.take_along_axis(avg, np.where(active, values, 0), axis=1)
    return np.where(active, ranks, np.nan)


def spearman_rows(a: F64, b: NDArray[Any], b_ranks: F64 | None = None) -> F64:
    """Spearman rank correlation of each row pair (NaN where a row is constant)."""
    ra = _average_ranks(a)
    rb = _average_ranks(b) if b_ranks is None else b_ranks
    ra = ra - np.nanmean(ra, axis=1, keepdims=True)
    rb = rb - np.nanmean(rb, axis=1, keepdims=True)
    num = np.nansum(ra * rb, axis=1)
    den = np.sqrt(np.nansum(ra * ra, axis=1) * np.nansum(rb * rb, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def version_shares_rows(held: I64, latest: I64, active: NDArray[np.bool_]) -> F64:
    """Share (0..1) of active participants in each bin of ``VERSION_BINS`` per row."""
    rows = held.shape[0]
    lag = latest[:, None] - held
    code = np.where(held < 0, 12, np.minimum(lag, 11))
    code = np.where(active, code, 13)
    flat = code + 14 * np.arange(rows)[:, None]
    counts = np.bincount(flat.ravel(), minlength=14 * rows).reshape(rows, 14)[:, :13]
    shares: F64 = counts / np.maximum(active.sum(axis=1), 1)[:, None]
    return shares


@dataclass
class _Buffers:
    """One chunk of buffered rounds (two sets alternate: one fills while one is measured)."""

    bal: I64
    held: I64
    trained: I64
    reward: I64
    contrib: I64
    n: I64
    latest: I64

    @classmethod
    def empty(cls, chunk: int, width: int) -> _Buffers:
        shape = (chunk, width)
        return cls(
            np.zeros(shape, dtype=np.int64),
            np.full(shape, -1, dtype=np.int64),
            np.full(shape, -1, dtype=np.int64),
            np.zeros(shape, dtype=np.int64),
            np.zeros(shape, dtype=np.int64),
            np.zeros(chunk, dtype=np.int64),
            np.zeros(chunk, dtype=np.int64),
        )


@dataclass
class Recorder:
    """Buffers per-round state and turns it into per-round measures.

    A full chunk is measured on a background thread while the next chunk fills: the
    measures are numpy sorts and reductions that release the GIL, so they overlap with the
    protocol's Python-heavy rounds on the second core. Rows are disjoint and chunks are
    measured in order, so results do not depend on timing.
    """

    rounds: int
    width: int
    sample: I64
    """Participant columns kept for the coins figure."""
    initial: int = 0
    """Participants registered at genesis; later columns are newcomers (``--join-rate``)."""
    balance_trace: Any = None
    version_trace: Any = None
    """Optional (rounds x width) arrays (e.g. ``np.lib.format.open_memmap``) to fill."""
    chunk: int = 0
    _row: int = 0
    _filled: int = 0
    out: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.chunk:
            # at most CHUNK_ELEMENTS per buffer, and ~8 chunks per run so that all but the
            # last are measured while the simulation goes on
            per_run = max(64, -(-self.rounds // 8))
            self.chunk = max(1, min(self.rounds, CHUNK_ELEMENTS // max(self.width, 1), per_run))
        self._sets = [_Buffers.empty(self.chunk, self.width), _Buffers.empty(self.chunk, self.width)]
        self._buf = self._sets[0]
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim-measures")
        self._pending: Future[None] | None = None
        r = self.rounds
        self.out = {
            "minted": np.zeros(r, dtype=np.int64),
            "burned": np.zeros(r, dtype=np.int64),
            "participants": np.zeros(r, dtype=np.int64),
            "live_models": np.zeros(r, dtype=np.int64),
            "best_z": np.zeros(r),
            "gini": np.zeros(r),
            "covers_bid": np.zeros(r),
            "spearman": np.zeros(r),
            "version_shares": np.zeros((r, len(VERSION_BINS))),
            "newcomer_wait": np.full(r, np.nan),
            "sampled_balances": np.zeros((r, self.sample.size)),
        }
        self.first_hold = np.full(self.width, -1, dtype=np.int64)
        self.join_row = np.full(self.width, -1, dtype=np.int64)

    def record(
        self,
        balances: I64,
        held: I64,
        trained: I64,
        reward: I64,
        contrib: I64,
        latest: int,
        minted: int,
        burned: int,
        live: int,
        best: float,
    ) -> None:
        """One settled round; arrays may be shorter than ``width`` (not all joined yet).
        ``held``: newest version held (the version figure); ``trained``: newest version
        trained (what the reference taker bid values a slot against)."""
        i, n, buf = self._filled, balances.size, self._buf
        buf.bal[i, :n] = balances
        buf.held[i, :n] = held
        buf.trained[i, :n] = trained
        buf.reward[i, :n] = reward
        buf.contrib[i, :n] = contrib
        buf.n[i] = n
        buf.latest[i] = latest
        r = self._row + i
        o = self.out
        o["minted"][r], o["burned"][r], o["participants"][r] = minted, burned, n
        o["live_models"][r], o["best_z"][r] = live, best
        self._filled += 1
        if self._filled == self.chunk:
            self._submit()

    def _submit(self) -> None:
        """Hand the filled chunk to the measuring thread; fill the other set meanwhile."""
        m = self._filled
        if m == 0:
            return
        self._wait()  # the other set is free again once its measures are done
        self._pending = self._pool.submit(self._measure, self._buf, self._row, m)
        self._buf = self._sets[1] if self._buf is self._sets[0] else self._sets[0]
        self._row += m
        self._filled = 0

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()  # re-raises an error of the measuring thread
            self._pending = None

    def flush(self) -> None:
        """Measure what is buffered and wait for every chunk; call once at the end."""
        self._submit()
        self._wait()
        self.close()

    def close(self) -> None:
        """Stop the measuring thread (also after an error mid-run)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _measure(self, buf: _Buffers, row: int, m: int) -> None:
        rows = slice(row, row + m)
        bal, held, n = buf.bal[:m], buf.held[:m], buf.n[:m]
        active = np.arange(self.width)[None, :] < n[:, None]
        coins = np.where(active, bal / UNIT, np.nan)
        o = self.out
        o["gini"][rows] = gini_rows(coins)
        # the reference taker bid (trained-version basis), before the balance cap
        bid = taker_value(buf.latest[:m, None], buf.trained[:m])
        o["covers_bid"][rows] = ((bal >= bid) & active).sum(axis=1) / n
        contrib = buf.contrib[:m]
        o["spearman"][rows] = spearman_rows(
            np.where(active, buf.reward[:m].astype(np.float64), np.nan),
            contrib,
            _average_ranks_counts(contrib, active),
        )
        o["version_shares"][rows] = version_shares_rows(held, buf.latest[:m], active)
        o["sampled_balances"][rows] = bal[:, self.sample] / UNIT
        self._newcomers(held, active, row, m)
        if self.balance_trace is not None:
            self.balance_trace[rows] = np.where(active, bal / UNIT, 0.0)
            self.version_trace[rows] = np.where(active, held, -1)

    def _newcomers(self, held: I64, active: NDArray[np.bool_], row: int, m: int) -> None:
        """Row of registration and of first model held; mean wait of those served per row."""
        row_ids = row + np.arange(m)
        seen = active.any(axis=0) & (self.join_row < 0)
        self.join_row[seen] = row + np.argmax(active[:, seen], axis=0)
        has = (held >= 0) & active
        fresh = has.any(axis=0) & (self.first_hold < 0)
        self.first_hold[fresh] = row + np.argmax(has[:, fresh], axis=0)
        served = fresh & (np.arange(self.width) >= self.initial)
        if served.any():
            waits = self.first_hold[served] - self.join_row[served]
            sums = np.bincount(self.first_hold[served] - row, weights=waits, minlength=m)
            counts = np.bincount(self.first_hold[served] - row, minlength=m)
            with np.errstate(invalid="ignore"):
                self.out["newcomer_wait"][row_ids] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
