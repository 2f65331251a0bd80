"""Request dependencies shared by the routers, as ``Annotated`` aliases: a handler's signature
reads as what it needs (``run_dir: RunDir``, ``state: State``, ``jobs: Operator``).

Everything comes from ``app.state``, set once by :func:`offchain.api.app.create_app`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.templating import Jinja2Templates

from offchain.api.chain_claims import ChainClaims
from offchain.api.metrics import ApiMetrics
from offchain.api.operator import JobManager, operator_refusal
from offchain.api.registration import RegistrationLimits
from offchain.api.rounds_view import RoundCache, read_deployment
from offchain.api.state_view import StateView
from offchain.chain.claims_watch import ClaimedView

__all__ = [
    "DeploymentData",
    "HoldersDir",
    "Limits",
    "ManifestRoots",
    "Metrics",
    "Operator",
    "RunDir",
    "Rounds",
    "State",
    "Templates",
    "chain_view",
    "load_deployment_file",
]


def get_run_dir(request: Request) -> Path:
    """The run folder whose rounds are served."""
    return request.app.state.run_dir


def get_round_cache(request: Request) -> RoundCache:
    return request.app.state.round_cache


def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


def get_templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates


def get_state(request: Request) -> StateView:
    return request.app.state.state_view


def load_deployment_file(request: Request) -> dict[str, Any] | None:
    """The parsed deployment file, or None when there is none (or it is not a JSON object)."""
    return read_deployment(request.app.state.deployment_file)


def chain_view(request: Request) -> ClaimedView | None:
    """The chain's claimed leaves (a few seconds old at most), or None without an RPC or when
    the chain does not answer (then ``claimed`` flags come from the node's ``claims.json``)."""
    chain: ChainClaims | None = getattr(request.app.state, "chain_claims", None)
    if chain is None:
        return None
    return chain.view(request.app.state.deployment_file)


def get_holders_dir(request: Request) -> Path:
    """The holders folder; HTTPException 503 when registration is disabled (none given)."""
    holders_dir = request.app.state.holders_dir
    if holders_dir is None:
        raise HTTPException(status_code=503, detail="registration disabled (no holders folder)")
    return holders_dir


def get_registration_limits(request: Request) -> RegistrationLimits:
    return request.app.state.registration_limits


def get_manifest_roots(request: Request) -> tuple[Path, ...]:
    """The folders a manifest may name; HTTPException 503 when none is configured."""
    roots = request.app.state.allowed_manifest_roots
    if not roots:
        raise HTTPException(
            status_code=503, detail="registration from a manifest disabled (no allowed roots)"
        )
    return roots


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <CCOMP_API_TOKEN>")


def require_operator(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> JobManager:
    """The job manager, for a request with the right bearer token (:func:`operator_refusal`).

    ``credentials`` only declares the scheme in the OpenAPI schema; the header is checked here.

    Raises:
        HTTPException: 503 without a configured token, 401 for a missing or wrong one.
    """
    refusal = operator_refusal(request.app.state.operator, request.headers.get("authorization"))
    if refusal is not None:
        raise refusal
    return request.app.state.jobs


RunDir = Annotated[Path, Depends(get_run_dir)]
Rounds = Annotated[RoundCache, Depends(get_round_cache)]
Metrics = Annotated[ApiMetrics, Depends(get_metrics)]
Templates = Annotated[Jinja2Templates, Depends(get_templates)]
State = Annotated[StateView, Depends(get_state)]
DeploymentData = Annotated[dict[str, Any] | None, Depends(load_deployment_file)]
HoldersDir = Annotated[Path, Depends(get_holders_dir)]
Limits = Annotated[RegistrationLimits, Depends(get_registration_limits)]
ManifestRoots = Annotated[tuple[Path, ...], Depends(get_manifest_roots)]
Operator = Annotated[JobManager, Depends(require_operator)]
