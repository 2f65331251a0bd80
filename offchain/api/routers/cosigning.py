"""Co-signing: ``GET /rounds/{round_id}/signing-request`` (what the oracle signers sign) and
``POST /rounds/{round_id}/signatures``, authenticated by the signature itself: it must recover to
one of the campaign's signers over the round's signing request."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse

from offchain.allocation import RoundAllocation
from offchain.api.deps import DeploymentData, RunDir, State
from offchain.api.schemas import SignatureIn, SignatureOut
from offchain.errors import StageError
from offchain.layout import RoundPaths
from offchain.oracle.chain_stages import verified_signer
from offchain.oracle.signing import SigningError, recover_round_signer
from offchain.utils import read_json

__all__ = ["router"]

_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")

router = APIRouter(tags=["co-signing"])


def _signing_paths(run_dir: Path, round_id: int) -> RoundPaths:
    paths = RoundPaths(run_dir, round_id)
    if round_id < 1 or not paths.signing_request.is_file():
        raise HTTPException(
            status_code=404, detail=f"round {round_id} has no signing request (yet)"
        )
    return paths


@router.get("/rounds/{round_id}/signing-request")
def signing_request(round_id: int, run_dir: RunDir) -> dict[str, Any]:
    """What every oracle signer signs: chain id, verifying contract, the ``RoundAllocation``
    (EIP-712; every uint256 a decimal string, also for a file written before that rule) and
    its digest."""
    request = read_json(_signing_paths(run_dir, round_id).signing_request)
    try:
        allocation = RoundAllocation.from_json(request["allocation"])
    except SigningError as exc:  # a corrupt file: say so rather than serve it
        raise HTTPException(status_code=500, detail=f"round {round_id}: {exc}") from exc
    return {**request, "allocation": allocation.to_json()}


def _campaign_signer(
    paths: RoundPaths,
    request: dict[str, Any],
    allocation: RoundAllocation,
    signature: str,
    signers: list[str],
) -> str:
    """The campaign signer ``signature`` recovers to over the round's signing request
    (``request``, its ``allocation`` parsed).

    Raises:
        HTTPException: 422 for an unrecoverable signature, 403 for one by another address.
    """
    try:
        recover_round_signer(
            signature, request["chain_id"], request["verifying_contract"], allocation
        )
    except SigningError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    try:
        return verified_signer(paths, signature, signers)
    except SigningError as exc:
        raise HTTPException(
            status_code=403,
            detail=f"{exc} (a signature over another allocation recovers to another address)",
        ) from exc


def _count_valid(paths: RoundPaths, signatures: list[str], signers: list[str]) -> int:
    """How many of ``signatures`` recover to a campaign signer over the signing request."""
    collected = 0
    for sig in signatures:
        try:
            verified_signer(paths, sig, signers)
            collected += 1
        except SigningError:
            pass
    return collected


@router.post(
    "/rounds/{round_id}/signatures",
    status_code=201,
    response_model=SignatureOut,
    responses={200: {"model": SignatureOut, "description": "already stored"}},
)
def post_signature(
    round_id: int, body: SignatureIn, run_dir: RunDir, state: State, deployment: DeploymentData
) -> Any:
    """A co-signer's signature of the round's signing request; authenticated by the signature
    itself (it must recover to one of the campaign's signers)."""
    paths = _signing_paths(run_dir, round_id)
    if not _SIGNATURE.fullmatch(body.signature):
        raise HTTPException(status_code=422, detail="signature must be 0x + 65 bytes hex")
    request = read_json(paths.signing_request)
    allocation = RoundAllocation.from_json(request["allocation"])
    signers = list((deployment or {}).get("signers") or [])
    signer = _campaign_signer(paths, request, allocation, body.signature, signers)
    store = state.store()
    round_pk = store.ensure_round(
        store.ensure_campaign(
            int(request["chain_id"]),
            request["verifying_contract"],
            allocation.campaign_id,
            str(run_dir),
        ),
        round_id,
    )
    digest = request["digest"]
    try:
        stored = store.add_signature(round_pk, signer, digest, body.signature)
    except StageError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    out = SignatureOut(
        round_id=round_id,
        signer=signer,
        digest=digest,
        stored=stored,
        collected=_count_valid(paths, list(store.signatures(round_pk, digest).values()), signers),
        threshold=(deployment or {}).get("threshold"),
    )
    return JSONResponse(out.model_dump(), status_code=201 if stored else 200)
