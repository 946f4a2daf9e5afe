"""``derelayl audit`` against ``verify`` on the same run, in the same process (issue 10).

The audit replays the chain as ``verify`` does and, at every test block, re-scores every
committed model (and, with the improvement rule, every live one) on each report's published
cases. Prints wall times and their ratio; asserts nothing.

Run: python benchmarks/bench_audit.py [--rounds 50] [--testers 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from derelayl.ledger.chain import Chain
from derelayl.ledger.sqlite import SQLiteLedger
from derelayl.runtime.audit import audit_run
from derelayl.runtime.local import RunConfig, run_network
from derelayl.runtime.torch_task import TorchTask


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--testers", type=int, default=3)
    parser.add_argument("--participants", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        config = RunConfig(
            participants=args.participants,
            rounds=args.rounds,
            seed=1,
            task="digits",
            testers=args.testers,
            pooled_cases=True,
            min_improvement=1,
            copy_rule=True,
        )
        started = time.perf_counter()
        run_network(config, out, TorchTask)
        run_s = time.perf_counter() - started
        started = time.perf_counter()
        ledger = SQLiteLedger(out / "chain.sqlite", create=False)
        Chain.open(ledger)
        ledger.close()
        verify_s = time.perf_counter() - started
        started = time.perf_counter()
        audit = audit_run(out)
        audit_s = time.perf_counter() - started
    print(f"run: {args.participants} participants x {args.rounds} rounds, {args.testers} pooled testers: {run_s:.1f} s")
    print(f"verify: {verify_s:.2f} s")
    print(
        f"audit: {audit_s:.2f} s = {audit_s / verify_s:.1f}x verify, {audit_s / run_s:.2f}x the run "
        f"({audit.reports} reports, {audit.checked} re-run, {len(audit.lies)} differ)"
    )


if __name__ == "__main__":
    main()
