"""Campaign status: ``GET /campaigns``, ``GET /campaigns/{campaign_id}`` and its ``/rounds``.

The run folder's ``deployment.json`` joined with the round-state database, read only (a GET never
creates or migrates the database; without one, statuses come from the round artifacts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException

from offchain.api.deps import DeploymentData, RunDir, State
from offchain.api.rounds_view import artifact_status, round_ids
from offchain.api.schemas import CampaignDetail, CampaignRound, CampaignSummary
from offchain.api.state_view import StateView
from offchain.layout import RoundPaths
from offchain.rounds.pipeline import STAGE_KEYS
from offchain.utils import read_json

__all__ = ["router"]


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _campaign_rounds(
    run_dir: Path, state: StateView, deployment: dict[str, Any], campaign_id: int
) -> list[CampaignRound]:
    """The campaign's rounds: those the database knows, and for the deployment file's own
    campaign also those of the run folder (status from the artifacts when the database has no
    row)."""
    db = state.rounds(int(deployment["chain_id"]), deployment["pool"], campaign_id)
    own = campaign_id == deployment.get("campaign_id")  # the run folder's rounds are its
    ids = set(db or {}) | (set(round_ids(run_dir)) if own else set())
    out = []
    for round_id in sorted(ids):
        paths = RoundPaths(run_dir, round_id)
        allocation = read_json(paths.allocation) if own and paths.allocation.exists() else {}
        submission = read_json(paths.submission) if own and paths.submission.exists() else {}
        row = (db or {}).get(round_id)
        out.append(
            CampaignRound(
                round_id=round_id,
                status=row.status if row else artifact_status(paths),
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


router = APIRouter(tags=["campaigns"])


@router.get("/campaigns", response_model=list[CampaignSummary])
def campaigns(run_dir: RunDir, state: State, deployment: DeploymentData) -> list[CampaignSummary]:
    """The campaigns of the run's pool (``deployment.json`` and the state database)."""
    if deployment is None:
        return []
    return [
        _campaign_summary(deployment, cid, len(_campaign_rounds(run_dir, state, deployment, cid)))
        for cid in _campaign_ids(state, deployment)
    ]


@router.get("/campaigns/{campaign_id}", response_model=CampaignDetail)
def campaign_detail(
    campaign_id: int, run_dir: RunDir, state: State, deployment: DeploymentData
) -> CampaignDetail:
    """A campaign's parameters and its rounds with their status and stages."""
    deployment = _campaign_or_404(campaign_id, state, deployment)
    rounds = _campaign_rounds(run_dir, state, deployment, campaign_id)
    summary = _campaign_summary(deployment, campaign_id, len(rounds))
    return CampaignDetail(**summary.model_dump(), round_states=rounds)


@router.get("/campaigns/{campaign_id}/rounds", response_model=list[CampaignRound])
def campaign_rounds(
    campaign_id: int, run_dir: RunDir, state: State, deployment: DeploymentData
) -> list[CampaignRound]:
    """A campaign's rounds: status, stages, Merkle root, budget (wei), transaction."""
    deployment = _campaign_or_404(campaign_id, state, deployment)
    return _campaign_rounds(run_dir, state, deployment, campaign_id)
