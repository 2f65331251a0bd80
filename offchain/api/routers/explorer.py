"""The round explorer, for anyone (no wallet): ``GET /explorer/rounds/{round_id}`` (HTML,
server-rendered) shows a round's status, budget, Merkle root, holders with their contributions,
copyright losses, payments and claim flags, its generated images next to the holders' works,
its provenance commitments with the artifacts to recompute them, its signers and its challenge
window. The page's images and downloads are served here too:

* ``GET /rounds/{round_id}/images/generated/{k}.png``: generated sample ``k`` (``samples.npy``);
* ``GET /rounds/{round_id}/images/works/{holder}/{k}.png``: holder ``holder``'s ``k``-th
  training image (``train_images.npy`` / ``holder_index.npy``);
* ``GET /rounds/{round_id}/artifacts/{name}``: one of the round's allow-listed files, read-only
  (:func:`offchain.api.explorer_view.artifact_names`); 404 for anything else.

The round's data and encoded PNGs are cached per version of its artifacts
(:class:`~offchain.api.explorer_view.ExplorerCache`, :class:`~offchain.api.explorer_view.
ImageCache`); only the claim flags are read per request (from the chain when the node has an
RPC, else ``claims.json``). The rendered page is kept with the inputs it was made from (and
gzip-encoded once for clients that accept it), so a repeated request renders nothing; the
pages' warmer (:func:`offchain.api.routers.pages.add_page_warmer`) calls :func:`warm_explorer`
at start-up and on every scan, so a posted round's page and images are ready before anyone asks.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, Response

from offchain.api.deps import RunDir
from offchain.api.explorer_view import (
    ExplorerCache,
    ExplorerRound,
    ImageCache,
    ImageNotFound,
    artifact_names,
    artifact_path,
    utc_text,
)
from offchain.api.rounds_view import round_ids
from offchain.api.routers.pages import add_page_warmer
from offchain.api.routers.rounds import chain_view_of
from offchain.layout import RoundPaths

__all__ = ["EXPLORER_CACHE", "IMAGE_CACHE", "router", "warm_explorer"]

EXPLORER_CACHE = ExplorerCache()
"""Parsed rounds of every app in this process (keyed by round folder and artifact versions)."""
IMAGE_CACHE = ImageCache()
"""Encoded PNGs of every app in this process (keyed by array file and version)."""

_MEDIA_TYPES = {".json": "application/json", ".png": "image/png"}
_IMAGE_HEADERS = {"Cache-Control": "public, max-age=60"}

RoundId = Annotated[int, Path(ge=1, description="the round (1-based)")]
Index = Annotated[int, Path(ge=0)]

router = APIRouter(tags=["explorer"])


def _round_exists(paths: RoundPaths) -> bool:
    """Whether the round has an ``allocation.json`` (False for an id too long for a file name)."""
    try:
        return paths.round_id >= 1 and paths.allocation.is_file()
    except (OSError, ValueError):
        return False


def _round_or_404(run_dir: Any, round_id: int) -> RoundPaths:
    paths = RoundPaths(run_dir, round_id)
    if not _round_exists(paths):
        raise HTTPException(status_code=404, detail=f"unknown round {round_id}")
    return paths


def _claimed(state: Any, paths: RoundPaths, data: ExplorerRound) -> tuple[frozenset[int], str]:
    """The paid holders' indices whose payment is claimed, and where the flags come from
    (``chain``: the pool's Claimed events; ``node``: ``claims.json``)."""
    view = chain_view_of(state)
    index = state.round_cache.get(paths)
    claimed = frozenset(i for i in data.paid if index.is_claimed(paths.round_id, i, view))
    return claimed, "chain" if view is not None else "node"


class _DbStatus:
    """Each round's status in the state database, queried again only when
    :meth:`~offchain.api.state_view.StateView.version` says the database may have changed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: dict[Any, tuple[Any, str | None]] = {}

    def get(self, view: Any, deployment: dict[str, Any] | None, round_id: int) -> str | None:
        version = (view.version(), (deployment or {}).get("pool"),
                   (deployment or {}).get("campaign_id"))
        name = (id(view), round_id)
        hit = self._status.get(name)
        if hit is not None and hit[0] == version:
            return hit[1]
        row = view.deployed_round(deployment, round_id)
        status = row.status if row else None
        with self._lock:
            self._status[name] = (version, status)
        return status


_DB_STATUS = _DbStatus()


@dataclass(frozen=True)
class _Page:
    """What one explorer page is rendered from: the round's data (a new object per version of
    its artifacts and of the deployment file), the deployment, and the per-request inputs
    (claim flags and their source, database status, root path)."""

    paths: RoundPaths
    data: ExplorerRound
    deployment: dict[str, Any] | None
    inputs: tuple


def _page(app: FastAPI, round_id: int, root_path: str) -> _Page | None:
    """Round ``round_id``'s page inputs (None when the round does not exist): a few dozen
    ``stat`` calls and the claim flags when nothing changed."""
    state = app.state
    paths = RoundPaths(state.run_dir, round_id)
    if not _round_exists(paths):
        return None
    _, deployment = state.state_view.deployment(state.deployment_file)
    data = EXPLORER_CACHE.get(paths, deployment, state.deployment_file)
    claimed, source = _claimed(state, paths, data)
    db_status = _DB_STATUS.get(state.state_view, deployment, round_id)
    return _Page(paths, data, deployment, (claimed, source, db_status, root_path))


class _Bodies:
    """The last rendered page of each round, kept with what it was rendered from
    (:class:`_Page`: the data object and the inputs). A repeated request costs the inputs and a
    comparison instead of rendering 1,000 rows again; the gzip encoding (about 6x smaller at
    1,000 holders) is made once, on the first request that accepts it (or by the warmer)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pages: dict[Any, tuple[ExplorerRound, tuple, bytes, list[bytes]]] = {}

    def cached(self, name: Any, page: _Page, gzipped: bool) -> bytes | None:
        """The stored body for ``page`` (gzip-encoded when ``gzipped``), or None."""
        hit = self._pages.get(name)
        if hit is None or hit[0] is not page.data or hit[1] != page.inputs:
            return None
        if not gzipped:
            return hit[2]
        return hit[3][0] if hit[3] else None

    def get(self, name: Any, page: _Page, gzipped: bool, render: Callable[[], bytes]) -> bytes:
        """The body for ``page``, rendered (and gzip-encoded) only when not stored."""
        hit = self._pages.get(name)
        if hit is None or hit[0] is not page.data or hit[1] != page.inputs:
            hit = (page.data, page.inputs, render(), [])
            with self._lock:
                self._pages[name] = hit
        if not gzipped:
            return hit[2]
        if not hit[3]:
            hit[3].append(gzip.compress(hit[2], compresslevel=6, mtime=0))
        return hit[3][0]


