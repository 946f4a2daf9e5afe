"""The explorer's HTTP server (FastAPI): HTML pages and a JSON API over a ``ChainIndex``.

Pages (``/``, ``/block/<height>``, ``/participant/<i>``, ``/model/<id>``, ``/leaderboard``,
``/figures``) are one shell that ``static/app.js`` fills from the API; an unknown block,
participant or model is a 404 page that says what was not found. Lists are paginated and
series downsampled, so no request carries the whole chain. A thread follows the chain once a
second; pages poll ``/api/status`` and redraw when the height moves.

Front-end libraries (Chart.js, Cytoscape.js) come from the npm registry at set-up
(``scripts/setup`` puts them in ``.tools/node_modules``) and are served from ``/vendor``;
nothing is fetched from elsewhere at run time.
"""

from __future__ import annotations

import contextlib
import functools
import html
import os
import threading
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from derelayl.explorer.index import REASONS, ChainIndex, ModelRecord
from derelayl.protocol.types import UNIT

__all__ = ["VENDOR", "make_app", "vendor_dir"]

VENDOR = {
    "chart.js": "chart.js/dist/chart.umd.js",
    "cytoscape.js": "cytoscape/dist/cytoscape.min.js",
}
MAX_LIMIT = 500
STEP = 200
"""Blocks indexed between two looks at the lock: pages answer while a long chain is indexed."""
MAX_POINTS = 500


def vendor_dir() -> Path | None:
    """Where the npm packages are: ``DERELAYL_VENDOR``, else ``.tools/node_modules`` of the
    checkout this package runs from."""
    given = os.environ.get("DERELAYL_VENDOR")
    here = Path(given) if given else Path(__file__).resolve().parents[3] / ".tools" / "node_modules"
    return here if all((here / rel).is_file() for rel in VENDOR.values()) else None


def _page(page: str, title: str, **data: Any) -> HTMLResponse:
    shell = resources.files("derelayl.explorer").joinpath("static/page.html").read_text()
    attrs = " ".join(f'data-{k}="{html.escape(str(v))}"' for k, v in data.items())
    filled = shell.replace("{{title}}", html.escape(title)).replace("{{page}}", page).replace("{{attrs}}", attrs)
    return HTMLResponse(filled)


def _not_found(what: str) -> HTMLResponse:
    page = _page("missing", "not found", missing=what)
    page.status_code = 404
    return page


def _series(values: list[Any]) -> list[Any]:
    """At most ``MAX_POINTS`` evenly spaced points, the last one always kept."""
    if len(values) <= MAX_POINTS:
        return values
    picks = np.unique(np.linspace(0, len(values) - 1, MAX_POINTS).astype(int))
    return [values[i] for i in picks]


def _model(record: ModelRecord) -> dict[str, Any]:
    return {
        "id": record.model_id,
        "round": record.round,
        "trainer": record.trainer,
        "payee": record.payee,
        "parent": record.parent,
        "version": record.version,
        "score": record.score,
        "selected": record.selected,
        "children": len(record.children),
    }


def _limit(value: int) -> int:
    return max(1, min(int(value), MAX_LIMIT))


def _locked(index: ChainIndex, handler: Callable[..., Any]) -> Callable[..., Any]:
    """``handler`` run while the index is not being extended (a consistent snapshot)."""

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> Any:
        with index.lock:
            return handler(*args, **kwargs)

    return run


