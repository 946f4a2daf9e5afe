"""The kinds of dishonest participant (behaviours in ``derelayl.agents.adversaries``), named
apart from their PyTorch code so that configs can be checked without loading it."""

HONEST = "honest"
KINDS = (
    "free_rider",
    "copier",
    "label_flip",
    "backdoor",
    "lying_tester",
    "strategic_liar",
    "inflating_liar",
    "omitting_miner",
    "case_picker",
    "vexatious_challenger",
)
LIARS = ("lying_tester", "strategic_liar", "inflating_liar")
"""Kinds that, as testers (or appellants), report other scores than they measured."""
UNTRAINED = ("free_rider", "copier")
"""Kinds that train nothing and hand on a model they did not make."""

__all__ = ["HONEST", "KINDS", "LIARS", "UNTRAINED"]
