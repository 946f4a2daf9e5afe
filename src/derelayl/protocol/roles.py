"""Who does what in a round: model owners, trainers, miners, the four block miners, testers.

Drawn from the seed carried in state (``compute_rng(state, "roles")``), at genesis and at the
end of every settlement, from the participants registered by then.
"""

from __future__ import annotations

import numpy as np

from derelayl.protocol.state import Roles, State, compute_rng

__all__ = ["assign_roles"]


def assign_roles(state: State) -> Roles:
    """Model owners hold the live models; trainers are drawn from the rest so that owners +
    trainers = cap; everyone else mines. One miner is drawn per block of the round."""
    n = state.n_participants
    model_owners = np.unique(state.live.owner)
    cap = state.params.active_cap(n)
    others_mask = np.ones(n, dtype=bool)
    others_mask[model_owners] = False
    others = np.flatnonzero(others_mask)
    n_trainers = max(0, min(cap - model_owners.size, others.size - 1))
    rng = compute_rng(state, "roles")
    drawn = rng.permutation(others)
    trainers = np.sort(drawn[:n_trainers])
    miners = np.sort(drawn[n_trainers:])
    block_miners = rng.choice(miners, size=4)
    testers = np.array([block_miners[2]], dtype=np.int64)
    if state.params.testers > 1:
        # Co-testers: distinct miners other than the testing miner (fewer if miners are few).
        others = miners[miners != block_miners[2]]
        extra = rng.choice(others, size=min(state.params.testers - 1, others.size), replace=False)
        testers = np.concatenate([testers, extra.astype(np.int64)])
    return Roles(
        model_owners=model_owners.astype(np.int64),
        trainers=trainers.astype(np.int64),
        miners=miners.astype(np.int64),
        block_miners=(int(block_miners[0]), int(block_miners[1]), int(block_miners[2]), int(block_miners[3])),
        testers=testers,
    )