def make_app(index: ChainIndex, follow_every: float = 1.0) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        """A thread follows the chain (``index.follow``) while the server runs."""
        stop = threading.Event()

        def follow() -> None:
            while not stop.is_set():
                index.follow(limit=STEP)
                # (between steps, a short pause lets requests waiting for the index lock in)
                stop.wait(0.02 if index.indexing else follow_every)

        thread = threading.Thread(target=follow, name="follow", daemon=True)
        thread.start()
        yield
        stop.set()
        thread.join(5)

    app = FastAPI(title="derelayl explorer", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    def api(path: str) -> Callable[[Callable[..., Any]], Any]:
        return lambda handler: app.get(path)(_locked(index, handler))

    # ------------------------------------------------------------ pages

    @app.get("/", response_class=HTMLResponse)
    def timeline() -> HTMLResponse:
        return _page("timeline", "rounds")

    @app.get("/leaderboard", response_class=HTMLResponse)
    def leaderboard_page() -> HTMLResponse:
        return _page("leaderboard", "leaderboard")

    @app.get("/figures", response_class=HTMLResponse)
    def figures_page() -> HTMLResponse:
        return _page("figures", "figures")

    @app.get("/block/{height}", response_class=HTMLResponse)
    def block_page(height: str) -> HTMLResponse:
        if not height.isdigit() or int(height) >= len(index.blocks):
            return _not_found(f"block {height}")
        return _page("block", f"block {height}", height=height)

    @app.get("/participant/{who}", response_class=HTMLResponse)
    def participant_page(who: str) -> HTMLResponse:
        state = index.state
        if state is None or not who.isdigit() or int(who) >= state.n_participants:
            return _not_found(f"participant {who}")
        return _page("participant", f"participant {who}", who=who)

    @app.get("/model/{model_id}", response_class=HTMLResponse)
    def model_page(model_id: str) -> HTMLResponse:
        if not model_id.isdigit() or int(model_id) not in index.models:
            return _not_found(f"model {model_id}")
        return _page("model", f"model {model_id}", model=model_id)

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in ("app.js", "style.css"):
            return _not_found(f"file {name}")
        path = resources.files("derelayl.explorer").joinpath(f"static/{name}")
        kind = "text/javascript" if name.endswith(".js") else "text/css"
        return Response(path.read_bytes(), media_type=kind)

    @app.get("/vendor/{name}")
    def vendor(name: str) -> Response:
        root = vendor_dir()
        if root is None or name not in VENDOR:
            return JSONResponse({"error": f"{name}: not installed (run scripts/setup)"}, status_code=404)
        return FileResponse(root / VENDOR[name], media_type="text/javascript")

    # ------------------------------------------------------------ API

    @api("/api/status")
    def status() -> dict[str, Any]:
        state = index.state
        last = index.rounds[-1] if index.rounds else None
        return {
            "chain": index.source,
            "height": len(index.blocks),
            "round": None if state is None else state.round,
            "phase": None if state is None else state.phase.name.lower(),
            "participants": None if state is None else state.n_participants,
            "head": index.blocks[-1]["hash"] if index.blocks else None,
            "settled_rounds": len(index.rounds),
            "indexing": {"verified": index.applied, "stored": index.stored} if index.indexing else None,
            "last_round": last,
            "bad_block": None if index.bad is None else {"height": index.bad[0], "reason": index.bad[1]},
            "vendor": vendor_dir() is not None,
            "node_unreachable": index.offline,
        }

    @api("/api/rounds")
    def rounds(before: int | None = None, limit: int = 20) -> dict[str, Any]:
        """Settled rounds, newest first, ``limit`` of them before round ``before``."""
        end = len(index.rounds) if before is None else max(0, min(before, len(index.rounds)))
        chosen = index.rounds[max(0, end - _limit(limit)) : end][::-1]
        out = []
        for r in chosen:
            blocks = [b for b in index.blocks[max(0, r["height"] - 8) : r["height"] + 1] if b["round"] == r["round"]]
            out.append({**r, "blocks": [b for b in blocks if b["kind"] != "genesis"]})
        return {"rounds": out, "next_before": chosen[-1]["round"] if chosen and chosen[-1]["round"] > 0 else None}

    @api("/api/block/{height}")
    def block(height: int) -> Response:
        if not 0 <= height < len(index.blocks):
            return JSONResponse({"error": f"block {height} not found"}, status_code=404)
        return JSONResponse(index.blocks[height])

    @api("/api/participant/{who}")
    def participant(who: int, models_offset: int = 0) -> Response:
        state = index.state
        if state is None or not 0 <= who < state.n_participants:
            return JSONResponse({"error": f"participant {who} not found"}, status_code=404)

        def at(values: np.ndarray) -> int:  # (a participant that joined later has no earlier entries)
            return int(values[who]) if who < values.size else 0

        series = [{"round": i, "coins": at(b) / UNIT} for i, b in enumerate(index.balances)]
        totals = {k: sum(at(r[k]) for r in index.rewards) / UNIT for k in REASONS}
        recent = [
            {"round": i, **{k: at(v) / UNIT for k, v in r.items()}}
            for i, r in enumerate(index.rewards)
            if any(at(v) for v in r.values())
        ][-50:][::-1]
        trained = index.trained.get(who, [])
        return JSONResponse(
            {
                "participant": who,
                "key": state.keys[who].hex(),
                "coins": int(state.balances[who]) / UNIT,
                "balance": _series(series),
                "rewards_total": totals,
                "rewards_recent": recent,
                "models_trained": len(trained),
                "models_selected": index.selected_by[who],
                "paid_for_models": index.paid_for[who],
                "blocks_mined": index.mined[who],
                "models": [_model(index.models[m]) for m in trained[::-1][models_offset : models_offset + 100]],
            }
        )

    @api("/api/model/{model_id}")
    def model(model_id: int) -> Response:
        record = index.models.get(model_id)
        if record is None:
            return JSONResponse({"error": f"model {model_id} not found"}, status_code=404)
        lineage = index.lineage(model_id)
        descendants, selected, frontier = 0, int(record.selected and record.round >= 0), list(record.children)
        while frontier and descendants < 10_000:
            current = index.models[frontier.pop()]
            descendants += 1
            selected += current.selected
            frontier += current.children
        state = index.state
        return JSONResponse(
            {
                **_model(record),
                "lineage": [_model(m) for m in lineage[:MAX_LIMIT]],
                "lineage_length": len(lineage),
                "children_ids": record.children[:MAX_LIMIT],
                "descendants": descendants if not frontier else f"{descendants}+",
                "paid_because_of_it": {
                    "payee": record.payee,
                    "selections": selected if not frontier else f"{selected}+",
                    "reward_scheme": None if state is None else state.params.reward_scheme,
                    "coins_per_selection": None if state is None else state.params.lineage_reward / UNIT,
                },
            }
        )

    @api("/api/leaderboard")
    def leaderboard(limit: int = 20) -> dict[str, Any]:
        state = index.state
        if state is None:
            return {"participants": []}
        order = np.argsort(-state.balances, kind="stable")[: _limit(limit)]
        return {
            "participants": [
                {"participant": p, "coins": int(state.balances[p]) / UNIT, "models_selected": index.selected_by[p]}
                for p in order.tolist()
            ]
        }

    @api("/api/series")
    def series() -> dict[str, Any]:
        keep = ("round", "supply_coins", "gini", "pairs_per_live_model", "models", "selected")
        return {"rounds": _series([{k: r[k] for k in keep} for r in index.rounds])}

    @api("/api/figures")
    def figures() -> dict[str, Any]:
        """The paper's two figures, from the chain: coins per participant (sorted) and how
        many versions behind the newest each participant's newest trained model is."""
        state = index.state
        if state is None:
            return {"coins": [], "versions": {}}
        behind = state.latest_version - state.trained_version
        counts = {str(k): int((behind == k).sum()) for k in range(0, 5)}
        counts["older"] = int((behind >= 5).sum())
        return {"coins": sorted((int(b) / UNIT for b in state.balances), reverse=True), "versions": counts}

    return app
