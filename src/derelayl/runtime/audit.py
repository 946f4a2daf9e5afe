"""``derelayl audit``: re-score every committed model on the published test cases and check
every tester's report against it.

Testers publish their test cases content-addressed (``OUT/cases/<sha256>`` in a run folder,
``GET /cases/<sha256>`` on a node), and each report in a test block names the digest of its
cases. So anyone holding the models (which the run's store, or any node, keeps by digest)
can recompute what an honest tester had to report — ``agents.relay.clear_scores``, the very
function honest testers run: correct counts on the tester's cases (on the pool of all the
round's testers' cases with ``pooled_cases``), with the copy rule when it is on — and name
every report that differs. The chain itself cannot run a model; this is the check a
challenge would submit (issue 10), run by any node, after the fact.

A report that cannot be checked (its cases were not published, or a model is missing) is
listed as such, never silently passed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from derelayl.errors import ConfigError, DerelaylError
from derelayl.learning.data import case_digest, cases_from_blob
from derelayl.protocol.blocks import TestBlock
from derelayl.protocol.state import State

__all__ = ["Audit", "Finding", "audit_run"]

CASES_DIR = "cases"


@dataclass(frozen=True)
class Finding:
    round: int
    tester: int
    what: str
    """``lied``: the report differs from re-execution; ``unchecked``: it could not be re-run."""
    detail: str


@dataclass
class Audit:
    rounds: int = 0
    reports: int = 0
    checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def lies(self) -> list[Finding]:
        return [f for f in self.findings if f.what == "lied"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "test_blocks": self.rounds,
            "reports": self.reports,
            "checked": self.checked,
            "findings": [f.__dict__ for f in self.findings],
        }


def audit_run(out_dir: Path, say: Callable[[str], None] | None = None) -> Audit:
    """Audit the run in ``out_dir`` (``chain.sqlite``, ``models/``, ``cases/``), read-only."""
    import torch

    from derelayl.agents.relay import ModelBook
    from derelayl.learning.serialization import weights_from_bytes
    from derelayl.learning.store import DirModelStore
    from derelayl.learning.torch_models import ModelSpec, TorchEvaluator
    from derelayl.ledger.chain import Chain
    from derelayl.ledger.sqlite import SQLiteLedger

    torch.set_num_threads(1)
    chain_path, models_dir = out_dir / "chain.sqlite", out_dir / "models"
    if not chain_path.is_file() or not models_dir.is_dir():
        raise ConfigError(f"{out_dir}: not a run folder of real models (needs chain.sqlite and models/)")
    store = DirModelStore(models_dir)
    genesis = _genesis_model(store)
    _, meta = weights_from_bytes(store.get(genesis), name="the genesis model")
    try:
        spec = ModelSpec(**{**meta["spec"], "hidden": tuple(meta["spec"]["hidden"])})
    except (KeyError, TypeError, DerelaylError) as exc:
        raise ConfigError(f"{out_dir}: the genesis model names no built-in model family to re-run") from exc
    models = ModelBook(store, store.get(genesis))
    evaluator = TorchEvaluator(spec.build)
    audit = Audit()

    def on_block(_stored: Any, block: Any, _receipt: Any, state: State) -> None:
        models.follow(state)
        if isinstance(block, TestBlock):
            _audit_test_block(audit, state, block, models, evaluator, out_dir / CASES_DIR)
            if say is not None and audit.rounds % 10 == 0:
                say(f"round {state.round}: {audit.checked} reports re-run, {len(audit.lies)} lies")

    ledger = SQLiteLedger(chain_path, create=False)
    try:
        chain = Chain.start(ledger, on_block)
        chain.catch_up(1, on_block)
    finally:
        ledger.close()
    return audit


def _audit_test_block(
    audit: Audit, state: State, block: TestBlock, models: Any, evaluator: Any, cases_dir: Path
) -> None:
    from derelayl.agents.relay import clear_scores

    audit.rounds += 1
    reports = [(block.miner, block.test_cases_digest, block.scores)]
    reports += [(r.tester, r.test_cases_digest, r.scores) for r in block.co_testers]
    audit.reports += len(reports)
    cases = {tester: _cases(cases_dir, digest) for tester, digest, _ in reports}
    for tester, _digest, reported in reports:
        if state.params.pooled_cases:  # every tester scored on the pool, in tester order
            missing = [t for t in state.roles.testers.tolist() if cases.get(t) is None] if state.roles else []
            parts = [cases[t] for t in state.roles.testers.tolist()] if state.roles and not missing else []
            mine = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])) if parts else None
        else:
            missing, mine = ([] if cases[tester] is not None else [tester]), cases[tester]
        if mine is None:
            audit.findings.append(Finding(block.round, tester, "unchecked", f"cases of tester(s) {missing} not found"))
            continue
        try:
            expected = clear_scores(state, models, evaluator, mine[0], mine[1])
        except DerelaylError as exc:
            audit.findings.append(Finding(block.round, tester, "unchecked", str(exc)))
            continue
        audit.checked += 1
        reported = np.asarray(reported, dtype=np.int64)
        if reported.shape != expected.shape or not np.array_equal(reported, expected):
            wrong = int((reported != expected).sum()) if reported.shape == expected.shape else len(expected)
            audit.findings.append(
                Finding(
                    block.round,
                    tester,
                    "lied",
                    f"{wrong} of {len(expected)} scores differ from re-execution "
                    f"(reported {reported.tolist()[:6]}…, re-run {expected.tolist()[:6]}…)",
                )
            )


def _cases(folder: Path, digest: bytes) -> tuple[Any, Any] | None:
    """Published cases by digest, re-hashed; None if absent or not what the digest names."""
    path = folder / digest.hex()
    if not path.is_file():
        return None
    try:
        x, y = cases_from_blob(path.read_bytes())
    except DerelaylError:
        return None
    return (x, y) if case_digest(x, y) == digest else None


def _genesis_model(store: Any) -> bytes:
    """The store's genesis model: the one model file whose metadata says round -1."""
    import json

    found = []
    for digest in store.digests():
        head = store.peek(digest, 8)
        size = int.from_bytes(head, "little")
        if not 0 < size < 1 << 20:
            continue
        try:
            header = json.loads(store.peek(digest, 8 + size)[8:])
            meta = json.loads(header.get("__metadata__", {}).get("derelayl", "{}"))
        except ValueError:
            continue
        if meta.get("round") == -1:
            found.append(digest)
    if len(found) != 1:
        raise ConfigError(f"{store.root}: expected one genesis model (round -1), found {len(found)}")
    return found[0]
