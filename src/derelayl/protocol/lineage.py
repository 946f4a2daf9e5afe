"""Lineage rewards whose per-round cost does not grow with lineage depth.

The rule (PROTOCOL.md, settlement): for every selected model, ``lineage_reward`` is minted to
the owner of the model and to the owner of every ancestor back to genesis. (A model's owner
is the participant that produced it: its trainer; the genesis model's owner is the genesis
owner.) Walking every ancestor of every selected model costs O(rounds) per model, O(rounds^2)
per run.

Why it can be done in bounded work: every parent is a model selected in the previous round,
so the ancestors that can still earn are the models on *live* lineages. Going up from the
newest generation, live lineages merge; above their most recent common ancestor every
ancestor earns exactly ``S`` rewards per round (S = models selected this round). We therefore
keep

- ``levels``: one small array pair (owner, parent position) per generation below that common
  ancestor, pruned of dead branches every round, and
- ``trunk``: for the single chain above it, how many of its models each participant owns.

A round then costs O(participants + live subtree), independent of depth. The decaying
royalty needs no trunk: beyond the horizon where gamma**d rounds to zero units nothing earns,
so only that many generations are kept. A property test checks all of this against the
naive walk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

__all__ = ["Level", "LineageTree", "compute_multipliers"]

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
_EXACT_FLOAT = float(2**53)


@dataclass
class Level:
    """One generation of live models: owners, and each model's parent position one level up."""

    owner: I64
    parent: I64


@dataclass
class LineageTree:
    """Live lineages below the trunk, plus the trunk's per-participant model counts."""

    multipliers: tuple[int, ...]
    """Units per ancestor at distance d = 0, 1, ...; the last value holds for all larger d."""
    levels: list[Level] = field(default_factory=list)
    trunk: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @classmethod
    def genesis(cls, owner: int, n_participants: int, multipliers: tuple[int, ...]) -> LineageTree:
        tree = cls(multipliers=multipliers, trunk=np.zeros(n_participants, dtype=np.int64))
        tree.levels.append(Level(np.array([owner], dtype=np.int64), np.array([-1], dtype=np.int64)))
        return tree

    def grow(self, n_participants: int) -> None:
        """Make room for newly registered participants."""
        if n_participants > self.trunk.size:
            extra = np.zeros(n_participants - self.trunk.size, dtype=np.int64)
            self.trunk = np.concatenate([self.trunk, extra])

    @property
    def depth_kept(self) -> int:
        return len(self.levels)

    def multiplier(self, distance: int) -> int:
        m = self.multipliers
        return m[distance] if distance < len(m) else m[-1]

    def settle(self, owners: I64, parents: I64) -> I64:
        """Append the selected models (owners, parent positions in the live level) and return
        the lineage payout per participant, in units. The new models become the live level."""
        n = self.trunk.size
        payout = np.zeros(n, dtype=np.int64)
        selected = int(owners.size)
        if selected == 0:
            return payout
        self.levels.append(Level(owners.astype(np.int64), parents.astype(np.int64)))
        # weights[i]: how many of this round's selected models descend from model i of the level.
        # Counts are small integers, exact in float64 (what bincount returns).
        weights: F64 = np.ones(selected, dtype=np.float64)
        live_masks: list[NDArray[np.bool_]] = []
        paid: list[tuple[I64, F64, int]] = []  # (owners, descendant counts, units per count)
        last = len(self.levels) - 1
        for distance, index in enumerate(range(last, -1, -1)):
            level = self.levels[index]
            live_masks.append(weights > 0)
            mult = self.multiplier(distance)
            if mult:
                paid.append((level.owner, weights, mult))
            if index > 0:
                up = self.levels[index - 1].owner.size
                weights = np.bincount(level.parent, weights=weights, minlength=up).astype(np.float64, copy=False)
        if paid:
            who = np.concatenate([owner for owner, _, _ in paid])
            values = np.concatenate([w * m for _, w, m in paid])
            if values.sum() < _EXACT_FLOAT:  # every partial sum is an exact integer in float64
                payout += np.rint(np.bincount(who, weights=values, minlength=n)).astype(np.int64)
            else:  # beyond 2**53 float64 loses units: the same sums in integers
                exact = np.concatenate([w.astype(np.int64) * m for _, w, m in paid])
                np.add.at(payout, who, exact)
        trunk_mult = self.multiplier(len(self.levels))
        if trunk_mult:
            payout += self.trunk * (selected * trunk_mult)
        live_masks.reverse()
        self._prune(live_masks)
        return payout

    def _prune(self, live_masks: list[NDArray[np.bool_]]) -> None:
        """Drop dead branches, fold coalesced top levels into the trunk, drop unpaid levels."""
        for index, mask in enumerate(live_masks):
            if np.count_nonzero(mask) == mask.size:
                continue
            level = self.levels[index]
            new_pos = np.cumsum(mask) - 1
            self.levels[index] = Level(level.owner[mask], level.parent[mask])
            if index + 1 < len(self.levels):
                child = self.levels[index + 1]
                child.parent = new_pos[child.parent]
        # Distances >= horizon all earn the same constant; levels beyond it that have
        # coalesced to one model (or earn nothing) leave the level list.
        horizon = len(self.multipliers) - 1
        constant = self.multipliers[-1]
        while len(self.levels) > 1 and len(self.levels) - 1 >= horizon:
            top = self.levels[0]
            if constant == 0:
                del self.levels[0]
            elif top.owner.size == 1:
                self.trunk[int(top.owner[0])] += 1
                del self.levels[0]
            else:
                break


def compute_multipliers(scheme: str, reward: int, decay_num: int, decay_den: int) -> tuple[int, ...]:
    """Units an ancestor earns at distance d. Constant schemes have one entry."""
    if scheme != "decay":
        return (reward,)
    values: list[int] = []
    num, den = 1, 1
    while True:
        value = reward * num // den
        values.append(value)
        if value == 0:
            return tuple(values)
        num *= decay_num
        den *= decay_den
