"""How an honest tester scores a child against the models it is compared with, case by case:
the copy rule (``Params.copy_rule``), for a child that behaves like another live model rather
than like its parent, and the sign test (``Params.improvement_z``), for a child whose lead
over that model is within the noise of the round's cases.

The improvement rule compares a child with its parent only, so a copier that commits a copy
of a *better* live model passes it. With the copy rule, each child is compared with its
*nearest* live model: the one whose predictions on the round's test cases differ from the
child's in the fewest cases (its parent on a tie, else the first in rank order). A child
whose nearest model is not its parent must beat that model by ``min_improvement`` too, or
the tester scores it 0, which fails the improvement rule. This is the ε-rule of Bittensor's
model subnets (a copy must improve on what it copies) applied to the model a child actually
resembles, without a threshold: an exact copy predicts exactly what its source predicts.

A child's lead over the model it is compared with is ``b - c``: ``b`` cases only the child
gets right, ``c`` only the other. The improvement rule asks ``b - c >= min_improvement``; a
child that differs from its parent in many cases (a poisoner's, trained on flipped labels)
passes that by chance as often as not. With ``improvement_z = z`` (hundredths of a standard
deviation) the lead must also pass the one-sided sign (McNemar) test: under "no better", each
of the ``b + c`` cases the two split is a fair coin, so ``b - c`` has standard deviation
``sqrt(b + c)``, and the child passes only if ``100 (b - c) >= z sqrt(b + c)``, in integers
``b > c`` and ``10^4 (b - c)^2 >= z^2 (b + c)``.

The chain sees only scores, like the count of correct cases itself; the median of several
testers (and, with pooled cases, their exact agreement) enforces them. Pure: the predictions
come from the tester's own evaluation of the models.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["PREDICTIONS_NOT_ENCRYPTED", "apply_copy_rule", "apply_improvement_z", "nearest_live", "significant"]

PREDICTIONS_NOT_ENCRYPTED = (
    "copy_rule and improvement_z compare models' predictions in the clear: they cannot run with encrypted scoring"
)

I64 = NDArray[np.int64]
Bools = NDArray[np.bool_]


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


def significant(b: int, c: int, z: int) -> bool:
    """Whether a lead of ``b`` cases won against ``c`` lost passes the one-sided sign test at
    ``z`` hundredths of a standard deviation: ``100 (b - c) >= z sqrt(b + c)``, exactly."""
    return b > c and 10_000 * (b - c) ** 2 >= z * z * (b + c)


def apply_improvement_z(scores: I64, right: Bools, live_right: Bools, compared: I64, z: int) -> I64:
    """The children's scores after the sign test: child ``i`` (``right[i]``: which cases it gets
    right) keeps its score only if its lead over live model ``compared[i]`` (``live_right[j]``)
    is significant at ``z``; otherwise 0, which fails the improvement rule."""
    out = np.array(scores, dtype=np.int64, copy=True)
    for i, j in enumerate(compared.tolist()):
        b = int((right[i] & ~live_right[j]).sum())
        c = int((live_right[j] & ~right[i]).sum())
        if not significant(b, c, z):
            out[i] = 0
    return out
