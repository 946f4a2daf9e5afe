"""A digest of the whole protocol state, recorded in every block header so that any two
backends (or a replay) that diverge are caught at the first block where they differ."""

from __future__ import annotations

import hashlib

import numpy as np

from derelayl.protocol.state import State

__all__ = ["compute_state_root"]


def compute_state_root(state: State) -> bytes:
    h = hashlib.sha256()

    def add(*items: object) -> None:
        for item in items:
            if isinstance(item, np.ndarray):
                h.update(str(item.dtype).encode())
                h.update(np.ascontiguousarray(item).tobytes())
            elif isinstance(item, bytes):
                h.update(len(item).to_bytes(4, "big") + item)
            else:
                h.update(repr(item).encode())
            h.update(b"|")

    add(state.round, int(state.phase), state.phase_start, state.escrow, state.minted, state.burned)
    add(state.latest_version, state.next_model_id, state.beacon, *state.keys)
    add(state.balances, state.held_version, state.trained_version)
    for models in (state.live, state.commits):
        add(models.model_id, models.owner, models.version, models.score)
    pairs = state.pairs
    add(pairs.live_pos, pairs.model_owner, pairs.mo_deposit, pairs.trainer, pairs.trainer_deposit)
    add(state.commit_pair, *state.commitments)
    if state.params.min_improvement is not None:  # (absent from roots of chains without the rule)
        add(state.commit_eligible)
    if state.posted:  # (only while a commit phase has posted commitments: older roots unchanged)
        add(b"posted", *(item for t in sorted(state.posted) for item in (t, state.posted[t][0])))
    add(state.lineage.trunk, *state.lineage.multipliers)
    for level in state.lineage.levels:
        add(level.owner, level.parent)
    return h.digest()
