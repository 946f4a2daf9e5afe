"""``derelayl explorer``: the index against the chain it replays, the JSON API and pages on a
real server (uvicorn on loopback), a corrupted chain, following a chain as it grows, and the
pages in a real headless Chromium (Debian's, driven by playwright)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from derelayl.cli import app
from derelayl.errors import StorageError
from derelayl.explorer.app import make_app, vendor_dir
from derelayl.explorer.index import ChainIndex
from derelayl.protocol.digest import compute_state_root
from derelayl.runtime.local import RunConfig, run_network
from derelayl.runtime.tasks import make_task
from served import serve

ROUNDS = 12


def _run(out: Path, rounds: int) -> None:
    config = RunConfig(participants=24, rounds=rounds, seed=3, task="latent")
    run_network(config, out, make_task)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    _run(out, ROUNDS)
    return out / "chain.sqlite"


@pytest.fixture(scope="module")
def site(chain: Path) -> Iterator[tuple[ChainIndex, httpx.Client]]:
    with contextlib.ExitStack() as stack:
        index = ChainIndex(chain)
        stack.callback(index.close)
        yield index, serve(stack, make_app(index, follow_every=0.2))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_index_accounts_for_every_unit(site) -> None:
    index, _ = site
    state = index.state
    assert state is not None and index.bad is None and len(index.rounds) == ROUNDS
    received = sum(sum(r.values()) for r in index.rewards)  # every reason, every round
    assert np.array_equal(received, state.balances)  # balances start at 0: all of it explained
    assert all(int(r["deposits"].sum()) <= 0 <= int(r["lineage"].sum()) for r in index.rewards)
    for record in index.models.values():  # parents and children agree; lineages end at genesis
        assert all(index.models[c].parent == record.model_id for c in record.children)
    newest = max(index.models)
    versions = [m.version for m in index.lineage(newest)]
    assert index.lineage(newest)[-1].model_id == 0 and versions == sorted(versions, reverse=True)


def test_the_api_pages_through_rounds_and_names_what_is_missing(site) -> None:
    index, http = site
    status = http.get("/api/status").json()
    assert status["settled_rounds"] == ROUNDS and status["bad_block"] is None
    first = http.get("/api/rounds", params={"limit": 5}).json()
    assert [r["round"] for r in first["rounds"]] == list(range(ROUNDS - 1, ROUNDS - 6, -1))
    assert all({b["kind"] for b in r["blocks"]} == {"deposit", "commit", "test", "settle"} for r in first["rounds"])
    second = http.get("/api/rounds", params={"limit": 5, "before": first["next_before"]}).json()
    assert second["rounds"][0]["round"] == ROUNDS - 6
    assert len(http.get("/api/rounds", params={"limit": 10**9}).json()["rounds"]) == ROUNDS  # capped, not refused
    who = int(np.argmax(index.state.balances))
    p = http.get(f"/api/participant/{who}").json()
    assert p["coins"] == pytest.approx(sum(p["rewards_total"].values()))
    model = http.get(f"/api/model/{max(index.models)}").json()
    assert model["lineage"][-1]["id"] == 0 and model["lineage_length"] == len(index.lineage(max(index.models)))
    for path, what in [("/block/99999", "block 99999"), ("/participant/24", "participant 24"), ("/model/x", "model x")]:
        page = http.get(path)
        assert page.status_code == 404 and f'data-missing="{what}"' in page.text
    assert http.get("/api/block/99999").status_code == 404
    assert http.get("/api/model/99999").json() == {"error": "model 99999 not found"}
    assert http.get("/static/../x").status_code == 404


def test_the_explorer_writes_nothing(chain: Path, site) -> None:
    _, http = site
    before = sorted(p.name for p in chain.parent.iterdir()), _digest(chain)
    for path in ("/", "/api/status", "/api/rounds", "/api/figures", "/leaderboard", "/api/series"):
        assert http.get(path).status_code == 200
    assert (sorted(p.name for p in chain.parent.iterdir()), _digest(chain)) == before


def test_a_corrupted_chain_is_shown_up_to_the_first_bad_block(chain: Path, tmp_path: Path) -> None:
    copy = tmp_path / "chain.sqlite"
    shutil.copy(chain, copy)
    with sqlite3.connect(copy) as db:  # a tampered balance-changing block halfway
        (height, body) = db.execute("SELECT height, body FROM blocks WHERE height = 22").fetchone()
        db.execute("UPDATE blocks SET body = ? WHERE height = ?", (bytes(body).replace(b"1", b"2", 1), height))
    index = ChainIndex(copy)
    try:
        assert index.bad is not None and index.bad[0] == 22
        assert len(index.blocks) == 22 and all(b["height"] < 22 for b in index.blocks)
    finally:
        index.close()
    for args, reason in [
        (["--chain", str(tmp_path / "none.sqlite")], "no such chain file"),
        ([], "give --chain PATH"),
        (["--rpc", "http://127.0.0.1:1"], "needs both --rpc URL and --contract"),
        (["--chain", str(copy), "--port", "0"], "--port must be in 1..65535"),
    ]:
        result = CliRunner().invoke(app, ["explorer", *args])
        assert result.exit_code == 2 and "error:" in result.output and reason in result.output, result.output
        assert "Traceback" not in result.output


def test_the_index_follows_a_chain_another_process_extends(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run(out, 3)
    index = ChainIndex(out / "chain.sqlite")
    try:
        assert len(index.rounds) == 3
        _run(out, 5)  # the run resumes and appends while the index holds the file open
        index.follow()
        assert len(index.rounds) == 5 and index.bad is None
    finally:
        index.close()


# ---------------------------------------------------------------- in a real browser

CHROMIUM = shutil.which("chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    playwright = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium (scripts/setup installs it as root)")
    if vendor_dir() is None:
        pytest.skip("needs the npm packages scripts/setup installs (chart.js, cytoscape)")
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


def test_pages_in_a_browser_timeline_model_lineage_and_participant_rewards(site, browser, tmp_path: Path) -> None:
    index, http = site
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{http.base_url}/")
    page.wait_for_selector("#timeline tr >> nth=5")
    assert page.locator("#timeline tr").count() == 1 + min(20, ROUNDS)
    assert f"round {ROUNDS}" in page.locator("#status").inner_text()
    page.screenshot(path=str(tmp_path / "timeline.png"))
    # a participant page shows its rewards; clicking one of its models shows the lineage graph
    who = next(m.trainer for m in index.models.values() if m.round >= 0 and m.parent > 0)
    page.goto(f"{http.base_url}/participant/{who}")
    page.wait_for_selector("#rewards table")
    assert "lineage" in page.locator("#rewards").inner_text()
    page.locator("main table >> nth=2").locator("a").first.click()
    page.wait_for_function("window.lineageGraph && window.lineageGraph.nodes().length > 1")
    assert page.url.split("/model/")[1].isdigit()
    assert errors == []


def test_the_live_view_advances_while_a_run_writes(browser, tmp_path: Path) -> None:
    out = tmp_path / "live"
    _run(out, 2)
    with contextlib.ExitStack() as stack:
        index = ChainIndex(out / "chain.sqlite")
        stack.callback(index.close)
        http = serve(stack, make_app(index, follow_every=0.2))
        page = browser.new_page()
        page.goto(f"{http.base_url}/")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('round 2 ')")
        run = subprocess.Popen(
            [sys.executable, "-m", "derelayl.cli", "run", "--task", "latent", "--participants", "24", "--seed", "3",
             "--rounds", "2000", "--out", str(out), "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        stack.callback(run.wait, 60)
        stack.callback(run.terminate)  # (it need not finish: the run resumes from any block)
        seen = set()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(seen) < 3:
            seen.add(page.locator("#status").inner_text())
            page.wait_for_timeout(200)
        rows = page.locator("#timeline tr").count()
        assert len(seen) >= 3, seen  # the status moved while the run wrote, without a reload
        assert rows > 3


def test_a_lazy_index_serves_while_it_catches_up(chain: Path) -> None:
    """The command starts serving once the genesis block is verified; the rest is indexed in
    steps while pages answer (and show how far it got)."""
    with contextlib.ExitStack() as stack:
        index = ChainIndex(chain, lazy=True)
        stack.callback(index.close)
        assert index.applied == 1 and index.indexing
        http = serve(stack, make_app(index, follow_every=0.2))
        first = http.get("/api/status").json()
        deadline = time.monotonic() + 30
        while index.indexing and time.monotonic() < deadline:
            time.sleep(0.05)
        done = http.get("/api/status").json()
        assert first["height"] <= done["height"] == index.stored and done["indexing"] is None
        assert done["settled_rounds"] == ROUNDS


def test_a_read_that_fails_while_the_writer_is_mid_way_is_retried_not_a_bad_chain(chain: Path) -> None:
    """A read-only reader can meet SQLite's writer mid-way ("attempt to write a readonly
    database", seen in CI): the index reports it, keeps what it verified and goes on."""
    with contextlib.ExitStack() as stack:
        index = ChainIndex(chain, lazy=True)
        stack.callback(index.close)
        clean = ChainIndex(chain)
        stack.callback(clean.close)
        assert index.ledger is not None
        ledger = index.ledger
        real_get, real_refresh, failures = ledger.get, ledger.refresh, {"get": 1, "refresh": 1}

        def flaky(name: str, real: Any) -> Any:
            def call(*args: Any) -> Any:
                if failures[name] and (name == "refresh" or args[0] == 7):
                    failures[name] -= 1
                    raise StorageError(f"{ledger.path}: attempt to write a readonly database")
                return real(*args)

            return call

        ledger.refresh = flaky("refresh", real_refresh)  # type: ignore[method-assign]
        ledger.get = flaky("get", real_get)  # type: ignore[method-assign]
        index.follow(limit=20)  # the count fails: nothing applied, nothing bad
        assert index.bad is None and index.offline and index.applied == 1
        index.follow(limit=20)  # block 7 fails: blocks 1-6 stay applied
        assert index.bad is None and index.offline and index.applied == 7
        while index.indexing:
            index.follow(limit=50)
        assert index.bad is None and index.offline is None and index.applied == clean.applied
        assert compute_state_root(index.state) == compute_state_root(clean.state)


