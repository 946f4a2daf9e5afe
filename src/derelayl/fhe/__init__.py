"""Encrypted scoring: testers score committed models under CKKS without seeing their weights
(``ckks``: the scheme and the model's evaluation; ``scoring``: commitments and transcripts in
a round). Design and threat model: ``docs/fhe.md``."""
