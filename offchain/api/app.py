"""Read-only HTTP API over a run folder: rounds, allocations and holders' Merkle proofs.

Amounts are decimal strings of wei (JSON numbers lose precision above 2⁵³ in JavaScript).
The operator endpoints, registration and chain-state views come with the service issue.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
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


FileKey = tuple[str, int, int] | None
"""``(path, st_mtime_ns, st_size)`` of an artifact, or None when it does not exist."""


def _file_key(path: Path) -> FileKey:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (str(path), st.st_mtime_ns, st.st_size)


@dataclass(frozen=True)
class _RoundIndex:
    """What the proof endpoint needs of one round, parsed once per version of its artifacts.

    Attributes:
        merkle_root: ``allocation.json``'s root.
        entries: For each address, its first holder entry in ``allocation.json``.
        tree: The round's payout tree (None without ``tree.json``).
        proofs: Proof of each payout index in ``tree``.
        claimed: Payout indices with a successful claim in ``claims.json``.
    """

    merkle_root: str | None
    entries: dict[str, dict]
    tree: PayoutTree | None
    proofs: dict[int, list[str]]
    claimed: frozenset[int]

    @classmethod
    def load(cls, paths: RoundPaths, tree_exists: bool, claims_exist: bool) -> _RoundIndex:
        allocation = read_json(paths.allocation)
        entries: dict[str, dict] = {}
        for holder in allocation["holders"]:
            entries.setdefault(holder["address"], holder)
        tree = PayoutTree.from_json(read_json(paths.tree)) if tree_exists else None
        proofs = {index: tree.proof(index) for index, _, _ in tree.entries} if tree else {}
        claims = read_json(paths.claims)["claims"] if claims_exist else []
        return cls(
            merkle_root=allocation["merkle_root"],
            entries=entries,
            tree=tree,
            proofs=proofs,
            claimed=frozenset(c["index"] for c in claims if c["ok"]),
        )

    def proof(self, index: int) -> list[str]:
        if index in self.proofs:
            return self.proofs[index]
        if self.tree is None:  # as before the cache: a paid holder needs the round's tree
            raise FileNotFoundError(f"no tree.json for payout index {index}")
        return self.tree.proof(index)  # raises AllocationError for an index not in the tree


class RoundCache:
    """Parsed round artifacts, keyed by each file's ``(path, mtime_ns, size)``.

    Artifacts are written atomically (a new file replaces the old one), so a changed key means a
    new version: a new or rewritten round is picked up on the next request, and an unchanged one
    costs three ``stat`` calls instead of parsing JSON and rebuilding its Merkle tree.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rounds: dict[Path, tuple[tuple[FileKey, ...], _RoundIndex]] = {}

    def get(self, paths: RoundPaths) -> _RoundIndex:
        key = (_file_key(paths.allocation), _file_key(paths.tree), _file_key(paths.claims))
        cached = self._rounds.get(paths.dir)
        if cached is not None and cached[0] == key:
            return cached[1]
        with self._lock:  # one thread parses; the others wait for its result, not redo it
            cached = self._rounds.get(paths.dir)
            if cached is not None and cached[0] == key:
                return cached[1]
            index = _RoundIndex.load(paths, key[1] is not None, key[2] is not None)
            self._rounds[paths.dir] = (key, index)
        return index


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


def get_round_cache(request: Request) -> RoundCache:
    return request.app.state.round_cache


RunDir = Annotated[Path, Depends(get_run_dir)]
Rounds = Annotated[RoundCache, Depends(get_round_cache)]

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
def holder_claims(address: str, run_dir: RunDir, cache: Rounds) -> HolderClaims:
    """Everything a wallet needs to claim: per round, index, amount (wei) and Merkle proof."""
    if not is_address(address):
        raise HTTPException(status_code=422, detail=f"not an Ethereum address: {address!r}")
    account = to_checksum_address(address)
    found: list[Claimable] = []
    for round_id in _round_ids(run_dir):
        rnd = cache.get(RoundPaths(run_dir, round_id))
        entry = rnd.entries.get(account)
        if entry is None or entry["amount_wei"] == 0:
            continue
        found.append(
            Claimable(
                round_id=round_id,
                index=entry["index"],
                account=account,
                amount_wei=str(entry["amount_wei"]),
                proof=rnd.proof(entry["index"]),
                merkle_root=rnd.merkle_root,
                claimed=entry["index"] in rnd.claimed,
            )
        )
    return HolderClaims(
        address=account, total_wei=str(sum(int(c.amount_wei) for c in found)), claims=found
    )


def create_app(run_dir: Path) -> FastAPI:
    """The API over ``run_dir`` (a folder of ``round_NNN/`` artifacts)."""
    app = FastAPI(title="Copyright compensation oracle", version="0.1.0")
    app.state.run_dir = Path(run_dir)
    app.state.round_cache = RoundCache()
    app.include_router(router)
    return app