_BODIES = _Bodies()


def _render_request(app: FastAPI, root_path: str) -> Request:
    """A request for rendering outside one (the templates' ``url_for`` needs the app's router
    and the root path; nothing else of a request reaches the page)."""
    return Request({"type": "http", "method": "GET", "path": "/", "root_path": root_path,
                    "query_string": b"", "headers": [], "app": app, "router": app.router,
                    "scheme": "http", "server": ("127.0.0.1", 80)})


def _render(app: FastAPI, page: _Page) -> bytes:
    """The explorer page's HTML (UTF-8) of ``page``."""
    data, deployment = page.data, page.deployment
    claimed, claimed_source, db_status, root_path = page.inputs
    window = (deployment or {}).get("challenge_window_s")
    posted_at = (data.finalizes_at - int(window)
                 if data.finalizes_at is not None and window is not None else None)
    template = app.state.templates.get_template("explorer.html")
    return template.render(
        request=_render_request(app, root_path),
        round_id=data.round_id,
        round=data,
        claimed=claimed,
        claimed_source=claimed_source,
        db_status=db_status,
        threshold=(deployment or {}).get("threshold"),
        n_signers=len((deployment or {}).get("signers") or []) or None,
        challenge_window_s=window,
        posted_at=posted_at,
        posted_at_utc=utc_text(posted_at),
    ).encode()


def _body(app: FastAPI, page: _Page, gzipped: bool) -> bytes:
    return _BODIES.get((id(app), page.paths.dir), page, gzipped, lambda: _render(app, page))


