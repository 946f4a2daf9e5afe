"""The explorer at the reference size (issue 12). Prints figures and ratios; asserts nothing.

1. Indexing: the explorer's replay of the chain against a plain ``verify`` (``Chain.open``)
   of the same chain in the same process.
2. Time to first render: from starting the server (genesis verified, the rest indexed in
   steps) until headless Chromium shows the rounds page, and until the index is complete.
3. API latency once indexed: median and p95 over repeated requests of each endpoint.

Run: python benchmarks/bench_explorer.py --chain runs/big/chain.sqlite
     (make one: derelayl run --task latent --participants 256 --rounds 5000 --out runs/big)
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from derelayl.explorer.app import make_app
from derelayl.explorer.index import ChainIndex
from derelayl.ledger.chain import Chain
from derelayl.ledger.sqlite import SQLiteLedger
from served import serve

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chain", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--skip-verify", action="store_true", help="Skip part 1 (two full replays).")
    args = parser.parse_args()
    size = args.chain.stat().st_size

    print(f"chain: {args.chain} ({size / 1e6:.0f} MB)")
    if not args.skip_verify:
        start = time.perf_counter()
        ledger = SQLiteLedger(args.chain, create=False)
        chain = Chain.open(ledger)
        verify = time.perf_counter() - start
        state = chain.state
        print(f"{ledger.height():,} blocks, {state.n_participants} participants, round {state.round}")
        ledger.close()
        start = time.perf_counter()
        ChainIndex(args.chain).close()
        index_all = time.perf_counter() - start
        print(f"verify {verify:.1f} s; explorer index {index_all:.1f} s ({index_all / verify:.2f}x verify)")

    from playwright.sync_api import sync_playwright

    with contextlib.ExitStack() as stack, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
        started = time.perf_counter()
        index = ChainIndex(args.chain, lazy=True)
        stack.callback(index.close)
        http = serve(stack, make_app(index))
        page = browser.new_page()
        page.goto(f"{http.base_url}/")
        page.wait_for_selector("#timeline")
        first = time.perf_counter() - started
        while index.indexing:
            time.sleep(0.2)
        complete = time.perf_counter() - started
        print(f"first render of the rounds page {first:.2f} s; index complete {complete:.1f} s")
        page.goto(f"{http.base_url}/")
        page.wait_for_selector("#timeline tr >> nth=20")
        print(f"rounds page fully drawn once indexed: {time.perf_counter() - started - complete:.2f} s")
        newest = max(index.models)
        rich = int(index.state.balances.argmax())
        paths = ["/api/status", "/api/rounds?limit=20", "/api/rounds?limit=20&before=100", f"/api/participant/{rich}"]
        paths += [f"/api/model/{newest}", "/api/model/1", "/api/leaderboard", "/api/figures", "/api/series"]
        for path in paths:
            times, size = [], 0
            for _ in range(args.requests):
                t = time.perf_counter()
                answer = http.get(path)
                times.append(time.perf_counter() - t)
                size = len(answer.content)
            times.sort()
            p95 = times[int(0.95 * (len(times) - 1))]
            print(f"  {path:34s} median {statistics.median(times) * 1e3:7.1f} ms  p95 {p95 * 1e3:7.1f} ms  {size:,} B")
        browser.close()
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
