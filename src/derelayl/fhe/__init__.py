"""Encrypted scoring: testers score committed models under CKKS without seeing their weights
(``ckks``: the scheme, keys and encrypted models; ``query``: the tester's evaluation and the
trainer's decryption; ``seal``: SEAL's ciphertext API; ``scoring``: commitments and
transcripts in a round). Design and threat model: ``docs/fhe.md``."""
