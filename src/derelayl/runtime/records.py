"""Per-round records of a local network (``rounds.jsonl``) and the run's figure.

Shared by every ``derelayl run`` task: each task adds its own measure of model quality
(global test accuracy for real training, the latent score for the abstract model). Records
are appended once per settled round and reloaded on resume, so a killed run loses none.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from derelayl import jsonsafe
from derelayl.folders import save_figure, write_atomic
from derelayl.protocol.digest import compute_state_root
from derelayl.protocol.state import State
from derelayl.protocol.types import UNIT
from derelayl.stats import gini

__all__ = ["RecordingTask", "RoundLog"]

log = logging.getLogger(__name__)


class RoundLog:
    """``rounds.jsonl``: one record per settled round, derived from the chain and checked
    against it. Each record carries the state root of the round it describes: a record whose
    root differs from the chain's at that round belongs to another chain (the chain file was
    replaced), so the log is started again rather than mixed. A torn or garbage line (a crash
    mid-write, an edit) ends what is read; the file is rewritten without it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[int, dict[str, Any]] = {}
        if not path.exists():
            return
        lines = path.read_bytes().splitlines()
        for line in lines:
            try:
                rec = jsonsafe.loads(line)
                round_ = rec["round"]
                if not isinstance(round_, int) or isinstance(round_, bool) or round_ < 0 or "state" not in rec:
                    raise ValueError("not a round record")
            except (ValueError, TypeError, KeyError, RecursionError, UnicodeDecodeError):
                log.warning("%s: unreadable record after round %d; dropped", path, max(self.records, default=-1))
                break
            self.records[round_] = rec
        if len(self.records) != len(lines):
            self._rewrite()

    def _rewrite(self) -> None:
        write_atomic(self.path, "".join(json.dumps(self.records[r]) + "\n" for r in sorted(self.records)))

    def record(self, state: State, quality: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The record of the round that just settled (``state.round`` rounds done); computed
        and appended once, read back afterwards if it describes this very state."""
        root = compute_state_root(state).hex()
        rec = self.records.get(state.round)
        if rec is not None and rec.get("state") == root:
            return rec
        if rec is not None:
            log.warning("%s describes another chain; started again from round %d", self.path, state.round)
            self.records.clear()
            self._rewrite()
        held = state.held_version
        rec = {
            "round": state.round,
            **quality(),
            "latest_version": state.latest_version,
            "holding_latest": float((held >= state.latest_version).mean()),
            "holding_within_1": float((held >= state.latest_version - 1).mean()),
            "versions_behind": [int(state.latest_version - v) if v >= 0 else -1 for v in held.tolist()],
            "supply_coins": state.supply / UNIT,
            "gini": gini(state.balances),
            "state": root,
        }
        self.records[state.round] = rec
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return rec

    def history(self, upto: int) -> list[dict[str, Any]]:
        return [self.records[r] for r in sorted(self.records) if r <= upto]

    def figure(self, state: State, path: Path, quality_key: str, quality_label: str) -> str:
        """Quality of the protocol's first-ranked model, versions held, final balances."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        history = self.history(state.round)
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        rounds = [r["round"] for r in history]
        axes[0].plot(rounds, [r[quality_key] for r in history], marker=".")
        axes[0].set(xlabel="rounds settled", ylabel=quality_label, title="model ranked first by the protocol")
        bins: dict[str, Callable[[int], bool]] = {
            "latest": lambda b: b == 0,
            "latest-1": lambda b: b == 1,
            "older": lambda b: b > 1,
            "none": lambda b: b < 0,
        }
        bottom = np.zeros(len(history))
        for name, test in bins.items():
            share = np.array([np.mean([test(b) for b in r["versions_behind"]]) for r in history])
            axes[1].bar(rounds, share, bottom=bottom, label=name, width=1.0)
            bottom += share
        axes[1].set(xlabel="rounds settled", ylabel="share of participants", title="newest version held")
        axes[1].legend(fontsize=8)
        axes[2].bar(np.arange(state.n_participants), state.balances / UNIT)
        axes[2].set(xlabel="participant", ylabel="coins", title=f"balances after round {state.round}")
        axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.tight_layout()
        return save_figure(fig, path)


class RecordingTask:
    """Base of ``derelayl run`` tasks: a record of each settled round (with the task's
    ``quality``) is kept once the round has settled, or when a run starts or resumes at a
    round boundary, and a line of it is shown."""

    log: RoundLog

    def quality(self, state: State) -> dict[str, Any]:
        """The task's measure of the protocol's first-ranked model (``state.live`` order)."""
        raise NotImplementedError

    def line(self, state: State, rec: dict[str, Any]) -> str:
        """One line of progress from the round's record."""
        raise NotImplementedError

    def follow(self, state: State) -> None:
        """After every applied block, also while a stored chain is replayed (default: nothing)."""

    def settled(self, state: State) -> str:
        return self.line(state, self.record(state))

    def record(self, state: State) -> dict[str, Any]:
        return self.log.record(state, lambda: self.quality(state))
