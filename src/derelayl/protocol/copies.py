"""The copy rule (``Params.copy_rule``): how an honest tester scores a child that behaves like
another live model rather than like its parent.

The improvement rule compares a child with its parent only, so a copier that commits a copy
of a *better* live model passes it. With the copy rule, each child is compared with its
*nearest* live model: the one whose predictions on the round's test cases differ from the
child's in the fewest cases (its parent on a tie, else the first in rank order). A child
whose nearest model is not its parent must beat that model by ``min_improvement`` too, or
the tester scores it 0, which fails the improvement rule. This is the ε-rule of Bittensor's
model subnets (a copy must improve on what it copies) applied to the model a child actually
resembles, without a threshold: an exact copy predicts exactly what its source predicts.

The chain sees only scores, like the count of correct cases itself; the median of several
testers (and, with pooled cases, their exact agreement) enforces it. Pure: the predictions
come from the tester's own evaluation of the models.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["COPY_RULE_NOT_ENCRYPTED", "apply_copy_rule", "nearest_live"]

COPY_RULE_NOT_ENCRYPTED = "copy_rule compares models' predictions in the clear: it cannot run with encrypted scoring"

I64 = NDArray[np.int64]


def nearest_live(child: I64, live: I64, parent: int) -> int:
    """Position of the live model whose predictions (``live[j]``, one row per live model)
    differ from ``child``'s in the fewest cases; ``parent`` wins a tie, then rank order."""
    differ = (live != child[None, :]).sum(axis=1)
    best = int(differ.min())
    return parent if differ[parent] == best else int(np.flatnonzero(differ == best)[0])


def apply_copy_rule(
    scores: I64, live_scores: I64, child_preds: I64, live_preds: I64, parents: I64, margin: int
) -> tuple[I64, I64]:
    """The children's scores after the copy rule, and each child's nearest live model.

    ``scores[i]``/``child_preds[i]``: child ``i``'s score and predictions; ``live_scores[j]``/
    ``live_preds[j]``: the same for live model ``j``; ``parents[i]``: the live position of
    child ``i``'s parent; ``margin``: ``min_improvement``."""
    out = np.array(scores, dtype=np.int64, copy=True)
    nearest = np.array([nearest_live(child_preds[i], live_preds, int(parents[i])) for i in range(len(out))], np.int64)
    for i, j in enumerate(nearest.tolist()):
        if j != int(parents[i]) and out[i] < live_scores[j] + margin:
            out[i] = 0
    return out, nearest
