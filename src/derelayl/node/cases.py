"""Test cases between nodes, for pooled cases (``Params.pooled_cases``): every tester scores
on the cases of all the round's testers, so each one serves its own at ``GET
/cases/round/<r>`` — only once the commit block of round ``r`` is in, so nobody sees them
before the commitments — and fetches the others' before it scores.

A tester's cases are a pure function of its data, seed and the round, so a node that has
restarted serves the very same bytes; they are kept under ``HOME/cases/round-<r>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from derelayl.errors import DerelaylError, ModelError
from derelayl.folders import write_atomic
from derelayl.learning.data import case_blob, cases_from_blob
from derelayl.protocol.state import State
from derelayl.protocol.types import Phase

if TYPE_CHECKING:
    from derelayl.node.core import Node

__all__ = ["CaseExchange"]

Cases = tuple[NDArray[np.float32], NDArray[np.int64]]


class CaseExchange:
    def __init__(self, node: Node) -> None:
        self.node = node

    def serve(self, round_: int) -> bytes:
        """This node's cases of ``round_``. ``LookupError``: not yet (retry); ``FileNotFoundError``:
        this node was not a tester of that round."""
        node = self.node
        path = node.home / "cases" / f"round-{round_}"
        if path.is_file():
            return path.read_bytes()
        view = node.view
        if round_ > view.round or (round_ == view.round and view.phase < Phase.TEST):
            raise LookupError(f"round {round_}'s cases are published after its commit block")
        if round_ != view.round or view.me is None or view.me not in view.testers:
            raise FileNotFoundError(f"this node published no test cases in round {round_}")
        state = node.client.state
        # the brain's published cases (a dishonest one's may depend on the round's commitments)
        if state.round == round_:
            x, y = node.brain.own_cases(state, view.me)
        else:
            x, y = node.brain.cases_for(round_, view.me, state.params.test_cases)
        blob = case_blob(x, y)
        write_atomic(path, blob)
        return blob

    def fetch(self, state: State, tester: int) -> Cases:
        """Another tester's cases of this round, from its node; waits while it has not reached
        the test phase, gives up once the phase this node acts for is over."""
        node = self.node
        last: Exception | None = None
        for _ in node.while_acting(f"cases of tester {tester}"):
            try:
                blob = node.peers.fetch_cases(state.keys[tester], state.round)
                node.stats["bytes_in"] += len(blob)
                return cases_from_blob(blob)
            except (LookupError, OSError, DerelaylError) as exc:
                last = exc
        raise ModelError(f"the test cases of tester {tester} could not be fetched ({last})")
