"""``GET /holders/{address}/claims``: everything a wallet needs to claim an address's payouts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from offchain.api.claims_cache import ClaimsResponses
from offchain.api.deps import RunDir, chain_view
from offchain.api.registration import InvalidRegistration, check_address
from offchain.api.schemas import HolderClaims

__all__ = ["router"]

router = APIRouter()


@router.get("/holders/{address}/claims", response_model=HolderClaims)
async def holder_claims(
    address: Annotated[str, PathParam(examples=["0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"])],
    run_dir: RunDir,
    request: Request,
) -> Response:
    """Everything a wallet needs to claim: per round and leaf of the address, index, amount
    (wei, a decimal string) and Merkle proof. An address paid through several leaves of a round
    (two holders sharing a payout address) gets one entry per leaf.

    The address is all-lowercase or all-uppercase hex, or EIP-55 checksummed: a mixed-case
    address with a wrong checksum is a 422, as at registration.
    """
    try:
        account = check_address(address)
    except InvalidRegistration as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    responses: ClaimsResponses = request.app.state.claims_responses
    generation = responses.generation(run_dir, chain_view(request))
    body = responses.cached(generation, account)
    if body is None:
        if responses.is_parsed(generation):  # a fraction of a millisecond: on the loop
            body = responses.body(generation, account)
        else:  # a round to parse (tens of ms): off the event loop
            body = await run_in_threadpool(responses.body, generation, account)
    return Response(content=body, media_type="application/json")
