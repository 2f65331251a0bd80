"""Holder registration over HTTP: ``POST /holders`` (multipart upload), ``POST
/holders/manifest`` (images already on the server) and ``GET /holders``.

The handlers parse the request and turn :class:`~offchain.api.registration.RegistrationError`
into HTTP errors; what a registration must satisfy, and how it is stored, is
:mod:`offchain.api.registration`. :func:`body_rule` gives the body guard each request's limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser

from offchain.api.deps import HoldersDir, Limits, ManifestRoots
from offchain.api.guard import DEFAULT_BODY_LIMIT, BodyRule
from offchain.api.holders_store import list_registered
from offchain.api.registration import (
    AlreadyRegistered,
    DemoKeyRefused,
    InvalidRegistration,
    Registration,
    RegistrationError,
    RegistrationLimits,
    SignatureRejected,
    SourceNotAllowed,
    UploadTooLarge,
    register_from_manifest,
    register_holder,
)
from offchain.api.schemas import ManifestRegistrationIn, RegisteredHolderOut, RegistrationOut

__all__ = ["body_rule", "router"]

_REGISTRATION_FIELDS = frozenset(
    {"address", "name", "reservation_price_wei", "signature", "issued_at", "replace"}
)
_MULTIPART_OVERHEAD = 64 * 1024
"""Bytes of field values and part headers allowed on top of ``max_total_bytes`` (and of the
captions file, :attr:`RegistrationLimits.max_captions_bytes`)."""
_CAPTIONS_PART = "captions"
"""The upload's optional file part: a JSON object, image file name or SHA-256 → caption."""


class ManifestWithCaptionsIn(ManifestRegistrationIn):
    """:class:`ManifestRegistrationIn` plus optional ``captions``: image SHA-256 hex → caption
    (checked by :func:`offchain.api.registration.register_from_manifest`)."""

    captions: dict[str, Any] | None = None


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
    """Parse the multipart body as it arrives (:class:`~offchain.api.guard.BodyGuardMiddleware`
    counts it: past :func:`body_rule`'s limit → 413)."""
    content_type = request.headers.get("content-type", "")
    multipart = content_type.startswith("multipart/form-data")
    if not multipart and not content_type.startswith("application/x-www-form-urlencoded"):
        raise HTTPException(status_code=415, detail="expected multipart/form-data")
    parser: MultiPartParser | FormParser = (
        MultiPartParser(
            request.headers,
            request.stream(),
            max_files=limits.max_images + 1,  # + the captions file
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


async def _read_captions(upload: UploadFile, limits: RegistrationLimits) -> bytes:
    """The captions file's bytes (UTF-8 JSON, checked by the registration)."""
    data = await upload.read(limits.max_captions_bytes + 1)
    if len(data) > limits.max_captions_bytes:
        raise UploadTooLarge(f"captions are over {limits.max_captions_bytes} bytes")
    return data


router = APIRouter(tags=["registration"])


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
                    "captions": {
                        "type": "string",
                        "format": "binary",
                        "description": "optional JSON file (UTF-8): image file name or SHA-256 "
                        "-> caption, one per image; signed as captions_root",
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


@router.post(
    "/holders",
    status_code=201,
    response_model=RegistrationOut,
    openapi_extra={"requestBody": _REGISTRATION_BODY},
)
async def register(request: Request, holders_dir: HoldersDir, limits: Limits) -> RegistrationOut:
    """Register a holder: multipart fields ``address``, ``name``, ``reservation_price_wei``,
    ``signature``, ``issued_at`` (optional ``replace=true``), files ``images`` and an optional
    file ``captions`` (see docs/api.md, "Holder registration")."""
    uploads: list[UploadFile] = []
    captions: list[UploadFile] = []
    try:
        items = await _read_form(request, limits)
        fields: dict[str, str] = {}
        for key, value in items:
            if isinstance(value, UploadFile):
                if key == _CAPTIONS_PART:
                    captions.append(value)
                    continue
                if key not in ("images", "images[]"):
                    raise InvalidRegistration(
                        f"unexpected file field {key!r}; send files as images (and captions)"
                    )
                uploads.append(value)
            elif key == _CAPTIONS_PART:
                raise InvalidRegistration(
                    "send captions as a file part (a UTF-8 JSON file), not as a text field"
                )
            elif key not in _REGISTRATION_FIELDS:
                raise InvalidRegistration(
                    f"unknown field {key!r}; expected {sorted(_REGISTRATION_FIELDS)}"
                )
            else:
                fields[key] = value  # type: ignore[assignment]
        missing = sorted(_REGISTRATION_FIELDS - {"replace"} - set(fields))
        if missing:
            raise InvalidRegistration(f"missing fields {missing}")
        if len(captions) > 1:
            raise InvalidRegistration(f"{len(captions)} captions files; send one")
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
            captions=await _read_captions(captions[0], limits) if captions else None,
        )
        replace = fields.get("replace", "false").lower() in ("1", "true", "yes")
        stored = await run_in_threadpool(
            register_holder, holders_dir, registration, images, limits, allow_replace=replace
        )
    except RegistrationError as exc:
        raise _http_error(exc) from exc
    finally:
        for upload in uploads + captions:
            await upload.close()
    return RegistrationOut.of(stored)


@router.post(
    "/holders/manifest",
    status_code=201,
    response_model=RegistrationOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ManifestWithCaptionsIn.model_json_schema()}},
        }
    },
)
async def register_manifest(
    request: Request, holders_dir: HoldersDir, roots: ManifestRoots, limits: Limits
) -> RegistrationOut:
    """Register a holder from files on the server: JSON body :class:`ManifestWithCaptionsIn`
    (optional ``captions``: image SHA-256 → caption); the folder's image files must be exactly
    the manifest set (see :func:`offchain.api.registration.register_from_manifest`)."""
    try:
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise HTTPException(status_code=415, detail="expected application/json")
        body = await request.body()  # bounded and depth-checked by BodyGuardMiddleware
        try:
            payload = ManifestWithCaptionsIn.model_validate_json(body)
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
            captions=payload.captions,
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


