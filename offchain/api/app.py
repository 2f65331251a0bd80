"""Read-only HTTP API over a run folder: rounds, allocations and holders' Merkle proofs.

Amounts are decimal strings of wei (JSON numbers lose precision above 2⁵³ in JavaScript).
Holder registration (``POST /holders``, ``POST /holders/manifest``, ``GET /holders``) writes
into a holders folder when :func:`create_app` is given one (domain logic in :mod:`offchain.api.registration`). Campaign
status, co-signing and the operator endpoints (bearer token) are in :mod:`offchain.api.operator`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from eth_utils import to_checksum_address
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser

from offchain.allocation import PayoutTree, parse_wei, wei_str
from offchain.api.guard import DEFAULT_BODY_LIMIT, BodyGuardMiddleware, BodyRule
from offchain.api.metrics import ApiMetrics, MetricsMiddleware
from offchain.api.operator import (
    OPERATOR_PREFIX,
    OperatorConfig,
    configure,
    load_deployment_file,
    operator_refusal,
    round_db_state,
    routers,
)
from offchain.api.registration import (
    AlreadyRegistered,
    DemoKeyRefused,
    InvalidRegistration,
    RegisteredHolder,
    Registration,
    RegistrationError,
    RegistrationLimits,
    SignatureRejected,
    SourceNotAllowed,
    UploadTooLarge,
    count_registered,
    list_registered,
    recover_holders_dir,
    register_from_manifest,
    register_holder,
)
from offchain.api.registration import _check_address as check_address
from offchain.chain.claims_watch import ClaimedView, ClaimsWatch
from offchain.errors import ConfigError, DataError
from offchain.jsonsafe import pin_recursion_limit
from offchain.layout import RoundPaths
from offchain.utils import read_json

__all__ = ["create_app"]


class RoundSummary(BaseModel):
    round_id: int
    status: str
    budget_wei: str
    merkle_root: str | None
    tx_hash: str | None


ClaimedSource = Literal["chain", "node"]
"""Where a ``claimed`` flag comes from: ``chain`` (the pool's ``Claimed`` events, whoever sent
the claim; at most a few seconds old) or ``node`` (only the claims this node relayed, its
``claims.json``: the API has no RPC, or the chain did not answer)."""


class HolderPayment(BaseModel):
    index: int
    name: str
    address: str
    participating: bool
    amount_wei: str
    claimed: bool | None
    """None for a holder paid 0 wei (no leaf to claim)."""


class RoundSignature(BaseModel):
    signer: str
    signature: str


class RoundDetail(RoundSummary):
    round_status: str | None
    """pending / submitted / challengeable / finalized / revoked from the state database; None
    without a database (or a round it does not know)."""
    provenance: dict[str, str] | None
    """``checkpoint_hash``, ``dataset_root``, ``attribution_hash`` of ``allocation.json``."""
    policy: str
    digest: str | None
    """The EIP-712 digest the oracle signers signed (``signature.json``), None before signing."""
    signatures: list[RoundSignature]
    """The k-of-n signatures ``postRound`` was sent with, ascending signer address."""
    threshold: int | None
    """Signatures the campaign requires (deployment file), None without one."""
    claimed_source: ClaimedSource
    holders: list[HolderPayment]


class Claimable(BaseModel):
    round_id: int
    index: int
    account: str
    amount_wei: str
    proof: list[str]
    merkle_root: str
    claimed: bool
    claimed_source: ClaimedSource


class HolderClaims(BaseModel):
    address: str
    total_wei: str
    """Sum of ``amount_wei`` over ``claims`` (claimed or not)."""
    claimed_source: ClaimedSource
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
        entries: For each checksummed address, every payout ``(index, amount_wei)`` of it with
            a positive amount in ``allocation.json``, in index order (two holders may share a
            payout address: each has its own leaf).
        tree: The round's payout tree (None without ``tree.json``).
        proofs: Proof of each payout index in ``tree``.
        claimed: Payout indices with a successful claim in ``claims.json``.
    """

    merkle_root: str | None
    entries: dict[str, tuple[tuple[int, int], ...]]
    tree: PayoutTree | None
    proofs: dict[int, list[str]]
    claimed: frozenset[int]

    @classmethod
    def load(cls, paths: RoundPaths, tree_exists: bool, claims_exist: bool) -> _RoundIndex:
        allocation = read_json(paths.allocation)
        entries: dict[str, list[tuple[int, int]]] = {}
        for holder in allocation["holders"]:
            amount = parse_wei(holder["amount_wei"], "amount_wei")
            if amount > 0:
                account = to_checksum_address(holder["address"])
                entries.setdefault(account, []).append((int(holder["index"]), amount))
        tree = PayoutTree.from_json(read_json(paths.tree)) if tree_exists else None
        proofs = {index: tree.proof(index) for index, _, _ in tree.entries} if tree else {}
        claims = read_json(paths.claims)["claims"] if claims_exist else []
        return cls(
            merkle_root=allocation["merkle_root"],
            entries={a: tuple(sorted(leaves)) for a, leaves in entries.items()},
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
        suffix = child.name.removeprefix("round_")
        if not (suffix.isascii() and suffix.isdigit()):  # e.g. a stray round_001.bak: skip it
            continue
        paths = RoundPaths(run_dir, int(suffix))
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
        budget_wei=wei_str(parse_wei(allocation["budget_wei"], "budget_wei"), "budget_wei"),
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


def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


Metrics = Annotated[ApiMetrics, Depends(get_metrics)]


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(m: Metrics) -> Response:
    """Prometheus text format: ``api_requests_total`` and ``api_request_duration_seconds`` by
    method, route template and status; gauges ``api_rounds_served``, ``api_registered_holders``."""
    return Response(content=m.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/rounds", response_model=list[RoundSummary])
def rounds(run_dir: RunDir) -> list[RoundSummary]:
    return [_summary(RoundPaths(run_dir, r)) for r in _round_ids(run_dir)]


@router.get("/rounds/{round_id}", response_model=RoundDetail)
def round_detail(round_id: int, run_dir: RunDir, request: Request, cache: Rounds) -> RoundDetail:
    """A round: budget, Merkle root, provenance, the k-of-n signatures and threshold, and each
    holder's payment (wei) with whether it is claimed (see ``claimed_source``)."""
    if round_id not in _round_ids(run_dir):
        raise HTTPException(status_code=404, detail=f"unknown round {round_id}")
    paths = RoundPaths(run_dir, round_id)
    allocation = read_json(paths.allocation)
    signed = read_json(paths.signature) if paths.signature.exists() else {}
    if "signatures" in signed:  # k-of-n: parallel lists, ascending signer
        pairs = list(zip(signed.get("signers") or [], signed["signatures"], strict=False))
    elif signed.get("signature"):  # single-signer rounds written before k-of-n
        pairs = [(signed.get("signer") or "", signed["signature"])]
    else:
        pairs = []
    deployment = load_deployment_file(request) or {}
    db = round_db_state(request, round_id)
    rnd = cache.get(paths)
    view = _chain_view(request)
    holders = []
    for h in allocation["holders"]:
        amount = parse_wei(h["amount_wei"], "amount_wei")
        index = int(h["index"])
        holders.append(HolderPayment(
            index=index, name=h["name"], address=h["address"], participating=h["participating"],
            amount_wei=wei_str(amount, "amount_wei"),
            claimed=None if amount == 0 else _is_claimed(view, rnd, round_id, index),
        ))
    return RoundDetail(
        **_summary(paths).model_dump(),
        round_status=db.status if db else None,
        provenance=allocation.get("provenance"),
        policy=read_json(paths.decision)["policy"],
        digest=signed.get("digest"),
        signatures=[RoundSignature(signer=a, signature=sig) for a, sig in pairs],
        threshold=deployment.get("threshold"),
        claimed_source="chain" if view is not None else "node",
        holders=holders,
    )


def _chain_view(request: Request) -> ClaimedView | None:
    """The chain's claimed leaves (a few seconds old at most), or None without an RPC or when
    the chain does not answer."""
    chain: ChainClaims | None = getattr(request.app.state, "chain_claims", None)
    if chain is None:
        return None
    return chain.view(request.app.state.deployment_file)


def _is_claimed(view: ClaimedView | None, rnd: _RoundIndex, round_id: int, index: int) -> bool:
    return view.is_claimed(round_id, index) if view is not None else index in rnd.claimed


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
    view = _chain_view(request)
    found: list[Claimable] = []
    total_wei = 0
    for round_id in _round_ids(run_dir):
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
                    claimed=_is_claimed(view, rnd, round_id, index),
                    claimed_source="chain" if view is not None else "node",
                )
            )
    return HolderClaims(
        address=account,
        total_wei=wei_str(total_wei, "total_wei"),
        claimed_source="chain" if view is not None else "node",
        claims=found,
    )


