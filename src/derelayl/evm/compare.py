"""The rule-relevant state, read the same way from the contract and from the Python core, so
that the two can be compared field by field (differential tests, ``derelayl verify``).

Compared: round, phase, phase start, beacon, money (minted, burned, escrow, every balance),
registered keys, roles (trainers, block miners, co-testers; model owners are the live
models' holders), live models (ids, holders, versions, scores, in rank order), this round's
pairs and commitments, a round's held rewards, stakes and appellants (a disputed round, or any
round with challenges), whether its appeal is open, its challenger and bond, the newest version
and the next model id. Not compared: statistics the
rules never read (versions each participant holds or trained), which only the core keeps.
"""

from __future__ import annotations

from typing import Any

from derelayl.evm.signing import key_of_address
from derelayl.protocol.state import State

__all__ = ["contract_snapshot", "differences", "state_snapshot"]

M32, M64, BIAS = 2**32 - 1, 2**64 - 1, 2**63


def _bits(words: list[int]) -> list[int]:
    return [w * 256 + b for w, word in enumerate(words) for b in range(256) if word >> b & 1]


def contract_snapshot(contract: Any, block: int | str = "latest") -> dict[str, Any]:
    f = contract.functions
    head = f.head().call(block_identifier=block)
    (round_, phase, phase_start, beacon, minted, burned, escrow, latest, next_id, n) = head[:10]
    trainer_words, block_miners, co_testers = f.roles().call(block_identifier=block)
    pairs, commits, digests = f.round_items().call(block_identifier=block)
    live = f.live_models().call(block_identifier=block)
    disputed, dispute_testers, appellants, open_, challenger, bond = f.dispute().call(block_identifier=block)
    return {
        "round": round_,
        "phase": phase,
        "phase_start": phase_start,
        "beacon": bytes(beacon),
        "minted": minted,
        "burned": burned,
        "escrow": escrow,
        "latest_version": latest,
        "next_model_id": next_id,
        "keys": [key_of_address(a) for a in f.participant_keys(0, n).call(block_identifier=block)],
        "balances": list(f.balances(0, n).call(block_identifier=block)),
        "trainers": _bits(list(trainer_words)),
        "block_miners": list(block_miners),
        "co_testers": list(co_testers),
        "live": [(m & M64, (m >> 64) & M32, (m >> 96) & M64, ((m >> 160) & M64) - BIAS) for m in live],
        "pairs": [(p & M32, (p >> 32) & M32, (p >> 64) & M32, (p >> 96) & M64, (p >> 160) & M64) for p in pairs],
        "commits": [(c & M32, (c >> 32) & M32) for c in commits],
        "scores": [((c >> 64) & M64) - BIAS if phase == 3 else 0 for c in commits],
        "eligible": [not (c >> 128) & 1 for c in commits] if phase == 3 else [],
        "digests": [bytes(d) for d in digests],
        "dispute": (
            disputed,
            [(d & M32, (d >> 64) & M64, d >> 128) for d in dispute_testers],
            list(appellants),
            open_,
            challenger - 1,
            bond,
        ),
    }


def state_snapshot(state: State) -> dict[str, Any]:
    assert state.roles is not None
    p, c = state.pairs, state.commits
    live = state.live
    tested = int(state.phase) == 3  # scores exist once the test block is in
    return {
        "round": state.round,
        "phase": int(state.phase),
        "phase_start": state.phase_start,
        "beacon": state.beacon,
        "minted": state.minted,
        "burned": state.burned,
        "escrow": state.escrow,
        "latest_version": state.latest_version,
        "next_model_id": state.next_model_id,
        "keys": list(state.keys),
        "balances": [int(b) for b in state.balances],
        "trainers": [int(t) for t in state.roles.trainers],
        "block_miners": list(state.roles.block_miners),
        "co_testers": [int(t) for t in state.roles.testers[1:]],
        "live": [
            (int(m), int(o), int(v), int(s))
            for m, o, v, s in zip(live.model_id, live.owner, live.version, live.score, strict=True)
        ],
        "pairs": [
            (int(a), int(b), int(t), int(d), int(e))
            for a, b, t, d, e in zip(p.live_pos, p.model_owner, p.trainer, p.mo_deposit, p.trainer_deposit, strict=True)
        ],
        "commits": [(int(t), int(q)) for t, q in zip(c.owner, state.commit_pair, strict=True)],
        "scores": [int(s) for s in c.score] if tested else [0] * len(c),
        "eligible": [bool(e) for e in state.commit_eligible] if tested else [],
        "digests": list(state.commitments),
        "dispute": (False, [], [], False, -1, 0)
        if state.dispute is None
        else (
            True,
            [
                (int(t), int(h), int(k))
                for t, h, k in zip(state.dispute.testers, state.dispute.held, state.dispute.staked, strict=True)
            ],
            [int(a) for a in state.dispute.appellants],
            bool(state.dispute.open),
            int(state.dispute.challenger),
            int(state.dispute.bond),
        ),
    }


def differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Fields that differ, each named with both values (shortened)."""
    out = []
    for name in ours:
        if ours[name] != theirs.get(name):
            out.append(f"{name}: rules {str(ours[name])[:120]} / contract {str(theirs.get(name))[:120]}")
    return out
