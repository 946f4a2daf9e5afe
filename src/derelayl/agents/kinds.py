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
    "omitting_miner",
    "case_picker",
)
UNTRAINED = ("free_rider", "copier")
"""Kinds that train nothing and hand on a model they did not make."""

__all__ = ["HONEST", "KINDS", "UNTRAINED"]
