"""``GET /rounds`` and ``GET /rounds/{round_id}``: the run folder's rounds, and one round with its
signatures and each holder's payment.

Both answer encoded bodies kept per version of what they are built from
(:class:`~offchain.api.rounds_view.BodyCache`: the rounds' artifacts, the state database, the
deployment file and the chain's claimed flags), built ahead of requests when a round is posted
(:func:`offchain.api.routers.pages.warm_pages`) and otherwise on the first request of a new
version, off the event loop. The bytes are what FastAPI's ``response_model`` path writes.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool

from offchain.allocation import parse_wei, wei_str
from offchain.api.rounds_view import (
    RoundCache,
    RoundPage,
    accepts_gzip,
    app_bodies,
    claimed_by_round,
    round_ids,
)
from offchain.api.schemas import HolderPayment, RoundDetail, RoundSignature, RoundSummary
from offchain.api.state_view import StateView
from offchain.layout import RoundPaths

__all__ = ["BodyPlan", "round_detail_plan", "rounds_plan", "router", "run_version", "serve_plan"]

BodyPlan = tuple[Hashable, Any, Callable[[], bytes]]
"""``(name, version, build)`` of a body in the app's
:class:`~offchain.api.rounds_view.BodyCache`."""

_SUMMARIES = TypeAdapter(list[RoundSummary])
_DETAIL = TypeAdapter(RoundDetail)

router = APIRouter()


def run_version(run_dir: Path) -> tuple[tuple[int, tuple], ...]:
    """Each served round's id and :meth:`RoundPage.key` (a directory listing and seven
    ``stat`` calls per round)."""
    return tuple((r, RoundPage.key(RoundPaths(run_dir, r))) for r in round_ids(run_dir))


def round_summaries(run_dir: Path, cache: RoundCache,
                    version: tuple[tuple[int, tuple], ...]) -> list[RoundSummary]:
    """:func:`~offchain.api.rounds_view.round_summary` of each round of ``version``.

    Raises:
        WeiFormatError: a round's ``budget_wei`` is not a wei amount.
    """
    return [cache.page(RoundPaths(run_dir, r), key).summary() for r, key in version]


def rounds_plan(state: Any) -> BodyPlan:
    """The ``GET /rounds`` body of the app whose ``app.state`` is ``state``."""
    version = run_version(state.run_dir)

    def build() -> bytes:
        return _SUMMARIES.dump_json(round_summaries(state.run_dir, state.round_cache, version),
                                    by_alias=True)

    return ("rounds",), version, build


async def serve_plan(state: Any, plan: BodyPlan, media_type: str = "application/json",
                     accept_encoding: str = "") -> Response:
    """Answer ``plan``'s stored body, or build it off the event loop (then store it); a long
    body goes gzip-encoded (encoded once, when stored) to a client whose ``Accept-Encoding``
    (``accept_encoding``) takes gzip, and says it varies with that header."""
    name, version, build = plan
    bodies = app_bodies(state)
    body = bodies.cached(name, version)
    if body is None:
        body = await run_in_threadpool(bodies.get, name, version, build)
    packed = bodies.gzipped(name, version)
    if packed is None:
        return Response(content=body, media_type=media_type)
    headers = {"vary": "Accept-Encoding"}
    if accepts_gzip(accept_encoding):
        headers["content-encoding"] = "gzip"
        body = packed
    return Response(content=body, media_type=media_type, headers=headers)


@router.get("/rounds", response_model=list[RoundSummary])
async def rounds(request: Request) -> Response:
    return await serve_plan(request.app.state, rounds_plan(request.app.state),
                            accept_encoding=request.headers.get("accept-encoding", ""))


def _signature_pairs(signed: dict) -> list[tuple[str, str]]:
    """``(signer, signature)`` of a round's ``signature.json`` (empty before signing)."""
    if "signatures" in signed:  # k-of-n: parallel lists, ascending signer
        return list(zip(signed.get("signers") or [], signed["signatures"], strict=False))
    if signed.get("signature"):  # single-signer rounds written before k-of-n
        return [(signed.get("signer") or "", signed["signature"])]
    return []