class ChainClaims:
    """The claims the chain knows of, for the deployment file's campaign.

    A :class:`~offchain.chain.claims_watch.ClaimsWatch` of the deployment file's pool and
    campaign, made on first use and again when the file names another pool or campaign.
    Requests read its cached set (no chain call per request); it refreshes in the background
    at most every ``refresh_s`` seconds.
    """

    def __init__(self, rpc_url: str, *, refresh_s: float = 2.0, max_age_s: float = 30.0,
                 pool_abi: Sequence[dict] | None = None) -> None:
        self.rpc_url = rpc_url
        self.refresh_s = refresh_s
        self.max_age_s = max_age_s
        self.pool_abi = pool_abi
        self._lock = threading.Lock()
        self._file: FileKey = None
        self._target: tuple[str, int, int | None] | None = None
        self._watch: ClaimsWatch | None = None

    def watch(self, deployment_file: Path) -> ClaimsWatch | None:
        """The watch of the campaign ``deployment_file`` names (None: no campaign there)."""
        key = _file_key(deployment_file)
        if key == self._file:
            return self._watch
        with self._lock:
            if key != self._file:
                target = None
                try:
                    data = read_json(deployment_file) if key is not None else {}
                    if data.get("pool") and data.get("campaign_id") is not None:
                        chain_id = data.get("chain_id")
                        target = (str(data["pool"]), int(data["campaign_id"]),
                                  None if chain_id is None else int(chain_id))
                except (OSError, ValueError, TypeError, AttributeError):
                    target = None
                if target != self._target:
                    self._watch = None if target is None else ClaimsWatch(
                        self.rpc_url, target[0], target[1], pool_abi=self.pool_abi,
                        refresh_s=self.refresh_s, max_age_s=self.max_age_s, chain_id=target[2],
                    )
                    self._target = target
                self._file = key
        return self._watch

    def view(self, deployment_file: Path) -> ClaimedView | None:
        watch = self.watch(deployment_file)
        return None if watch is None else watch.snapshot()


