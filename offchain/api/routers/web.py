"""``GET /web/config``: what the web app's scripts need to reach the campaign's contracts (the
chain id, the pool and token addresses, the campaign id), from the run folder's
``deployment.json``. The pages' scripts (``offchain/api/web/``, bundled into
``/static/dist/``) read it once on load; the contracts' ABIs are bundled with them
(``offchain/api/web/abi/``, written by ``scripts/export_abi.py``)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from offchain.api.deps import DeploymentData

__all__ = ["WebConfig", "router"]

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


class WebConfig(BaseModel):
    """The deployment as the pages need it (addresses as the deployment file records them,
    EIP-55 checksummed)."""

    chain_id: int
    pool: str
    token: str | None
    native: bool
    """The campaign pays in the chain's native coin (``token`` is the zero address)."""
    campaign_id: int | None
    challenge_window_s: int | None
    claim_window_s: int | None
    claim_deadline: int | None
    """Unix time (seconds, chain clock) from which claims close and sponsors may reclaim."""
    posting_deadline: int | None
    """Unix time (seconds, chain clock) from which no round may be posted nor funds added."""


router = APIRouter(tags=["web"])


@router.get("/web/config", response_model=WebConfig)
def web_config(deployment: DeploymentData) -> WebConfig:
    """The chain, contracts and campaign the web app talks to (404 before a deployment)."""
    if deployment is None:
        raise HTTPException(status_code=404, detail="this node has no deployment yet "
                            "(no deployment.json in its run folder)")
    token = deployment.get("token")
    return WebConfig(
        chain_id=int(deployment["chain_id"]),
        pool=deployment["pool"],
        token=token,
        native=token in (None, ZERO_ADDRESS),
        campaign_id=deployment.get("campaign_id"),
        challenge_window_s=deployment.get("challenge_window_s"),
        claim_window_s=deployment.get("claim_window_s"),
        claim_deadline=deployment.get("claim_deadline"),
        posting_deadline=deployment.get("posting_deadline"),
    )
