"""What a node's HTTP handlers may read: a ``View`` of the chain after the last sync, above
all who the chain entitles to fetch which model from this node now (``make_view``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from derelayl.protocol.state import State
from derelayl.protocol.types import Phase

__all__ = ["View", "make_view"]


@dataclass(frozen=True)
class View:
    round: int
    phase: Phase
    keys: tuple[bytes, ...]
    me: int | None
    entitled: dict[bytes, frozenset[int]] = field(default_factory=dict)
    """Digest -> participants entitled to fetch it from us now."""
    testers: frozenset[int] = frozenset()
    """This round's testers."""
    clear: dict[bytes, frozenset[int]] = field(default_factory=dict)
    """With encrypted scoring: commitment -> participants entitled to the clear model file it
    names (a matched trainer, to its parent). Everyone else entitled to a commitment gets its
    manifest and scores the ciphertexts."""


def make_view(state: State, me: int | None, index: dict[int, bytes], timed_out: bool, encrypted: bool = False) -> View:
    """``index``: model id -> committed digest (``ModelBook.index``); ``timed_out``: the test
    phase (or a disputed round's settle phase) has timed out on chain (then anyone may fetch
    what testers, or appellants, may); ``encrypted``: models are scored under encryption (then,
    with challenges on, the round's trainers may re-score each other's children in the
    challenge window: manifests, ciphertexts and decryptions, never a model file)."""
    entitled: dict[bytes, set[int]] = defaultdict(set)
    clear: dict[bytes, set[int]] = defaultdict(set)
    if me is not None and state.phase == Phase.COMMIT:
        # a matched trainer may fetch the parent its pair names (from whoever holds it)
        for trainer, pos in zip(state.pairs.trainer.tolist(), state.pairs.live_pos.tolist(), strict=True):
            digest = index.get(int(state.live.model_id[pos]))
            if digest is not None:
                entitled[digest].add(int(trainer))
                clear[digest].add(int(trainer))
    scorers: Iterable[int] = ()
    if state.phase == Phase.TEST and state.roles is not None:
        scorers = state.roles.testers.tolist()
    elif state.phase == Phase.SETTLE and state.appeal_open:
        scorers = state.dispute.appellants.tolist()  # a disputed round: the appellants re-score
    if me is not None and scorers:
        # after the commit block, the round's testers (in a disputed round's settle phase, its
        # appellants) may fetch every committed model; once the phase has timed out on chain,
        # anyone may (a volunteer produces the block of a silent miner with scores of its own)
        scorers = range(state.n_participants) if timed_out else scorers
        for digest in state.commitments:
            entitled[digest].update(int(t) for t in scorers)
        if state.params.min_improvement is not None:  # the improvement rule scores the parents too
            for model in state.live.model_id.tolist():
                digest = index.get(int(model))
                if digest is not None:
                    entitled[digest].update(int(t) for t in scorers)
    if me is not None and encrypted and state.params.challenge_bond and state.phase == Phase.SETTLE:
        if state.dispute is not None and not state.appeal_open:  # the challenge window (re-checks)
            for digest in state.commitments:
                entitled[digest].update(int(t) for t in state.commits.owner.tolist())
    return View(
        state.round,
        state.phase,
        tuple(state.keys),
        me,
        {d: frozenset(who) for d, who in entitled.items()},
        frozenset(state.roles.testers.tolist()) if state.roles is not None else frozenset(),
        {d: frozenset(who) for d, who in clear.items()},
    )
