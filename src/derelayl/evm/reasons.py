"""The contract's revert reasons, spelled out.

EIP-170 caps a contract at 24,576 bytes, and reason strings are stored in the code, so the
contract reverts with the core's exception class and a number (``RoleError: 23``); ``expand``
turns that into the sentence a user reads (``RoleError: committer was not matched as a trainer
this round``). ``tests/test_contract.py`` checks that every number in the contract's source has
its sentence here, under the same class.
"""

from __future__ import annotations

import re

__all__ = ["REASONS", "expand"]

REASONS: dict[int, str] = {
    1: "a network needs at least 2 participants",
    2: "k, test_cases or testers out of range",
    3: "select_fraction out of range",
    4: "cap_fraction out of range",
    5: "unknown reward scheme",
    6: "amount above the allowance",
    7: "sender is not a registered participant",
    8: "recipient is not a registered participant",
    9: "amount out of range",
    10: "transfer above the sender's balance",
    11: "the zero address cannot register",
    12: "key already registered",
    13: "participant limit reached",
    14: "trainer bids are not in canonical order",
    15: "model-owner bids are not in the order of the live models",
    16: "trainer deposit above balance",
    17: "owner deposit above balance",
    18: "join not signed by its key",
    19: "commitment posted outside its round's commit phase",
    20: "the trainer already posted a commitment this round",
    21: "a commitment with this digest was already posted this round",
    22: "commitment from unknown participant",
    23: "committer was not matched as a trainer this round",
    24: "commitment not signed by its trainer",
    25: "a trainer committed twice",
    26: "commitments are not in the order of the pairs",
    27: "duplicate commitment digest",
    28: "the block leaves out a commitment posted to the contract",
    29: "wrong number of test cases",
    30: "one score per committed model",
    31: "co-tester reports do not match the round's co-testers",
    32: "co-tester gave the wrong number of scores",
    33: "co-tester scores not signed by the co-tester",
    34: "block for another round",
    35: "block out of phase",
    36: "block not produced by the drawn miner",
    37: "block produced by an unknown participant",
    38: "bid from unknown participant",
    39: "bidder is not a model owner this round",
    40: "bidder is not a trainer this round",
    41: "participant bid twice",
    42: "bid above balance",
    43: "trainer bid below the minimum deposit",
    44: "bid not signed by its bidder",
    45: "settle block carries appeal reports, but no appeal is open in this round",
    46: "appeal reports do not match the round's appellants",
    47: "appellant gave the wrong number of scores",
    48: "appeal scores not signed by the appellant",
    49: "appeal_testers must be at most 16 and needs pooled_cases",
    50: "case commitments, but the rules take none (case_commitments is off)",
    51: "case commitments do not match the round's testers",
    52: "case commitment not signed by its tester",
    53: "a tester reports but committed to no test cases in the deposit block",
    54: "a tester's test cases are not the ones it committed to",
    55: "tester_stake needs appeal_testers (only an appeal proves a lie)",
    56: "the sender tests this round: with tester_stake its coins stay put until the settlement",
    57: "challenge_bond needs appeal_testers (a challenge opens an appeal)",
    58: "challenge_window must be in 0..1000000 blocks",
    59: "challenge_bond and challenge_window go together: a bond of at least 1 unit and a window of at least 1 block, "
    "or neither",
    60: "a challenge, but the rules take none (challenge_bond is 0)",
    61: "a challenge outside its round's settle phase",
    62: "challenge from an unknown participant",
    63: "the round is already under appeal: nothing to challenge",
    64: "the challenger holds less than the challenge bond",
    65: "settle block inside the challenge window (the round may still be challenged)",
}

_CODED = re.compile(r"^([A-Z][A-Za-z]*Error): (\d+)$")


def expand(reason: str) -> str:
    """``Class: n`` -> ``Class: sentence``; anything else unchanged."""
    match = _CODED.match(reason.strip())
    if match is None or int(match.group(2)) not in REASONS:
        return reason
    return f"{match.group(1)}: {REASONS[int(match.group(2))]}"
