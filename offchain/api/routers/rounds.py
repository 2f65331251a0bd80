"""``GET /rounds`` and ``GET /rounds/{round_id}``: the run folder's rounds, and one round with its
signatures and each holder's payment."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from offchain.allocation import parse_wei, wei_str
from offchain.api.deps import DeploymentData, Rounds, RunDir, State, chain_view
from offchain.api.rounds_view import round_ids, round_summary
from offchain.api.schemas import HolderPayment, RoundDetail, RoundSignature, RoundSummary
from offchain.layout import RoundPaths
from offchain.utils import read_json

__all__ = ["router"]

router = APIRouter()


@router.get("/rounds", response_model=list[RoundSummary])
def rounds(run_dir: RunDir) -> list[RoundSummary]:
    return [round_summary(RoundPaths(run_dir, r)) for r in round_ids(run_dir)]


def _signature_pairs(signed: dict) -> list[tuple[str, str]]:
    """``(signer, signature)`` of a round's ``signature.json`` (empty before signing)."""
    if "signatures" in signed:  # k-of-n: parallel lists, ascending signer
        return list(zip(signed.get("signers") or [], signed["signatures"], strict=False))
    if signed.get("signature"):  # single-signer rounds written before k-of-n
        return [(signed.get("signer") or "", signed["signature"])]
    return []


def _credits(paths: RoundPaths) -> dict[int, tuple[str | None, str | None]]:
    """Holder index → (licence, attribution) from the round's ``manifest.json`` (None where
    not stated, or for a round folder without a manifest or holder entries)."""
    if not paths.manifest.exists():
        return {}
    entries = read_json(paths.manifest).get("holders") or []
    return {
        int(h["index"]): (h.get("licence"), h.get("attribution"))
        for h in entries
        if isinstance(h, dict) and "index" in h
    }


@router.get("/rounds/{round_id}", response_model=RoundDetail)
def round_detail(
    round_id: int,
    run_dir: RunDir,
    request: Request,
    cache: Rounds,
    state: State,
    deployment: DeploymentData,
) -> RoundDetail:
    """A round: budget, Merkle root, provenance, the k-of-n signatures and threshold, and each
    holder's payment (wei) with whether it is claimed (see ``claimed_source``) and the licence
    and attribution of its works (where stated)."""
    if round_id not in round_ids(run_dir):
        raise HTTPException(status_code=404, detail=f"unknown round {round_id}")
    paths = RoundPaths(run_dir, round_id)
    allocation = read_json(paths.allocation)
    signed = read_json(paths.signature) if paths.signature.exists() else {}
    db = state.deployed_round(deployment, round_id)
    rnd = cache.get(paths)
    view = chain_view(request)
    credits = _credits(paths)
    holders = []
    for h in allocation["holders"]:
        amount = parse_wei(h["amount_wei"], "amount_wei")
        index = int(h["index"])
        licence, attribution = credits.get(index, (None, None))
        holders.append(HolderPayment(
            index=index, name=h["name"], address=h["address"], participating=h["participating"],
            amount_wei=wei_str(amount, "amount_wei"),
            claimed=None if amount == 0 else rnd.is_claimed(round_id, index, view),
            licence=licence, attribution=attribution,
        ))
    return RoundDetail(
        **round_summary(paths).model_dump(),
        round_status=db.status if db else None,
        provenance=allocation.get("provenance"),
        policy=read_json(paths.decision)["policy"],
        digest=signed.get("digest"),
        signatures=[RoundSignature(signer=a, signature=sig) for a, sig in _signature_pairs(signed)],
        threshold=(deployment or {}).get("threshold"),
        claimed_source="chain" if view is not None else "node",
        holders=holders,
    )