def _page_body(app: FastAPI, round_id: int, root_path: str, gzipped: bool) -> bytes | None:
    """The explorer page of round ``round_id`` (gzip-encoded when ``gzipped``): the stored one
    while nothing it is made from changed; None when the round does not exist."""
    page = _page(app, round_id, root_path)
    if page is None:
        return None
    return _body(app, page, gzipped)


@router.get("/explorer/rounds/{round_id}", response_class=HTMLResponse, include_in_schema=False)
async def explorer_page(round_id: int, request: Request) -> Response:
    """The round explorer page (gzip-encoded for clients that accept it); a 404 page naming
    the round when it does not exist. One worker-thread call: checking the inputs (a few dozen
    ``stat`` calls) and, only when one changed, reading and rendering."""
    app = request.app
    gzipped = "gzip" in request.headers.get("accept-encoding", "").lower()
    body = await run_in_threadpool(
        _page_body, app, round_id, request.scope.get("root_path", ""), gzipped)
    if body is None:
        return await run_in_threadpool(
            app.state.templates.TemplateResponse,
            request, "explorer.html", {"round_id": round_id, "round": None}, status_code=404)
    headers = {"Vary": "Accept-Encoding"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="text/html; charset=utf-8", headers=headers)


@add_page_warmer
def warm_explorer(app: FastAPI) -> int:
    """Read every new or changed round into :data:`EXPLORER_CACHE`, encode the images its page
    shows and render (and gzip) its page, so neither a posted round's first request nor its
    images pay for parsing or rendering (called by the pages' warmer at start-up and every
    scan); return how many rounds were read or rendered."""
    state = app.state
    built = EXPLORER_CACHE.warm(state.run_dir, state.deployment_file, IMAGE_CACHE)
    for round_id in round_ids(state.run_dir):
        page = _page(app, round_id, "")
        if page is None or _BODIES.cached((id(app), page.paths.dir), page, True) is not None:
            continue
        _body(app, page, True)
        built += 1
    return built


def _png(render: Callable[[], bytes]) -> Response:
    """``render()``'s PNG bytes as a response; 404 for :class:`ImageNotFound`."""
    try:
        png = render()
    except ImageNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    return Response(png, media_type="image/png", headers=_IMAGE_HEADERS)


@router.get("/rounds/{round_id}/images/generated/{k}.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}, 404: {}})
def generated_image(round_id: RoundId, k: Index, run_dir: RunDir) -> Response:
    """Generated sample ``k`` of the round (``samples.npy``) as a PNG at its own size (16 px for
    the tiny profile: upscale with nearest-neighbour)."""
    paths = _round_or_404(run_dir, round_id)
    return _png(lambda: IMAGE_CACHE.generated(paths, k))


@router.get("/rounds/{round_id}/images/works/{holder}/{k}.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}, 404: {}})
def work_image(round_id: RoundId, holder: Index, k: Index, run_dir: RunDir) -> Response:
    """Holder ``holder``'s ``k``-th training image in the round (0-based, in training-set order)
    as a PNG."""
    paths = _round_or_404(run_dir, round_id)
    return _png(lambda: IMAGE_CACHE.work(paths, holder, k))


@router.get("/rounds/{round_id}/artifacts/{name:path}", response_class=FileResponse,
            responses={404: {}})
def artifact(round_id: RoundId, name: str, run_dir: RunDir) -> FileResponse:
    """One of the round's artifacts, read-only: the files that let anyone recompute the round's
    commitments (``manifest.json``, ``train_images.npy``, ``holder_index.npy``,
    ``trak/scores.npy``, ``checkpoint/…``) and its other records (``allocation.json``,
    ``tree.json``, ``signature.json``…). 404 for any other name (never a file outside the
    round's folder)."""
    paths = _round_or_404(run_dir, round_id)
    path = artifact_path(paths, name, artifact_names(paths))
    if path is None:
        raise HTTPException(status_code=404, detail=f"round {round_id} has no artifact {name!r}")
    media = _MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    return FileResponse(path, media_type=media, headers={"X-Content-Type-Options": "nosniff"})
