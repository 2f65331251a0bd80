"""Read-only HTTP API over a run folder: rounds, allocations and holders' Merkle proofs.

Amounts are decimal strings of wei (JSON numbers lose precision above 2⁵³ in JavaScript).
The operator endpoints, registration and chain-state views come with the service issue.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from eth_utils import is_address, to_checksum_address
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel

from offchain.allocation import PayoutTree
from offchain.rounds.layout import RoundPaths
from offchain.utils import read_json

__all__ = ["create_app"]


class RoundSummary(BaseModel):
    round_id: int
    status: str
    budget_wei: str
    merkle_root: str | None
    tx_hash: str | None


class HolderPayment(BaseModel):
    index: int
    name: str
    address: str
    participating: bool
    amount_wei: str


class RoundDetail(RoundSummary):
    policy: str
    dataset_root: str
    signature: str | None
    signer: str | None
    holders: list[HolderPayment]


class Claimable(BaseModel):
    round_id: int
    index: int
    account: str
    amount_wei: str
    proof: list[str]
    merkle_root: str
    claimed: bool


class HolderClaims(BaseModel):
    address: str
    total_wei: str
    claims: list[Claimable]


def _round_ids(run_dir: Path) -> list[int]:
    ids = []
    for child in run_dir.glob("round_*"):
        paths = RoundPaths(run_dir, int(child.name.removeprefix("round_")))
        if paths.allocation.exists():
            ids.append(paths.round_id)
    return sorted(ids)


def _status(paths: RoundPaths) -> str:
    if paths.claims.exists():
        return "claimed"
    if paths.submission.exists():
        return "posted"
    if paths.signature.exists():
        return "signed"
    return "allocated"


def _summary(paths: RoundPaths) -> RoundSummary:
    allocation = read_json(paths.allocation)
    submission = read_json(paths.submission) if paths.submission.exists() else {}
    return RoundSummary(
        round_id=paths.round_id,
        status=_status(paths),
        budget_wei=str(allocation["budget_wei"]),
        merkle_root=allocation["merkle_root"],
        tx_hash=submission.get("tx_hash"),
    )


def get_run_dir(request: Request) -> Path:
    return request.app.state.run_dir


RunDir = Annotated[Path, Depends(get_run_dir)]

router = APIRouter()


@router.get("/health")
def health(run_dir: RunDir) -> dict[str, object]:
    return {"status": "ok", "rounds": len(_round_ids(run_dir))}


@router.get("/rounds", response_model=list[RoundSummary])
def rounds(run_dir: RunDir) -> list[RoundSummary]:
    return [_summary(RoundPaths(run_dir, r)) for r in _round_ids(run_dir)]


@router.get("/rounds/{round_id}", response_model=RoundDetail)
def round_detail(round_id: int, run_dir: RunDir) -> RoundDetail:
    if round_id not in _round_ids(run_dir):
        raise HTTPException(status_code=404, detail=f"unknown round {round_id}")
    paths = RoundPaths(run_dir, round_id)
    allocation = read_json(paths.allocation)
    signed = read_json(paths.signature) if paths.signature.exists() else {}
    return RoundDetail(
        **_summary(paths).model_dump(),
        policy=read_json(paths.decision)["policy"],
        dataset_root=read_json(paths.manifest)["dataset_root"],
        signature=signed.get("signature"),
        signer=signed.get("signer"),
        holders=[
            HolderPayment(**{**h, "amount_wei": str(h["amount_wei"])})
            for h in allocation["holders"]
        ],
    )


@router.get("/holders/{address}/claims", response_model=HolderClaims)
def holder_claims(address: str, run_dir: RunDir) -> HolderClaims:
    """Everything a wallet needs to claim: per round, index, amount (wei) and Merkle proof."""
    if not is_address(address):
        raise HTTPException(status_code=422, detail=f"not an Ethereum address: {address!r}")
    account = to_checksum_address(address)
    found: list[Claimable] = []
    for round_id in _round_ids(run_dir):
        paths = RoundPaths(run_dir, round_id)
        allocation = read_json(paths.allocation)
        entry = next((h for h in allocation["holders"] if h["address"] == account), None)
        if entry is None or entry["amount_wei"] == 0:
            continue
        tree = PayoutTree.from_json(read_json(paths.tree))
        claims = read_json(paths.claims)["claims"] if paths.claims.exists() else []
        claimed = any(c["index"] == entry["index"] and c["ok"] for c in claims)
        found.append(
            Claimable(
                round_id=round_id,
                index=entry["index"],
                account=account,
                amount_wei=str(entry["amount_wei"]),
                proof=tree.proof(entry["index"]),
                merkle_root=allocation["merkle_root"],
                claimed=claimed,
            )
        )
    return HolderClaims(
        address=account, total_wei=str(sum(int(c.amount_wei) for c in found)), claims=found
    )


def create_app(run_dir: Path) -> FastAPI:
    """The API over ``run_dir`` (a folder of ``round_NNN/`` artifacts)."""
    app = FastAPI(title="Copyright compensation oracle", version="0.1.0")
    app.state.run_dir = Path(run_dir)
    app.include_router(router)
    return app
