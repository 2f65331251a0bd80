"""Campaign status: ``GET /campaigns``, ``GET /campaigns/{campaign_id}`` and its ``/rounds``.

The run folder's ``deployment.json`` joined with the round-state database, read only (a GET never
creates or migrates the database; without one, statuses come from the round artifacts). Bodies
are kept per version of the rounds' artifacts, the database and the deployment file
(:func:`~offchain.api.routers.rounds.serve_plan`), built ahead of requests by
:func:`offchain.api.routers.pages.warm_pages`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import TypeAdapter

from offchain.api.rounds_view import RoundCache, artifact_status, round_ids
from offchain.api.routers.rounds import BodyPlan, run_version, serve_plan
from offchain.api.schemas import CampaignDetail, CampaignRound, CampaignSummary
from offchain.api.state_view import StateView
from offchain.layout import RoundPaths
from offchain.rounds.pipeline import STAGE_KEYS

__all__ = ["campaign_ids_of", "campaign_plan", "campaigns_plan", "router"]

_SUMMARIES = TypeAdapter(list[CampaignSummary])
_DETAIL = TypeAdapter(CampaignDetail)
_ROUNDS = TypeAdapter(list[CampaignRound])


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _campaign_rounds(
    run_dir: Path, state: StateView, deployment: dict[str, Any], campaign_id: int,
    cache: RoundCache,
) -> list[CampaignRound]:
    """The campaign's rounds: those the database knows, and for the deployment file's own
    campaign also those of the run folder (status from the artifacts when the database has no
    row; artifacts read through ``cache``)."""
    db = state.rounds(int(deployment["chain_id"]), deployment["pool"], campaign_id)
    own = campaign_id == deployment.get("campaign_id")  # the run folder's rounds are its
    ids = set(db or {}) | (set(round_ids(run_dir)) if own else set())
    out = []
    for round_id in sorted(ids):
        paths = RoundPaths(run_dir, round_id)
        page = cache.page(paths) if own and paths.allocation.exists() else None
        allocation = page.allocation if page is not None else {}
        submission = (page.submission if page is not None else None) or {}
        row = (db or {}).get(round_id)
        out.append(
            CampaignRound(
                round_id=round_id,
                status=row.status if row else (
                    page.artifact_status if page is not None else artifact_status(paths)),
                status_source="database" if row else "artifacts",
                stages=row.stages if row else dict.fromkeys(STAGE_KEYS),
                merkle_root=allocation.get("merkle_root"),
                budget_wei=_str_or_none(allocation.get("budget_wei")),
                tx_hash=submission.get("tx_hash") or (row.tx_hash if row else None),
            )
        )
    return out


def _campaign_summary(deployment: dict[str, Any], campaign_id: int, rounds: int) -> CampaignSummary:
    """A campaign's parameters: the deployment file's for its own campaign, else only the pool."""
    own = campaign_id == deployment.get("campaign_id")
    params = deployment if own else {}
    return CampaignSummary(
        campaign_id=campaign_id,
        chain_id=int(deployment["chain_id"]),
        pool=deployment["pool"],
        token=deployment.get("token"),
        signers=list(params.get("signers") or []),
        threshold=params.get("threshold"),
        total_budget_wei=_str_or_none(params.get("total_budget_wei")),
        round_cap_wei=_str_or_none(params.get("round_cap_wei")),
        holder_cap_wei=_str_or_none(params.get("holder_cap_wei")),
        challenge_window_s=params.get("challenge_window_s"),
        rounds=rounds,
    )


def _campaign_ids(state: StateView, deployment: dict[str, Any] | None) -> list[int]:
    """The pool's campaigns in the database, and the deployment file's own."""
    if deployment is None:
        return []
    ids = set(state.campaign_ids(int(deployment["chain_id"]), deployment["pool"]))
    if deployment.get("campaign_id") is not None:
        ids.add(int(deployment["campaign_id"]))
    return sorted(ids)


def _campaign_or_404(
    campaign_id: int, state: StateView, deployment: dict[str, Any] | None
) -> dict[str, Any]:
    if deployment is None or campaign_id not in _campaign_ids(state, deployment):
        raise HTTPException(status_code=404, detail=f"unknown campaign {campaign_id}")
    return deployment


def campaign_ids_of(state: Any) -> list[int]:
    """The campaigns ``GET /campaigns`` lists, of the app whose ``app.state`` is ``state``."""
    return _campaign_ids(state.state_view, state.state_view.deployment(state.deployment_file)[1])


def _version(state: Any) -> tuple[Any, ...]:
    """What every campaign body is built from: the rounds' artifacts, the database, the
    deployment file."""
    deployment_key, _ = state.state_view.deployment(state.deployment_file)
    return run_version(state.run_dir), state.state_view.version(), deployment_key


def campaigns_plan(state: Any) -> BodyPlan:
    """The ``GET /campaigns`` body."""
    version = _version(state)
    _, deployment = state.state_view.deployment(state.deployment_file)

    def build() -> bytes:
        found: list[CampaignSummary] = []
        if deployment is not None:
            found = [
                _campaign_summary(deployment, cid, len(_campaign_rounds(
                    state.run_dir, state.state_view, deployment, cid, state.round_cache)))
                for cid in _campaign_ids(state.state_view, deployment)
            ]
        return _SUMMARIES.dump_json(found, by_alias=True)

    return ("campaigns",), version, build


def campaign_plan(state: Any, campaign_id: int, rounds_only: bool = False) -> BodyPlan:
    """The ``GET /campaigns/{campaign_id}`` body (``rounds_only``: of its ``/rounds``); its
    build raises HTTPException 404 for an unknown campaign."""
    version = _version(state)
    _, deployment = state.state_view.deployment(state.deployment_file)

    def build() -> bytes:
        found = _campaign_or_404(campaign_id, state.state_view, deployment)
        rounds = _campaign_rounds(state.run_dir, state.state_view, found, campaign_id,
                                  state.round_cache)
        if rounds_only:
            return _ROUNDS.dump_json(rounds, by_alias=True)
        summary = _campaign_summary(found, campaign_id, len(rounds))
        return _DETAIL.dump_json(CampaignDetail(**summary.model_dump(), round_states=rounds),
                                 by_alias=True)

    return ("campaign", campaign_id, rounds_only), version, build


router = APIRouter(tags=["campaigns"])


@router.get("/campaigns", response_model=list[CampaignSummary])
async def campaigns(request: Request) -> Response:
    """The campaigns of the run's pool (``deployment.json`` and the state database)."""
    return await serve_plan(request.app.state, campaigns_plan(request.app.state),
                            accept_encoding=request.headers.get("accept-encoding", ""))


@router.get("/campaigns/{campaign_id}", response_model=CampaignDetail)
async def campaign_detail(campaign_id: int, request: Request) -> Response:
    """A campaign's parameters and its rounds with their status and stages."""
    return await serve_plan(request.app.state, campaign_plan(request.app.state, campaign_id),
                            accept_encoding=request.headers.get("accept-encoding", ""))


@router.get("/campaigns/{campaign_id}/rounds", response_model=list[CampaignRound])
async def campaign_rounds(campaign_id: int, request: Request) -> Response:
    """A campaign's rounds: status, stages, Merkle root, budget (wei), transaction."""
    return await serve_plan(request.app.state,
                            campaign_plan(request.app.state, campaign_id, rounds_only=True),
                            accept_encoding=request.headers.get("accept-encoding", ""))