def chain_view_of(state: Any):  # noqa: ANN201 (ClaimedView | None; chain import kept lazy)
    """As :func:`offchain.api.deps.chain_view`, from ``app.state``."""
    chain = getattr(state, "chain_claims", None)
    return None if chain is None else chain.view(state.deployment_file)


def round_detail_model(state: Any, round_id: int, view: Any,
                       deployment: dict[str, Any] | None) -> RoundDetail:
    """Round ``round_id``'s :class:`RoundDetail` (see :func:`round_detail`).

    Raises:
        FileNotFoundError: the round has no ``decision.json``.
        KeyError, WeiFormatError: an artifact lacks a field or holds a malformed amount.
    """
    paths = RoundPaths(state.run_dir, round_id)
    cache: RoundCache = state.round_cache
    page = cache.page(paths)
    signed = page.signature or {}
    db = state.state_view.deployed_round(deployment, round_id)
    rnd = cache.get(paths)
    holders = []
    for h in page.allocation["holders"]:
        amount = parse_wei(h["amount_wei"], "amount_wei")
        index = int(h["index"])
        licence, attribution = page.credits.get(index, (None, None))
        holders.append(HolderPayment(
            index=index, name=h["name"], address=h["address"], participating=h["participating"],
            amount_wei=wei_str(amount, "amount_wei"),
            claimed=None if amount == 0 else rnd.is_claimed(round_id, index, view),
            licence=licence, attribution=attribution,
        ))
    if page.decision is None:
        raise FileNotFoundError(f"no decision.json in {paths.dir}")
    return RoundDetail(
        **page.summary().model_dump(),
        round_status=db.status if db else None,
        provenance=page.allocation.get("provenance"),
        policy=page.decision["policy"],
        digest=signed.get("digest"),
        signatures=[RoundSignature(signer=a, signature=sig) for a, sig in _signature_pairs(signed)],
        threshold=(deployment or {}).get("threshold"),
        claimed_source="chain" if view is not None else "node",
        holders=holders,
    )


def round_detail_plan(state: Any, round_id: int) -> BodyPlan:
    """The ``GET /rounds/{round_id}`` body: its version is the round's artifacts, the state
    database, the deployment file and (with a chain) the round's claimed indices."""
    paths = RoundPaths(state.run_dir, round_id)
    view = chain_view_of(state)
    states: StateView = state.state_view
    deployment_key, deployment = states.deployment(state.deployment_file)
    claimed = None if view is None else claimed_by_round(view).get(round_id, frozenset())
    version = (RoundPage.key(paths), RoundCache.key(paths), states.version(), deployment_key,
               view is not None, claimed)

    def build() -> bytes:
        return _DETAIL.dump_json(round_detail_model(state, round_id, view, deployment),
                                 by_alias=True)

    return ("round", round_id), version, build


def is_round(run_dir: Path, round_id: int) -> bool:
    """Whether ``round_id`` is one of :func:`round_ids` (one ``stat``)."""
    return round_id >= 0 and RoundPaths(run_dir, round_id).allocation.exists()


@router.get("/rounds/{round_id}", response_model=RoundDetail)
async def round_detail(round_id: int, request: Request) -> Response:
    """A round: budget, Merkle root, provenance, the k-of-n signatures and threshold, and each
    holder's payment (wei) with whether it is claimed (see ``claimed_source``) and the licence
    and attribution of its works (where stated)."""
    state = request.app.state
    if not is_round(state.run_dir, round_id):
        raise HTTPException(status_code=404, detail=f"unknown round {round_id}")
    return await serve_plan(state, round_detail_plan(state, round_id),
                            accept_encoding=request.headers.get("accept-encoding", ""))