# ---------------------------------------------------------------------------------------------
# Holder registration
# ---------------------------------------------------------------------------------------------


class RegisteredHolderOut(BaseModel):
    """A holder in the public listing; its reservation price stays private (not listed)."""

    address: str
    name: str
    n_images: int


class RegistrationOut(RegisteredHolderOut):
    """The answer to the holder's own registration (which states its price)."""

    reservation_price_wei: str
    image_sha256: list[str]
    images_root: str

    @classmethod
    def of(cls, stored: RegisteredHolder) -> RegistrationOut:
        """The answer to a registration that was stored."""
        return cls(
            address=stored.address,
            name=stored.name,
            reservation_price_wei=str(stored.reservation_price_wei),
            n_images=stored.n_images,
            image_sha256=list(stored.image_sha256),
            images_root=stored.images_root or "",
        )


_REGISTRATION_FIELDS = frozenset(
    {"address", "name", "reservation_price_wei", "signature", "issued_at", "replace"}
)
_MULTIPART_OVERHEAD = 64 * 1024
"""Bytes of field values and part headers allowed on top of ``max_total_bytes``."""


def get_holders_dir(request: Request) -> Path:
    holders_dir = request.app.state.holders_dir
    if holders_dir is None:
        raise HTTPException(status_code=503, detail="registration disabled (no holders folder)")
    return holders_dir


def get_registration_limits(request: Request) -> RegistrationLimits:
    return request.app.state.registration_limits


HoldersDir = Annotated[Path, Depends(get_holders_dir)]
Limits = Annotated[RegistrationLimits, Depends(get_registration_limits)]

_STATUS: tuple[tuple[type[RegistrationError], int], ...] = (
    (UploadTooLarge, 413),
    (AlreadyRegistered, 409),
    (SignatureRejected, 403),
    (DemoKeyRefused, 403),
    (SourceNotAllowed, 403),
    (InvalidRegistration, 422),
)


