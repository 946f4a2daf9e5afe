"""The checks every per-transition test file runs on its vectors."""

from __future__ import annotations

from typing import Any

from vector_cases import TRANSITIONS, load, replay, run_case


def check_vectors_current(kind: str) -> None:
    """The committed JSON equals what the rules produce today (regenerate if rules change)."""
    fresh = [run_case(*case) for case in TRANSITIONS[kind]()]
    assert [v["name"] for v in fresh] == [v["name"] for v in load(kind)]
    for new, old in zip(fresh, load(kind), strict=True):
        assert _round_trip(new) == old, f"vector {kind}/{new['name']} is stale: run python tests/vector_cases.py"


def check_vector_replays(vector: dict[str, Any]) -> None:
    outcome = replay(vector)
    if vector["error"] is None:
        assert outcome == vector["post"]
    else:
        assert outcome == vector["error"]


def _round_trip(vector: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(vector, sort_keys=True))
