"""Web pages (HTML, rendered by Jinja2 from ``offchain/api/templates/``; not in the OpenAPI
schema). ``GET /``: the run's rounds with their status, budget and Merkle root, from the same
data as ``GET /rounds``.

The router's lifespan (merged into the app's by ``include_router``) builds the bodies of ``/``,
``/rounds``, every ``/rounds/{round_id}`` and the campaigns' endpoints before the first request
and again whenever a round is posted or changed (:func:`warm_pages`, every
:data:`PAGES_SCAN_S`), so no request pays for parsing or rendering them.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse

from offchain.allocation.wei import WEI_PER_TOKEN
from offchain.api.rounds_view import RoundWarmer, app_bodies, round_ids
from offchain.api.routers import campaigns as campaigns_routes
from offchain.api.routers.rounds import (
    BodyPlan,
    chain_view_of,
    round_detail_plan,
    round_summaries,
    rounds_plan,
    run_version,
    serve_plan,
)

__all__ = ["PAGES_SCAN_S", "RoundRow", "add_page_warmer", "format_tokens", "rounds_page_plan",
           "router", "warm_pages"]

logger = logging.getLogger(__name__)

PAGES_SCAN_S = 0.5
"""Seconds between two checks of the bodies' versions by the pages' warmer thread."""

_PAGE_WARMERS: list[Callable[[FastAPI], int]] = []


def add_page_warmer(warm: Callable[[FastAPI], int]) -> Callable[[FastAPI], int]:
    """Have ``warm(app)`` called at start-up (before the first request) and then every
    :data:`PAGES_SCAN_S` by the pages' warmer thread, for another page's own parsing and
    bodies; it returns how many things it built and should cost little when nothing changed
    (it is called on every scan). An exception it raises is logged, not propagated. Usable as
    a decorator; adding the same function twice adds it once."""
    if warm not in _PAGE_WARMERS:
        _PAGE_WARMERS.append(warm)
    return warm

_TOKEN_DECIMALS = 18
"""Decimal places of the payout token (``WEI_PER_TOKEN`` = 10¹⁸ wei)."""


def format_tokens(wei: int) -> str:
    """``wei`` in whole tokens, exact (no float), thousands separated, trailing zeros dropped.

    >>> format_tokens(1_500_000_000_000_000_000), format_tokens(10**21), format_tokens(1)
    ('1.5', '1,000', '0.000000000000000001')
    """
    whole, fraction = divmod(wei, WEI_PER_TOKEN)
    if not fraction:
        return f"{whole:,}"
    return f"{whole:,}." + f"{fraction:0{_TOKEN_DECIMALS}d}".rstrip("0")


@dataclass(frozen=True)
class RoundRow:
    """One row of the rounds table: a :class:`~offchain.api.schemas.RoundSummary` with its
    budget in tokens for reading (the exact wei stays in ``budget_wei``)."""

    round_id: int
    status: str
    budget_wei: str
    budget_tokens: str
    merkle_root: str | None
    tx_hash: str | None


def _page_request(app: FastAPI, root_path: str) -> Request:
    """A request of ``GET /`` for rendering outside one (the templates' ``url_for`` needs the
    app's router and the root path; nothing else of a request reaches the page)."""
    return Request({"type": "http", "method": "GET", "path": "/", "root_path": root_path,
                    "query_string": b"", "headers": [], "app": app, "router": app.router,
                    "scheme": "http", "server": ("127.0.0.1", 80)})


def rounds_page_plan(app: FastAPI, root_path: str = "") -> BodyPlan:
    """The ``GET /`` page's body (HTML, UTF-8) of ``app`` under ``root_path``."""
    state = app.state
    version = (run_version(state.run_dir), root_path)

    def build() -> bytes:
        rows = [
            RoundRow(
                round_id=summary.round_id,
                status=summary.status,
                budget_wei=summary.budget_wei,
                budget_tokens=format_tokens(int(summary.budget_wei)),
                merkle_root=summary.merkle_root,
                tx_hash=summary.tx_hash,
            )
            for summary in round_summaries(state.run_dir, state.round_cache, version[0])
        ]
        template = state.templates.get_template("rounds.html")
        return template.render(request=_page_request(app, root_path), rounds=rows).encode()

    return ("page", "/", root_path), version, build


router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def rounds_page(request: Request) -> Response:
    """The run's rounds as an HTML table (the page ``GET /`` serves)."""
    plan = rounds_page_plan(request.app, request.scope.get("root_path", ""))
    return await serve_plan(request.app.state, plan, media_type="text/html; charset=utf-8",
                            accept_encoding=request.headers.get("accept-encoding", ""))


def warm_pages(app: FastAPI) -> int:
    """Build every body of the pages and endpoints that changed since the last call (the
    rounds page, ``/rounds``, each round, the campaigns'); return how many were built.

    A body that fails to build (a half-written round, an unknown campaign) is left to the
    request that asks for it, which gets the error as without warming.
    """
    state = app.state
    bodies = app_bodies(state)
    plans = [rounds_page_plan(app), rounds_plan(state), campaigns_routes.campaigns_plan(state)]
    plans += [round_detail_plan(state, r) for r in round_ids(state.run_dir)]
    for cid in campaigns_routes.campaign_ids_of(state):
        plans += [campaigns_routes.campaign_plan(state, cid, rounds_only=flag)
                  for flag in (False, True)]
    built = 0
    for name, version, build in plans:
        if bodies.cached(name, version) is not None:
            continue
        try:
            bodies.get(name, version, build)
        except (HTTPException, OSError, ValueError, KeyError, TypeError) as exc:
            logger.debug("not warming %s: %s", name, exc)
            continue
        built += 1
    return built


class _PagesWarm:
    """:func:`warm_pages` in the shape :class:`RoundWarmer` calls (``warm(run_dir)``), skipped
    while nothing the bodies are built from changed (the rounds' artifacts, the database, the
    deployment file, the chain's view): a scan of an unchanged node is a directory listing and
    a few ``stat`` calls."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._seen: tuple[Any, Any] | None = None

    def warm(self, _run_dir: Path) -> int:
        built = 0
        for warm in list(_PAGE_WARMERS):
            try:
                built += warm(self.app)
            except Exception:  # never let the warmer thread die: requests build what it could not
                logger.exception("page warmer %r failed", warm)
        state = self.app.state
        try:
            world = (run_version(state.run_dir), state.state_view.version(),
                     state.state_view.deployment(state.deployment_file)[0])
            view = chain_view_of(state)
            if self._seen is not None and self._seen[0] == world and self._seen[1] is view:
                return built
            built += warm_pages(self.app)
            self._seen = (world, view)
        except Exception:
            logger.exception("warming the pages failed")
        return built


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Build the pages' bodies before the first request (off the event loop), then keep them
    built from a warmer thread until shutdown."""
    state = app.state
    warm = _PagesWarm(app)
    await anyio.to_thread.run_sync(warm.warm, state.run_dir)
    gc.freeze()  # what was parsed for them is never scanned by the collector again
    warmer = RoundWarmer(warm, state.run_dir, PAGES_SCAN_S,  # type: ignore[arg-type]
                         on_parsed=lambda _n: gc.freeze())
    warmer.start()
    try:
        yield
    finally:
        with contextlib.suppress(RuntimeError):
            warmer.stop()


router.lifespan_context = _lifespan