def _http_error(exc: RegistrationError) -> HTTPException:
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 400)
    return HTTPException(status_code=status, detail=str(exc))


async def _read_form(request: Request, limits: RegistrationLimits) -> list[tuple[str, object]]:
    """Parse the multipart body as it arrives (:class:`BodyGuardMiddleware` counts it: past
    :func:`_body_rule`'s limit → 413)."""
    content_type = request.headers.get("content-type", "")
    multipart = content_type.startswith("multipart/form-data")
    if not multipart and not content_type.startswith("application/x-www-form-urlencoded"):
        raise HTTPException(status_code=415, detail="expected multipart/form-data")
    parser: MultiPartParser | FormParser = (
        MultiPartParser(
            request.headers,
            request.stream(),
            max_files=limits.max_images,
            max_fields=len(_REGISTRATION_FIELDS),
        )
        if multipart  # a form without files comes urlencoded (it then has no images)
        else FormParser(request.headers, request.stream())
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if str(exc).startswith("Too many files"):
            raise InvalidRegistration(
                f"too many images: more than max_images {limits.max_images}"
            ) from exc
        raise HTTPException(status_code=400, detail=f"malformed multipart body: {exc}") from exc
    return list(form.multi_items())


async def _read_upload(upload: UploadFile, limits: RegistrationLimits) -> bytes:
    data = await upload.read(limits.max_image_bytes + 1)
    if len(data) > limits.max_image_bytes:
        raise UploadTooLarge(
            f"image {upload.filename!r} is over max_image_bytes {limits.max_image_bytes}"
        )
    return data


registration_router = APIRouter(tags=["registration"])


_REGISTRATION_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "address": {"type": "string", "description": "0x + 40 hex (EIP-55 or lower)"},
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
                    "reservation_price_wei": {"type": "string", "pattern": "^[0-9]{1,78}$"},
                    "signature": {"type": "string", "description": "0x + 65 bytes hex"},
                    "issued_at": {"type": "string", "pattern": "^[0-9]{1,19}$"},
                    "replace": {"type": "string", "enum": ["true", "false"]},
                    "images": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "PNG or JPEG files, one part per image",
                    },
                },
                "required": [
                    "address",
                    "name",
                    "reservation_price_wei",
                    "signature",
                    "issued_at",
                    "images",
                ],
            }
        }
    },
}
"""``POST /holders``'s body in the OpenAPI schema (the handler parses the stream itself)."""


@registration_router.post(
    "/holders",
    status_code=201,
    response_model=RegistrationOut,
    openapi_extra={"requestBody": _REGISTRATION_BODY},
)
async def register(request: Request, holders_dir: HoldersDir, limits: Limits) -> RegistrationOut:
    """Register a holder: multipart fields ``address``, ``name``, ``reservation_price_wei``,
    ``signature``, ``issued_at`` (optional ``replace=true``) and files ``images`` (see
    docs/api.md, "Holder registration")."""
    uploads: list[UploadFile] = []
    try:
        items = await _read_form(request, limits)
        fields: dict[str, str] = {}
        for key, value in items:
            if isinstance(value, UploadFile):
                if key not in ("images", "images[]"):
                    raise InvalidRegistration(
                        f"unexpected file field {key!r}; send files as images"
                    )
                uploads.append(value)
            elif key not in _REGISTRATION_FIELDS:
                raise InvalidRegistration(
                    f"unknown field {key!r}; expected {sorted(_REGISTRATION_FIELDS)}"
                )
            else:
                fields[key] = value  # type: ignore[assignment]
        missing = sorted(_REGISTRATION_FIELDS - {"replace"} - set(fields))
        if missing:
            raise InvalidRegistration(f"missing fields {missing}")
        images = [
            (u.filename or f"images[{i}]", await _read_upload(u, limits))
            for i, u in enumerate(uploads)
        ]
        registration = Registration(
            address=fields["address"],
            name=fields["name"],
            reservation_price_wei=fields["reservation_price_wei"],
            signature=fields["signature"],
            issued_at=fields["issued_at"],
        )
        replace = fields.get("replace", "false").lower() in ("1", "true", "yes")
        stored = await run_in_threadpool(
            register_holder, holders_dir, registration, images, limits, allow_replace=replace
        )
    except RegistrationError as exc:
        raise _http_error(exc) from exc
    finally:
        for upload in uploads:
            await upload.close()
    return RegistrationOut.of(stored)


