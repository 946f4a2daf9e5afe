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

from derelayl.errors import ConfigError, DerelaylError, ModelError
from derelayl.learning.data import case_digest, cases_from_blob
from derelayl.learning.store import ModelStore
from derelayl.protocol.blocks import SettleBlock, TestBlock
from derelayl.protocol.state import State

__all__ = ["Audit", "Finding", "ReadOnlyStores", "audit_run"]

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
    """Audit, read-only, the run in ``out_dir``: a ``derelayl run`` folder (``chain.sqlite``,
    ``models/``, ``cases/``) or a ``derelayl devnet`` folder (the contract on its saved anvil
    chain; every node's ``models/`` and ``cases/``, as any node could fetch them)."""
    import torch

    from derelayl.agents.books import ModelBook
    from derelayl.learning.serialization import weights_from_bytes
    from derelayl.learning.torch_models import ModelSpec, TorchEvaluator

    torch.set_num_threads(1)
    homes = [out_dir] if (out_dir / "models").is_dir() else sorted((out_dir / "nodes").glob("*"))
    homes = [h for h in homes if (h / "models").is_dir()]
    if not homes:
        raise ConfigError(f"{out_dir}: not a run or devnet folder of real models (no models/ found)")
    store = ReadOnlyStores([h / "models" for h in homes])
    genesis = _genesis_model(store)
    _, meta = weights_from_bytes(store.get(genesis), name="the genesis model")
    try:
        spec = ModelSpec(**{**meta["spec"], "hidden": tuple(meta["spec"]["hidden"])})
    except (KeyError, TypeError, DerelaylError) as exc:
        raise ConfigError(f"{out_dir}: the genesis model names no built-in model family to re-run") from exc
    models = ModelBook(store, store.get(genesis))
    evaluator = TorchEvaluator(spec.build)
    cases = [h / CASES_DIR for h in homes]
    audit = Audit()

    tested: list[tuple[State, TestBlock]] = []  # the round's state after its test block

    def on_state(block: Any, state: State) -> None:
        models.follow(state)
        if isinstance(block, TestBlock):
            _audit_test_block(audit, state, block, models, evaluator, cases)
            tested[:] = [(state.copy(), block)]
            if say is not None and audit.rounds % 10 == 0:
                say(f"round {state.round}: {audit.checked} reports re-run, {len(audit.lies)} differ")
        elif isinstance(block, SettleBlock) and block.appeals and tested:
            _audit_appeals(audit, *tested[0], block, models, evaluator, cases)

    if (out_dir / "chain.sqlite").is_file():
        _replay_sqlite(out_dir / "chain.sqlite", on_state)
    else:
        _replay_contract(out_dir, on_state)
    return audit


def _replay_sqlite(path: Path, on_state: Callable[[Any, State], None]) -> None:
    from derelayl.ledger.chain import Chain
    from derelayl.ledger.sqlite import SQLiteLedger

    ledger = SQLiteLedger(path, create=False)
    try:
        chain = Chain.start(ledger, lambda _s, block, _r, state: on_state(block, state))
        chain.catch_up(1, lambda _s, block, _r, state: on_state(block, state))
    finally:
        ledger.close()


def _replay_contract(out_dir: Path, on_state: Callable[[Any, State], None]) -> None:
    from derelayl.evm.cli import contract_target
    from derelayl.evm.client import ContractClient

    target = contract_target(out_dir, None, None, None)
    if target is None:
        raise ConfigError(f"{out_dir}: no chain found (chain.sqlite, contract.json or devnet.json)")
    node, address = target
    try:
        client = ContractClient(node, address, on_event=lambda event, _tx, state: on_state(event.operation, state))
        client.sync()
    finally:
        node.close()


