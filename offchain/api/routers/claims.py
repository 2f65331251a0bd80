"""``GET /holders/{address}/claims``: everything a wallet needs to claim an address's payouts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Request
from fastapi import Path as PathParam

from offchain.allocation import wei_str
from offchain.api.deps import Rounds, RunDir, chain_view
from offchain.api.registration import InvalidRegistration, check_address
from offchain.api.rounds_view import round_ids
from offchain.api.schemas import Claimable, ClaimedSource, HolderClaims
from offchain.layout import RoundPaths

__all__ = ["router"]

router = APIRouter()


@router.get("/holders/{address}/claims", response_model=HolderClaims)
def holder_claims(
    address: Annotated[str, PathParam(examples=["0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"])],
    run_dir: RunDir,
    cache: Rounds,
    request: Request,
) -> HolderClaims:
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
    view = chain_view(request)
    source: ClaimedSource = "chain" if view is not None else "node"
    found: list[Claimable] = []
    total_wei = 0
    for round_id in round_ids(run_dir):
        rnd = cache.get(RoundPaths(run_dir, round_id))
        for index, amount in rnd.entries.get(account, ()):
            total_wei += amount
            found.append(
                Claimable(
                    round_id=round_id,
                    index=index,
                    account=account,
                    amount_wei=wei_str(amount, "amount_wei"),
                    proof=rnd.proof(index),
                    merkle_root=rnd.merkle_root,
                    claimed=rnd.is_claimed(round_id, index, view),
                    claimed_source=source,
                )
            )
    return HolderClaims(
        address=account,
        total_wei=wei_str(total_wei, "total_wei"),
        claimed_source=source,
        claims=found,
    )