@router.get("/holders", response_model=list[RegisteredHolderOut])
def registered_holders(holders_dir: HoldersDir) -> list[RegisteredHolderOut]:
    """The holders in the holders folder: address, name and image count. Reservation prices
    stay private (only the registration's own answer states its price); a folder with an
    unreadable ``holder.json`` is skipped (logged)."""
    return [
        RegisteredHolderOut(address=h.address, name=h.name, n_images=h.n_images)
        for h in list_registered(holders_dir)
    ]


def body_rule(scope: dict) -> BodyRule:
    """The body limit of a request: a registration upload streams up to ``max_total_bytes``
    plus the captions and the fields, a manifest holds up to ``max_images`` hashes and
    captions, the rest 64 KiB."""
    if scope["method"] == "POST" and scope["path"] in ("/holders", "/holders/manifest"):
        limits: RegistrationLimits = scope["app"].state.registration_limits
        captions = limits.max_captions_bytes
        if scope["path"] == "/holders":
            return BodyRule(
                limits.max_total_bytes + captions + _MULTIPART_OVERHEAD,
                f"max_total_bytes {limits.max_total_bytes} (+{captions} bytes of captions, "
                f"+{_MULTIPART_OVERHEAD} bytes of fields)",
                stream=True,
            )
        limit = 128 * limits.max_images + captions + _MULTIPART_OVERHEAD
        return BodyRule(
            limit,
            f"{limit} bytes for a manifest of max_images {limits.max_images} with captions",
        )
    return BodyRule(DEFAULT_BODY_LIMIT, f"{DEFAULT_BODY_LIMIT} bytes for {scope['path']}")