class ManifestRegistrationIn(BaseModel):
    """``POST /holders/manifest``'s JSON body: the signed fields of an upload, the images'
    SHA-256 hashes and the server-side folder holding them."""

    model_config = ConfigDict(extra="forbid")

    address: str
    name: str
    reservation_price_wei: str
    """Decimal string of wei."""
    issued_at: int | str
    """Unix seconds (the signed ``issued_at``)."""
    signature: str
    image_sha256: list[str]
    """Hex SHA-256 of each image file (64 hex digits)."""
    source_dir: str
    """Absolute path, on the server's machine, inside an allowed root."""
    replace: bool = False


def get_manifest_roots(request: Request) -> tuple[Path, ...]:
    roots = request.app.state.allowed_manifest_roots
    if not roots:
        raise HTTPException(
            status_code=503, detail="registration from a manifest disabled (no allowed roots)"
        )
    return roots


ManifestRoots = Annotated[tuple[Path, ...], Depends(get_manifest_roots)]


@registration_router.post(
    "/holders/manifest",
    status_code=201,
    response_model=RegistrationOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ManifestRegistrationIn.model_json_schema()}},
        }
    },
)
async def register_manifest(
    request: Request, holders_dir: HoldersDir, roots: ManifestRoots, limits: Limits
) -> RegistrationOut:
    """Register a holder from files on the server: JSON body :class:`ManifestRegistrationIn`;
    the folder's image files must be exactly the manifest set (see
    :func:`offchain.api.registration.register_from_manifest`)."""
    try:
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise HTTPException(status_code=415, detail="expected application/json")
        body = await request.body()  # bounded and depth-checked by BodyGuardMiddleware
        try:
            payload = ManifestRegistrationIn.model_validate_json(body)
        except ValidationError as exc:
            raise RequestValidationError(
                exc.errors(include_url=False, include_input=False, include_context=False)
            ) from exc
        registration = Registration(
            address=payload.address,
            name=payload.name,
            reservation_price_wei=payload.reservation_price_wei,
            signature=payload.signature,
            issued_at=payload.issued_at,
        )
        stored = await run_in_threadpool(
            register_from_manifest,
            holders_dir,
            registration,
            payload.image_sha256,
            Path(payload.source_dir),
            roots,
            limits,
            allow_replace=payload.replace,
        )
    except RegistrationError as exc:
        raise _http_error(exc) from exc
    return RegistrationOut.of(stored)


@registration_router.get("/holders", response_model=list[RegisteredHolderOut])
def registered_holders(holders_dir: HoldersDir) -> list[RegisteredHolderOut]:
    """The holders in the holders folder: address, name and image count. Reservation prices
    stay private (only the registration's own answer states its price); a folder with an
    unreadable ``holder.json`` is skipped (logged)."""
    return [
        RegisteredHolderOut(address=h.address, name=h.name, n_images=h.n_images)
        for h in list_registered(holders_dir)
    ]


def _body_rule(scope: dict) -> BodyRule:
    """The body limit of a request: a registration upload streams up to ``max_total_bytes``
    plus the fields, a manifest holds up to ``max_images`` hashes, the rest 64 KiB."""
    if scope["method"] == "POST" and scope["path"] in ("/holders", "/holders/manifest"):
        limits: RegistrationLimits = scope["app"].state.registration_limits
        if scope["path"] == "/holders":
            return BodyRule(
                limits.max_total_bytes + _MULTIPART_OVERHEAD,
                f"max_total_bytes {limits.max_total_bytes} (+{_MULTIPART_OVERHEAD} bytes of "
                "fields)",
                stream=True,
            )
        limit = 128 * limits.max_images + _MULTIPART_OVERHEAD
        return BodyRule(limit, f"{limit} bytes for a manifest of max_images {limits.max_images}")
    return BodyRule(DEFAULT_BODY_LIMIT, f"{DEFAULT_BODY_LIMIT} bytes for {scope['path']}")


def _authenticate(scope: dict) -> HTTPException | None:
    """The operator routes' bearer-token refusal, checked before their bodies are read."""
    path: str = scope["path"]
    if path != OPERATOR_PREFIX and not path.startswith(OPERATOR_PREFIX + "/"):
        return None
    headers = dict(scope.get("headers", ()))
    authorization = headers.get(b"authorization", b"").decode("latin-1") or None
    return operator_refusal(scope["app"].state.operator, authorization)