@pytest.mark.slow
def test_the_live_view_follows_a_devnet_on_its_contract(browser, tmp_path: Path) -> None:
    """A devnet's contract on anvil, read through its logs as ``verify`` does: the page's
    round advances while the nodes play, without a reload."""
    from derelayl.evm.node import anvil_path
    from derelayl.evm.tools import open_node

    if anvil_path() is None:
        pytest.skip("needs anvil (scripts/setup with npm)")
    out = tmp_path / "dev"
    args = [sys.executable, "-m", "derelayl.cli", "devnet", "--nodes", "4", "--rounds", "30", "--out", str(out)]
    devnet = subprocess.Popen(
        [*args, "--quiet", "--base-port", "8980"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    with contextlib.ExitStack() as stack:
        stack.callback(devnet.wait, 300)
        stack.callback(devnet.terminate)
        deadline = time.monotonic() + 120
        while not (out / "devnet.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        record = json.loads((out / "devnet.json").read_text())
        index = ChainIndex.of_contract(open_node(record["rpc"]), record["contract"])
        stack.callback(index.close)
        http = serve(stack, make_app(index, follow_every=0.2))
        page = browser.new_page()
        page.goto(f"{http.base_url}/")
        rounds = set()
        while time.monotonic() < deadline + 60 and len(rounds) < 3:
            text = page.locator("#status").inner_text()
            if text.startswith("round "):
                rounds.add(int(text.split()[1]))
            page.wait_for_timeout(300)
        assert len(rounds) >= 3, rounds
        assert index.bad is None and http.get("/api/status").json()["chain"].startswith("contract 0x")
