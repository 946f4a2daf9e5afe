"""Plain-data (JSON-ready) forms of states and blocks, for test vectors that any backend
(SQLite chain, EVM contract, another language) can replay. Pure: no I/O."""

from __future__ import annotations

from typing import Any

import numpy as np

from derelayl.protocol.blocks import Bids, Block, CommitBlock, DepositBlock, SettleBlock, TestBlock, TesterReport
from derelayl.protocol.lineage import Level, LineageTree
from derelayl.protocol.params import Params
from derelayl.protocol.state import Dispute, Models, Pairs, Roles, State
from derelayl.protocol.types import Phase

__all__ = ["block_from_dict", "block_to_dict", "state_from_dict", "state_to_dict"]


def _ints(a: np.ndarray) -> list[int]:
    return [int(x) for x in a]


def _i64(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _numbers(a: np.ndarray) -> list[int] | list[float]:
    """Scores as given: integers stay integers; anything else keeps its value, so that a
    vector of a malformed block replays as malformed."""
    if a.dtype == np.int64:
        return [int(x) for x in a]
    return [float(x) for x in a]


def _numbers_from(values: list[Any]) -> np.ndarray:
    if all(isinstance(v, int) for v in values):
        return np.array(values, dtype=np.int64)
    return np.array(values, dtype=np.float64)


def _models(m: Models) -> dict[str, Any]:
    return {
        "model_id": _ints(m.model_id),
        "owner": _ints(m.owner),
        "version": _ints(m.version),
        "score": _ints(m.score),
    }


def _models_from(d: dict[str, Any]) -> Models:
    return Models(_i64(d["model_id"]), _i64(d["owner"]), _i64(d["version"]), _i64(d["score"]))


def state_to_dict(state: State) -> dict[str, Any]:
    roles = state.roles
    out = {
        "params": state.params.to_dict(),
        "beacon": state.beacon.hex(),
        "keys": [k.hex() for k in state.keys],
        "balances": _ints(state.balances),
        "held_version": _ints(state.held_version),
        "trained_version": _ints(state.trained_version),
        "round": state.round,
        "phase": state.phase.name.lower(),
        "phase_start": state.phase_start,
        "escrow": state.escrow,
        "minted": state.minted,
        "burned": state.burned,
        "latest_version": state.latest_version,
        "next_model_id": state.next_model_id,
        "live": _models(state.live),
        "roles": None
        if roles is None
        else {
            "model_owners": _ints(roles.model_owners),
            "trainers": _ints(roles.trainers),
            "miners": _ints(roles.miners),
            "block_miners": list(roles.block_miners),
            "testers": _ints(roles.testers),
        },
        "pairs": {name: _ints(getattr(state.pairs, name)) for name in Pairs.__dataclass_fields__},
        "commits": _models(state.commits),
        "commit_pair": _ints(state.commit_pair),
        "commitments": [c.hex() for c in state.commitments],
        "lineage": {
            "multipliers": list(state.lineage.multipliers),
            "trunk": _ints(state.lineage.trunk),
            "levels": [{"owner": _ints(lv.owner), "parent": _ints(lv.parent)} for lv in state.lineage.levels],
        },
    }
    if state.params.min_improvement is not None:  # (states without the rule keep their old form)
        out["commit_eligible"] = [bool(e) for e in state.commit_eligible]
    if state.case_digests:  # (from the deposit block of a round with case commitments to its settlement)
        out["case_digests"] = {str(t): d.hex() for t, d in sorted(state.case_digests.items())}
    if state.posted:  # (only during a commit phase with posted commitments)
        out["posted"] = {str(t): [d.hex(), sig.hex()] for t, (d, sig) in sorted(state.posted.items())}
    if state.dispute is not None:  # (only in a settle phase with held test rewards)
        dispute = state.dispute
        out["dispute"] = {
            "testers": _ints(dispute.testers),
            "rows": [_ints(row) for row in dispute.rows],
            "held": _ints(dispute.held),
            "appellants": _ints(dispute.appellants),
            **({"staked": _ints(dispute.staked)} if dispute.staked.any() else {}),
            **({} if dispute.open else {"open": False}),
            **({"challenger": dispute.challenger, "bond": dispute.bond} if dispute.challenger >= 0 else {}),
        }
    return out


def _dispute_from(d: dict[str, Any] | None) -> Dispute | None:
    if d is None:
        return None
    rows = np.array(d["rows"], dtype=np.int64).reshape(len(d["testers"]), -1)
    testers = _i64(d["testers"])
    staked = _i64(d["staked"]) if "staked" in d else np.zeros(testers.size, dtype=np.int64)
    return Dispute(
        testers,
        rows,
        _i64(d["held"]),
        _i64(d["appellants"]),
        staked,
        open=bool(d.get("open", True)),
        challenger=int(d.get("challenger", -1)),
        bond=int(d.get("bond", 0)),
    )


def state_from_dict(d: dict[str, Any]) -> State:
    keys = [bytes.fromhex(k) for k in d["keys"]]
    roles = d["roles"]
    lineage = d["lineage"]
    return State(
        params=Params.from_dict(d["params"]),
        beacon=bytes.fromhex(d["beacon"]),
        keys=keys,
        key_index={k: i for i, k in enumerate(keys)},
        balances=_i64(d["balances"]),
        held_version=_i64(d["held_version"]),
        trained_version=_i64(d["trained_version"]),
        round=d["round"],
        phase=Phase[d["phase"].upper()],
        phase_start=d["phase_start"],
        escrow=d["escrow"],
        minted=d["minted"],
        burned=d["burned"],
        latest_version=d["latest_version"],
        next_model_id=d["next_model_id"],
        live=_models_from(d["live"]),
        roles=None
        if roles is None
        else Roles(
            _i64(roles["model_owners"]),
            _i64(roles["trainers"]),
            _i64(roles["miners"]),
            tuple(roles["block_miners"]),
            _i64(roles["testers"]),
        ),
        pairs=Pairs(**{name: _i64(values) for name, values in d["pairs"].items()}),
        commits=_models_from(d["commits"]),
        commit_pair=_i64(d["commit_pair"]),
        commit_eligible=np.array(d.get("commit_eligible", [True] * len(d["commit_pair"])), dtype=bool),
        commitments=[bytes.fromhex(c) for c in d["commitments"]],
        posted={int(t): (bytes.fromhex(v[0]), bytes.fromhex(v[1])) for t, v in d.get("posted", {}).items()},
        case_digests={int(t): bytes.fromhex(v) for t, v in d.get("case_digests", {}).items()},
        dispute=_dispute_from(d.get("dispute")),
        lineage=LineageTree(
            multipliers=tuple(lineage["multipliers"]),
            levels=[Level(_i64(lv["owner"]), _i64(lv["parent"])) for lv in lineage["levels"]],
            trunk=_i64(lineage["trunk"]),
        ),
    )


def _bids(b: Bids) -> list[list[int]]:
    return [[int(p), int(a)] for p, a in zip(b.participant, b.amount, strict=True)]


def block_to_dict(block: Block) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": block.kind.name.lower(),
        "round": block.round,
        "miner": block.miner,
        "time": block.time,
        "randomness": block.randomness.hex(),
    }
    if isinstance(block, DepositBlock):
        out |= {
            "trainer_bids": _bids(block.trainer_bids),
            "mo_bids": _bids(block.mo_bids),
            "joins": [k.hex() for k in block.joins],
        }
    elif isinstance(block, CommitBlock):
        out |= {
            "trainers": _ints(block.trainers),
            "commitments": [c.hex() for c in block.commitments],
            "fhe_public_key": block.fhe_public_key.hex(),
        }
    elif isinstance(block, TestBlock):
        out |= {
            "n_test_cases": block.n_test_cases,
            "test_cases_digest": block.test_cases_digest.hex(),
            "scores": _numbers(block.scores),
            "co_testers": _reports(block.co_testers),
        }
    elif isinstance(block, SettleBlock) and block.appeals:  # (settle blocks without appeals keep their form)
        out["appeals"] = _reports(block.appeals)
    return out