def _prepare_holders_dir(holders_dir: Path) -> None:
    """Start-up check of the holders folder and :func:`recover_holders_dir`.

    Raises:
        ConfigError: it exists and is not a folder, or recovery fails (named in the message).
    """
    if holders_dir.exists() and not holders_dir.is_dir():
        raise ConfigError(f"--holders-dir {holders_dir} exists and is not a folder")
    try:
        recover_holders_dir(holders_dir)
    except (OSError, DataError) as exc:
        raise ConfigError(f"--holders-dir {holders_dir}: recovery failed ({exc})") from exc


def _check_roots(roots: Sequence[Path]) -> tuple[Path, ...]:
    """The manifest roots as given, after checking each resolves (ConfigError otherwise)."""
    for root in roots:
        try:
            Path(root).resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # a NUL byte, a symlink loop
            raise ConfigError(
                f"--manifest-root {str(root)!r} is not a usable path ({exc})"
            ) from exc
    return tuple(Path(r) for r in roots)


def create_app(
    run_dir: Path,
    holders_dir: Path | None = None,
    registration_limits: RegistrationLimits | None = None,
    allowed_manifest_roots: Sequence[Path] = (),
    *,
    state_url: str | None = None,
    deployment_file: Path | None = None,
    operator: OperatorConfig | None = None,
    chain_rpc_url: str | None = None,
) -> FastAPI:
    """The API over ``run_dir`` (a folder of ``round_NNN/`` artifacts).

    Args:
        run_dir: the run folder whose rounds are served.
        holders_dir: where ``POST /holders`` stores registrations (the layout
            :func:`offchain.data.holders.load_holder_folders` reads); None: registration answers
            503 "registration disabled".
        registration_limits: size and count limits of a registration; None: the defaults.
        allowed_manifest_roots: folders of this machine that ``POST /holders/manifest`` may read
            images from; empty: that route answers 503.
        state_url: the round-state database (read only by GETs); None: ``<run_dir>/state.db``.
        deployment_file: the campaign's deployment file; None: ``<run_dir>/deployment.json``.
        operator: the operator endpoints' token and job flags; None (or no token): they
            answer 503. The token is checked at start-up (:func:`offchain.api.operator.check_api_token`).
        chain_rpc_url: the chain's RPC: ``claimed`` flags come from the pool's ``Claimed``
            events of the deployment file's campaign (:class:`ChainClaims`); None: from the
            node's own ``claims.json`` (responses say which, ``claimed_source``).

    Every request body is bounded and JSON nesting is checked before any parse; operator
    requests are authenticated before their bodies are read (:class:`BodyGuardMiddleware`).
    The recursion limit is pinned to CPython's default (py_ecc raises it at import).

    Raises:
        ConfigError: a weak or placeholder API token; ``holders_dir`` not a folder or its
            crash recovery failing (:func:`recover_holders_dir`); an unusable manifest root.
    """
    pin_recursion_limit()
    if holders_dir is not None:
        _prepare_holders_dir(Path(holders_dir))
    allowed_manifest_roots = _check_roots(allowed_manifest_roots)
    app = FastAPI(title="Copyright compensation oracle", version="0.1.0")
    app.state.run_dir = Path(run_dir)
    app.state.round_cache = RoundCache()
    app.state.chain_claims = ChainClaims(chain_rpc_url) if chain_rpc_url else None
    app.state.holders_dir = None if holders_dir is None else Path(holders_dir)
    app.state.registration_limits = registration_limits or RegistrationLimits()
    app.state.allowed_manifest_roots = tuple(Path(r) for r in allowed_manifest_roots)
    app.state.metrics = ApiMetrics(
        rounds=lambda: len(_round_ids(app.state.run_dir)),
        holders=lambda: (
            None if app.state.holders_dir is None else count_registered(app.state.holders_dir)
        ),
    )
    app.add_middleware(BodyGuardMiddleware, rule_for=_body_rule, authenticate=_authenticate)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outermost: counts refusals
    app.include_router(router)
    app.include_router(registration_router)
    configure(app.state, Path(run_dir), state_url, deployment_file, operator)
    for extra in routers():
        app.include_router(extra)
    return app
