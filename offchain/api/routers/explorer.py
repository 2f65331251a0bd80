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
gzip-encoded once for clients that accept it), so a repeated request renders nothing.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from offchain.api.deps import DeploymentData, Rounds, RunDir, State, Templates, chain_view
from offchain.api.explorer_view import (
    ExplorerCache,
    ExplorerRound,
    ImageCache,
    ImageNotFound,
    artifact_names,
    artifact_path,
    utc_text,
)
from offchain.layout import RoundPaths

__all__ = ["EXPLORER_CACHE", "IMAGE_CACHE", "router", "warm"]

EXPLORER_CACHE = ExplorerCache()
"""Parsed rounds of every app in this process (keyed by round folder and artifact versions)."""
IMAGE_CACHE = ImageCache()
"""Encoded PNGs of every app in this process (keyed by array file and version)."""


def warm(run_dir: FilePath, deployment_file: FilePath | None) -> int:
    """Read every new or changed round of ``run_dir`` into :data:`EXPLORER_CACHE` and encode
    the images its page shows into :data:`IMAGE_CACHE`, so the first request of a posted
    round's page costs no parsing (for the server's start-up and its round warmer); return how
    many rounds were read."""
    return EXPLORER_CACHE.warm(FilePath(run_dir), deployment_file, IMAGE_CACHE)


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


def _claimed(request: Request, cache: Rounds, paths: RoundPaths,
             data: ExplorerRound) -> tuple[frozenset[int], str]:
    """The paid holders' indices whose payment is claimed, and where the flags come from
    (``chain``: the pool's Claimed events; ``node``: ``claims.json``)."""
    view = chain_view(request)
    index = cache.get(paths)
    claimed = frozenset(i for i in data.paid if index.is_claimed(paths.round_id, i, view))
    return claimed, "chain" if view is not None else "node"


class _Bodies:
    """The last rendered page of each round, kept with what it was rendered from: the round's
    :class:`ExplorerRound` (a new object for each version of its artifacts and of the
    deployment file) and the per-request inputs (claim flags, database status). A repeated
    request costs the flags and a comparison instead of rendering 1,000 rows again; the gzip
    encoding (about 6x smaller at 1,000 holders) is made once, on the first request that
    accepts it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pages: dict[Any, tuple[ExplorerRound, tuple, bytes, list[bytes]]] = {}

    def get(self, name: Any, data: ExplorerRound, inputs: tuple,
            render: Callable[[], bytes], gzipped: bool) -> bytes:
        """The page's HTML (gzip-encoded when ``gzipped``), rendered only for new inputs."""
        hit = self._pages.get(name)
        if hit is None or hit[0] is not data or hit[1] != inputs:
            hit = (data, inputs, render(), [])
            with self._lock:
                self._pages[name] = hit
        if not gzipped:
            return hit[2]
        if not hit[3]:
            hit[3].append(gzip.compress(hit[2], compresslevel=6, mtime=0))
        return hit[3][0]


_BODIES = _Bodies()


class _DbStatus:
    """Each round's status in the state database, queried again only when the database may have
    changed: keyed by ``StateView.version()`` (the SQLite file's and its log's file keys) where
    the state view has it; without it, queried on every request (a few ms)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: dict[Any, tuple[Any, str | None]] = {}

    def get(self, state: Any, deployment: dict[str, Any] | None, round_id: int) -> str | None:
        version_of = getattr(state, "version", None)
        version = (version_of(), (deployment or {}).get("pool"),
                   (deployment or {}).get("campaign_id")) if version_of else None
        name = (id(state), round_id)
        hit = self._status.get(name)
        if version is not None and hit is not None and hit[0] == version:
            return hit[1]
        row = state.deployed_round(deployment, round_id)
        status = row.status if row else None
        if version is not None:
            with self._lock:
                self._status[name] = (version, status)
        return status


_DB_STATUS = _DbStatus()


@router.get("/explorer/rounds/{round_id}", response_class=HTMLResponse, include_in_schema=False)
def explorer_page(
    round_id: int,
    request: Request,
    run_dir: RunDir,
    cache: Rounds,
    state: State,
    deployment: DeploymentData,
    templates: Templates,
) -> HTMLResponse:
    """The round explorer page; a 404 page naming the round when it does not exist."""
    paths = RoundPaths(run_dir, round_id)
    if not _round_exists(paths):
        return templates.TemplateResponse(
            request, "explorer.html", {"round_id": round_id, "round": None}, status_code=404)
    data = EXPLORER_CACHE.get(paths, deployment, request.app.state.deployment_file)
    claimed, claimed_source = _claimed(request, cache, paths, data)
    db_status = _DB_STATUS.get(state, deployment, round_id)

    def render() -> bytes:
        return _render(request, templates, data, deployment, claimed, claimed_source, db_status)

    gzipped = "gzip" in request.headers.get("accept-encoding", "").lower()
    body = _BODIES.get((id(request.app), paths.dir), data,
                       (claimed, claimed_source, db_status), render, gzipped)
    headers = {"Vary": "Accept-Encoding"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return HTMLResponse(body, headers=headers)


def _render(request: Request, templates: Any, data: ExplorerRound,
            deployment: dict[str, Any] | None, claimed: frozenset[int], claimed_source: str,
            db_status: str | None) -> bytes:
    """The explorer page's HTML (bytes) for ``data`` with these claim flags and status."""
    window = (deployment or {}).get("challenge_window_s")
    posted_at = (data.finalizes_at - int(window)
                 if data.finalizes_at is not None and window is not None else None)
    context = {
        "round_id": data.round_id,
        "round": data,
        "claimed": claimed,
        "claimed_source": claimed_source,
        "db_status": db_status,
        "threshold": (deployment or {}).get("threshold"),
        "n_signers": len((deployment or {}).get("signers") or []) or None,
        "challenge_window_s": window,
        "posted_at": posted_at,
        "posted_at_utc": utc_text(posted_at),
    }
    return bytes(templates.TemplateResponse(request, "explorer.html", context).body)


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