def _reports(reports: tuple[TesterReport, ...]) -> list[dict[str, Any]]:
    return [
        {"tester": c.tester, "test_cases_digest": c.test_cases_digest.hex(), "scores": _numbers(c.scores)}
        for c in reports
    ]


def _reports_from(items: list[dict[str, Any]]) -> tuple[TesterReport, ...]:
    return tuple(
        TesterReport(c["tester"], bytes.fromhex(c["test_cases_digest"]), _numbers_from(c["scores"])) for c in items
    )


def block_from_dict(d: dict[str, Any]) -> Block:
    kind, r, miner = d["kind"], d["round"], d["miner"]
    ledger = {"time": d["time"], "randomness": bytes.fromhex(d["randomness"])}
    if kind == "deposit":
        return DepositBlock(
            r,
            miner,
            Bids.of([tuple(x) for x in d["trainer_bids"]]),
            Bids.of([tuple(x) for x in d["mo_bids"]]),
            tuple(bytes.fromhex(k) for k in d["joins"]),
            **ledger,
        )
    if kind == "commit":
        return CommitBlock(
            r,
            miner,
            _i64(d["trainers"]),
            tuple(bytes.fromhex(c) for c in d["commitments"]),
            bytes.fromhex(d["fhe_public_key"]),
            **ledger,
        )
    if kind == "test":
        return TestBlock(
            r,
            miner,
            d["n_test_cases"],
            bytes.fromhex(d["test_cases_digest"]),
            _numbers_from(d["scores"]),
            _reports_from(d.get("co_testers", [])),
            **ledger,
        )
    if kind == "settle":
        return SettleBlock(r, miner, _reports_from(d.get("appeals", [])), **ledger)
    raise ValueError(f"unknown block kind {kind!r}")