class ReadOnlyStores(ModelStore):
    """Several folders of ``<sha256>.safetensors`` read as one store; never written."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = roots

    def _path(self, digest: bytes) -> Path | None:
        name = f"{digest.hex()}.safetensors"
        return next((r / name for r in self.roots if (r / name).is_file()), None)

    def has(self, digest: bytes) -> bool:
        return self._path(digest) is not None

    def digests(self) -> list[bytes]:
        names = {p.name for r in self.roots for p in r.glob("*.safetensors")}
        return [bytes.fromhex(n.split(".")[0]) for n in sorted(names)]

    def discard(self, digest: bytes) -> None:
        raise ModelError("an audit never changes a model store")

    def peek(self, digest: bytes, n: int) -> bytes:
        path = self._path(digest)
        if path is None:
            raise ModelError(f"model {digest.hex()} is not in the model store")
        with path.open("rb") as f:
            return f.read(n)

    def _write(self, digest: bytes, data: bytes) -> None:
        raise ModelError(f"model {digest.hex()} is not in the audited stores (an audit writes nothing)")

    def _read(self, digest: bytes) -> bytes:
        path = self._path(digest)
        assert path is not None  # has() was checked
        return path.read_bytes()


def _audit_test_block(
    audit: Audit, state: State, block: TestBlock, models: Any, evaluator: Any, cases_dirs: list[Path]
) -> None:
    from derelayl.fhe.scoring import read_manifest

    audit.rounds += 1
    reports = [(block.miner, block.test_cases_digest, block.scores)]
    reports += [(r.tester, r.test_cases_digest, r.scores) for r in block.co_testers]
    audit.reports += len(reports)
    if any(models.store.has(d) and read_manifest(models.raw(d)) is not None for d in state.commitments):
        why = "encrypted commitments: scores come from their transcripts (FheScoring.check), not a clear re-run"
        audit.findings += [Finding(block.round, t, "unchecked", why) for t, _, _ in reports]
        return
    cases = {tester: _cases(cases_dirs, digest) for tester, digest, _ in reports}
    for tester, _digest, reported in reports:
        if state.params.pooled_cases:  # every tester scored on the pool, in tester order
            missing, mine = _pool(state, cases)
        else:
            missing, mine = ([] if cases[tester] is not None else [tester]), cases[tester]
        _check(audit, state, block.round, tester, reported, missing, mine, models, evaluator)


def _audit_appeals(
    audit: Audit,
    state: State,
    test: TestBlock,
    settle: SettleBlock,
    models: Any,
    evaluator: Any,
    cases_dirs: list[Path],
) -> None:
    """A disputed round's appeal reports: each appellant re-scored the test block's pool."""
    reports = [(test.miner, test.test_cases_digest), *((r.tester, r.test_cases_digest) for r in test.co_testers)]
    cases = {tester: _cases(cases_dirs, digest) for tester, digest in reports}
    missing, pool = _pool(state, cases)
    audit.reports += len(settle.appeals)
    for report in settle.appeals:
        _check(audit, state, settle.round, report.tester, report.scores, missing, pool, models, evaluator)


def _pool(state: State, cases: dict[int, Any]) -> tuple[list[int], tuple[Any, Any] | None]:
    """(testers whose cases are missing, the pool of all testers' cases in tester order)."""
    order = state.roles.testers.tolist() if state.roles is not None else []
    missing = [t for t in order if cases.get(t) is None]
    parts = [c for t in order if (c := cases.get(t)) is not None]
    if missing or not parts:
        return missing, None
    return missing, (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def _check(
    audit: Audit,
    state: State,
    round_: int,
    tester: int,
    reported: Any,
    missing: list[int],
    cases: tuple[Any, Any] | None,
    models: Any,
    evaluator: Any,
) -> None:
    """Re-run one report on ``cases`` and record what was found."""
    from derelayl.agents.relay import clear_scores

    if cases is None:
        audit.findings.append(Finding(round_, tester, "unchecked", f"cases of tester(s) {missing} not found"))
        return
    try:
        expected = clear_scores(state, models, evaluator, cases[0], cases[1])
    except DerelaylError as exc:
        audit.findings.append(Finding(round_, tester, "unchecked", str(exc)))
        return
    audit.checked += 1
    reported = np.asarray(reported, dtype=np.int64)
    if reported.shape != expected.shape or not np.array_equal(reported, expected):
        wrong = int((reported != expected).sum()) if reported.shape == expected.shape else len(expected)
        audit.findings.append(
            Finding(
                round_,
                tester,
                "lied",
                f"{wrong} of {len(expected)} scores differ from re-execution "
                f"(reported {reported.tolist()[:6]}…, re-run {expected.tolist()[:6]}…)",
            )
        )


def _cases(folders: list[Path], digest: bytes) -> tuple[Any, Any] | None:
    """Published cases by digest, re-hashed; None if no folder holds what the digest names."""
    for path in (f / digest.hex() for f in folders):
        if not path.is_file():
            continue
        try:
            x, y = cases_from_blob(path.read_bytes())
        except DerelaylError:
            continue
        if case_digest(x, y) == digest:
            return x, y
    return None


def _genesis_model(store: ModelStore) -> bytes:
    """The store's genesis model: the one model file whose metadata says round -1 (read from
    each file's header only; blobs that are not model files are skipped)."""
    from derelayl.learning.serialization import header_size, meta_from_header

    found = []
    for digest in store.digests():
        size = header_size(store.peek(digest, 8))
        if not 0 < size < 1 << 20:
            continue
        try:
            meta = meta_from_header(store.peek(digest, 8 + size))
        except (ValueError, AttributeError, TypeError):
            continue
        if isinstance(meta, dict) and meta.get("round") == -1:
            found.append(digest)
    if len(found) != 1:
        raise ConfigError(f"expected one genesis model (round -1) in the model stores, found {len(found)}")
    return found[0]
