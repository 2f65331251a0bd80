"""Holder registration: an address proves control by a signature and registers an image set.

Domain logic only (no HTTP): :func:`register_holder` validates a registration request and its
image files and stores them under a holders folder in exactly the layout
:func:`offchain.data.holders.load_holder_folders` reads (:mod:`offchain.api.holders_store`: the
folder's layout, the registration lock, the atomic write and crash recovery)::

    <holders_dir>/<name>/<sha256 of the file>.png | .jpg     the images, as uploaded
    <holders_dir>/<name>/holder.json                         {"address", "reservation_price_wei"}
    <holders_dir>/<name>/captions.json                       optional: {"<sha256>.png": caption}

Everything is written into a hidden temporary folder (``<holders_dir>/.tmp-…``, ignored by the
loader) that is renamed into place at the end, so a refused or failed registration leaves the
holders folder as it was.

**Proof of control.** The holder signs, with EIP-191 ``personal_sign``
(``eth_account.messages.encode_defunct(text=message)``), the text :func:`registration_message`
builds — eight lines joined by ``\\n``, no trailing newline::

    offchain holder registration v2
    address: 0x<EIP-55 address>
    name: <holder name>
    reservation_price_wei: <decimal integer>
    images: <number of images>
    images_root: 0x<hex SHA-256 of the concatenated 32-byte SHA-256 digests of the image files,
                 sorted ascending by hex>
    replace: <true | false>
    issued_at: <unix seconds, decimal>

(``images_root`` is on one line; it is wrapped here only for reading.) A file's hash is the
SHA-256 of its bytes as uploaded (``sha256sum``). A registration with captions has one more
line right after ``images_root`` (without captions the message is exactly the one above)::

    captions_root: 0x<hex SHA-256 of, for each image sorted ascending by hash, its 32-byte
                   SHA-256 digest followed by the 32-byte SHA-256 of its caption's UTF-8 bytes>

(:func:`captions_root`; the captions as stored: NFC-normalised and stripped.)

**Captions** (optional): one per image or none. An upload sends them as one file part
``captions``, a JSON object (UTF-8) from the image's uploaded file name or SHA-256 hex to its
caption, the holder folder's ``captions.json`` format; a manifest registration sends the JSON
field ``captions``, keyed by SHA-256 hex. Each caption passes
:func:`offchain.data.captions.validate_caption` (valid UTF-8, 1 … 200 characters after NFC
normalisation and stripping, no control characters); if any image has a caption every image
needs one; a key naming no image, two captions for one image, or a file name shared by two
uploads is refused. They are stored as ``captions.json`` keyed by the stored file names, which
:func:`offchain.data.holders.load_holder_folders` reads back. The signature binds the address, the name, the
price, the exact image set and whether it replaces the address's registration, so it cannot be
reused for another image set, holder or price, nor turned into a replacement; it is accepted
only while ``issued_at`` lies in ``[now - signature_max_age_s, now + signature_max_skew_s]`` (10
minutes back, 1 minute ahead by default), and only if ``issued_at`` is strictly newer than the
``issued_at`` stored with the address's current registration (``<name>/.registration.json``), so
an earlier signed registration cannot roll a holder back. The recovered signer is compared with
the address case-insensitively.

**Demo keys never authorise changes.** A holder folder without an address in ``holder.json``
(the demo's and ``demo --holders-dir``'s folders) is paid to
:func:`offchain.data.holders.holder_address` of its name, whose key anyone can derive. A
registration signed by such a demo-derived address (of its own name or of any existing folder)
is refused (:class:`DemoKeyRefused`), and so is one that targets a folder without an address
(:class:`AlreadyRegistered`). A folder whose ``holder.json`` is unreadable is skipped with a
warning in listings and refuses registrations under its name.

Order of checks (cheap ones first, so an unauthenticated request never makes the server decode
images): fields, per-file and total sizes and count, captions, signature, the demo key of the name, image
type (magic bytes), dimensions and the total pixel budget from the headers of all images, then
decoding with Pillow (``verify()`` then a full decode), then, under the registration lock, the
uniqueness of the address and the name, demo-keyed folders and the freshness of ``issued_at``.

**Crash safety.** A replacement is journaled and recovered after a crash
(:func:`offchain.api.holders_store.recover_holders_dir`, run by the API at start-up and before
each registration), so a crash never leaves a holder missing.

**Registration from a manifest.** :func:`register_from_manifest` registers images that already
lie on the server's machine: the request carries the list of the images' SHA-256 hashes (the
manifest) and ``source_dir``, a local folder. The holder signs exactly the same v2 message, its
``images_root`` computed from the manifest hashes. ``source_dir`` must be absolute and, after
``Path.resolve()`` (``..`` and symbolic links followed), lie inside one of the operator's
``allowed_roots`` (none configured: the route is off); each image file must resolve inside that
same root too, so a link cannot pull in a file from elsewhere. The rule for the folder: its
**image files** — regular files whose names end in ``.png``, ``.jpg`` or ``.jpeg`` (any case)
and do not start with ``.`` — must be exactly the manifest set, by content hash (file names are
free). A file whose hash is not in the manifest (an extra file; for a file named ``<sha256>.*``,
a hash mismatch), a manifest hash no file has (a missing file), or two files with the same bytes
are refused with an error naming the file or the hash. Other files and sub-folders are ignored.
Order of checks: fields, the manifest (hash format, count, duplicates), signature, then the
folder (location, listing, reads bounded by the size limits, the set comparison); from there the
same image checks and the same atomic write as an upload.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import is_address, is_checksum_address, to_checksum_address
from PIL import Image, UnidentifiedImageError

from offchain.allocation.wei import UINT256_MAX
from offchain.api.holders_store import (
    NAME_PATTERN,
    RegisteredHolder,
    UnreadableHolder,
    demo_address,
    folder_owner,
    holder_folders,
    locked,
    publish_holder,
    recover_locked,
    stored_issued_at,
)
from offchain.data.captions import MAX_CAPTION_CHARS, validate_caption
from offchain.data.holders import (
    HOLDER_JSON,
    IMAGE_DECODE_ERRORS,
    IMAGE_EXTENSIONS,
    MAX_IMAGE_SIDE_PX,
    MIN_IMAGE_SIDE_PX,
    decode_grayscale,
)
from offchain.errors import ConfigError, DataError
from offchain.jsonsafe import UnsafeJSON, loads_bounded

__all__ = [
    "MESSAGE_HEADER",
    "AlreadyRegistered",
    "DemoKeyRefused",
    "InvalidRegistration",
    "Registration",
    "RegistrationError",
    "RegistrationLimits",
    "SignatureRejected",
    "SourceNotAllowed",
    "StaleRegistration",
    "UploadTooLarge",
    "captions_root",
    "check_address",
    "images_root",
    "register_from_manifest",
    "register_holder",
    "registration_message",
]

logger = logging.getLogger(__name__)

MESSAGE_HEADER = "offchain holder registration v2"
"""First line of the signed message (names the purpose and the format version; v2 added the
``replace`` line, so a v1 signature is refused)."""

HEX_SHA256 = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
"""A manifest entry: the hex SHA-256 of an image file (64 hex digits, optional ``0x``)."""

_MAGIC = {b"\x89PNG\r\n\x1a\n": ("PNG", ".png"), b"\xff\xd8\xff": ("JPEG", ".jpg")}

# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class RegistrationError(DataError):
    """A registration was refused; nothing was written."""


class InvalidRegistration(RegistrationError):
    """A field or an image is unusable (bad address, name, price, corrupt image, wrong size)."""


class UploadTooLarge(RegistrationError):
    """An image or the whole upload exceeds a byte limit."""


class SignatureRejected(RegistrationError):
    """The signature does not prove control of the address over this image set, or expired."""


class AlreadyRegistered(RegistrationError):
    """The address or the name is registered already (and replacing was not asked for), or the
    name's folder may not be changed through the service (no address, unreadable holder.json)."""


class StaleRegistration(AlreadyRegistered):
    """``issued_at`` is not newer than that of the address's stored registration (a replay)."""


class DemoKeyRefused(RegistrationError):
    """The address is a demo-derived one (:func:`offchain.data.holders.holder_address`): anyone
    can compute its key, so it never authorises a change."""


class SourceNotAllowed(RegistrationError):
    """A manifest's ``source_dir`` (or a file in it) lies outside the allowed roots, or none is
    configured."""


# ---------------------------------------------------------------------------------------------
# Limits and inputs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistrationLimits:
    """Limits of one registration; each violation raises an error naming the file and the limit."""

    max_images: int = 1000
    """Most images per holder."""
    min_images: int = 1
    """Fewest images per holder."""
    max_image_bytes: int = 2 * 1024 * 1024
    """Largest image file in bytes (2 MiB)."""
    max_total_bytes: int = 64 * 1024 * 1024
    """Largest upload in bytes (64 MiB), all images together (the HTTP body: plus the fields)."""
    min_side_px: int = MIN_IMAGE_SIDE_PX
    """Smallest image width and height in pixels."""
    max_side_px: int = MAX_IMAGE_SIDE_PX
    """Largest image width and height in pixels (checked from the header, before decoding)."""
    max_total_pixels: int = 64 * 1024 * 1024
    """Most pixels (width × height, summed over the images) one registration may decode
    (67,108,864 ≈ 1,000 images of 256 × 256); checked from the headers of all images before any
    is decoded."""
    signature_max_age_s: int = 600
    """How long after ``issued_at`` a signature is accepted (10 minutes)."""
    signature_max_skew_s: int = 60
    """How far ``issued_at`` may lie in the future (clock skew)."""
    max_price_wei: int = UINT256_MAX
    """Largest reservation price (uint256)."""

    @property
    def max_captions_bytes(self) -> int:
        """Largest captions JSON in bytes: per image a caption of :data:`MAX_CAPTION_CHARS`
        characters of up to 4 UTF-8 bytes (or 6-byte JSON escapes), a 260-byte key and the
        punctuation."""
        return 1024 + self.max_images * (6 * MAX_CAPTION_CHARS + 270)

    def __post_init__(self) -> None:
        for name in ("min_images", "max_image_bytes", "max_total_bytes", "min_side_px",
                     "max_total_pixels", "signature_max_age_s"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        for low, high in (("min_images", "max_images"), ("min_side_px", "max_side_px")):
            if getattr(self, low) > getattr(self, high):
                raise ConfigError(f"{low} {getattr(self, low)} exceeds {high} "
                                  f"{getattr(self, high)}")
        if self.signature_max_skew_s < 0 or not 0 <= self.max_price_wei <= UINT256_MAX:
            raise ConfigError("signature_max_skew_s must be ≥ 0 and max_price_wei a uint256")


@dataclass(frozen=True)
class Registration:
    """A registration request as received (strings as sent; :func:`register_holder` checks them)."""

    address: str
    name: str
    reservation_price_wei: str | int
    signature: str
    issued_at: str | int
    captions: bytes | Mapping[str, object] | None = None
    """Optional captions: the uploaded ``captions`` file (UTF-8 JSON bytes) or the object it
    holds, image file name or SHA-256 hex → caption; None: no captions."""


# ---------------------------------------------------------------------------------------------
# Message
# ---------------------------------------------------------------------------------------------


def images_root(hashes: Sequence[str]) -> str:
    """Hex SHA-256 of the concatenated 32-byte digests ``hashes`` (hex), sorted ascending."""
    digest = hashlib.sha256()
    for h in sorted(x.lower().removeprefix("0x") for x in hashes):
        digest.update(bytes.fromhex(h))
    return digest.hexdigest()


def captions_root(captions: Mapping[str, str]) -> str:
    """Hex SHA-256 binding each image to its caption: over the images sorted ascending by hash,
    the concatenation of the image's 32-byte SHA-256 digest and the 32-byte SHA-256 of its
    caption's UTF-8 bytes.

    Args:
        captions: image SHA-256 hex (``0x`` optional, any case) → caption as stored.
    """
    digest = hashlib.sha256()
    pairs = {h.lower().removeprefix("0x"): text for h, text in captions.items()}
    for h in sorted(pairs):
        digest.update(bytes.fromhex(h))
        digest.update(hashlib.sha256(pairs[h].encode("utf-8")).digest())
    return digest.hexdigest()


def registration_message(
    address: str,
    name: str,
    reservation_price_wei: int,
    hashes: Sequence[str],
    issued_at: int,
    *,
    replace: bool,
    captions: Mapping[str, str] | None = None,
) -> str:
    """The text a holder signs with ``personal_sign`` (format in the module docstring).

    ``replace``: whether the registration replaces the address's current one (signed, so a
    first registration cannot be re-sent as a replacement). ``captions``: image SHA-256 hex →
    caption as stored; when given, the line ``captions_root: 0x…`` (:func:`captions_root`)
    follows ``images_root``.

    >>> registration_message(
    ...     "0x" + "ab" * 20, "alice", 5, ["00" * 32], 1700000000, replace=False
    ... ).splitlines()[1:]
    ['address: 0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB', 'name: alice', \
'reservation_price_wei: 5', 'images: 1', \
'images_root: 0x66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925', \
'replace: false', 'issued_at: 1700000000']
    """
    return "\n".join(
        [
            MESSAGE_HEADER,
            f"address: {to_checksum_address(address)}",
            f"name: {name}",
            f"reservation_price_wei: {int(reservation_price_wei)}",
            f"images: {len(hashes)}",
            f"images_root: 0x{images_root(hashes)}",
            *([f"captions_root: 0x{captions_root(captions)}"] if captions is not None else []),
            f"replace: {'true' if replace else 'false'}",
            f"issued_at: {int(issued_at)}",
        ]
    )


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def check_address(raw: str) -> str:
    """``raw`` as an EIP-55 address: all-lowercase or all-uppercase hex, or checksummed.

    Raises:
        InvalidRegistration: not a 20-byte hex address, or mixed case with a wrong checksum.
    """
    if not isinstance(raw, str) or not is_address(raw):
        raise InvalidRegistration(f"address {raw!r} is not a 20-byte hex Ethereum address")
    body = raw[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(raw):
        raise InvalidRegistration(
            f"address {raw} has a wrong EIP-55 checksum (expected {to_checksum_address(raw)})"
        )
    return to_checksum_address(raw)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidRegistration(
            f"name {name!r} is not allowed: 1-64 characters of letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return name


def _check_int(field: str, raw: str | int, low: int, high: int) -> int:
    if isinstance(raw, bool):
        raise InvalidRegistration(f"{field} must be a decimal integer, got {raw!r}")
    if isinstance(raw, str):
        if not raw.isascii() or not raw.isdigit() or len(raw) > 80:
            raise InvalidRegistration(f"{field} must be a decimal integer, got {raw!r}")
        raw = int(raw)
    if not isinstance(raw, int) or not low <= raw <= high:
        raise InvalidRegistration(f"{field} must be an integer in [{low}, {high}], got {raw!r}")
    return raw


def _check_count(n: int, limits: RegistrationLimits) -> None:
    if n < limits.min_images:
        raise InvalidRegistration(
            f"no images: a holder needs at least {limits.min_images} (got {n})"
        )
    if n > limits.max_images:
        raise InvalidRegistration(f"too many images: {n} > max_images {limits.max_images}")


def _check_sizes(images: Sequence[tuple[str, bytes]], limits: RegistrationLimits) -> None:
    _check_count(len(images), limits)
    total = 0
    for filename, data in images:
        if len(data) > limits.max_image_bytes:
            raise UploadTooLarge(
                f"image {filename!r} is {len(data)} bytes > max_image_bytes "
                f"{limits.max_image_bytes}"
            )
        if not data:
            raise InvalidRegistration(f"image {filename!r} is empty (0 bytes)")
        total += len(data)
    if total > limits.max_total_bytes:
        raise UploadTooLarge(
            f"images total {total} bytes > max_total_bytes {limits.max_total_bytes}"
        )


def _check_captions(
    raw: bytes | Mapping[str, object] | None,
    hashes: Sequence[str],
    filenames: Sequence[str] | None,
    limits: RegistrationLimits,
) -> dict[str, str] | None:
    """The registration's captions as image SHA-256 hex → validated caption, or None.

    ``raw`` is the uploaded captions file (bytes: strict UTF-8 JSON) or its object; keys are an
    image's SHA-256 hex or, where ``filenames`` (the uploads' names, in ``hashes`` order) are
    given, its file name.

    Raises:
        UploadTooLarge: the captions file is over ``limits.max_captions_bytes``.
        InvalidRegistration: not UTF-8, not a JSON object, a key naming no image (or a file name
            two uploads share), two captions for one image, an invalid caption
            (:func:`~offchain.data.captions.validate_caption`), or an image without a caption.
    """
    if raw is None:
        return None
    if isinstance(raw, bytes | bytearray):
        if len(raw) > limits.max_captions_bytes:
            raise UploadTooLarge(
                f"captions are {len(raw)} bytes > {limits.max_captions_bytes} (max_images × "
                f"{MAX_CAPTION_CHARS}-character captions)"
            )
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRegistration(
                f"captions are not valid UTF-8 (byte {exc.start}: {exc.reason})"
            ) from None
        try:
            raw = loads_bounded(text, max_bytes=limits.max_captions_bytes, what="captions")
        except UnsafeJSON as exc:
            raise InvalidRegistration(str(exc)) from None
    if not isinstance(raw, Mapping):
        raise InvalidRegistration(
            f"captions must be a JSON object of image file name or SHA-256 → caption, got "
            f"{type(raw).__name__}"
        )
    known = set(hashes)
    names = dict(zip(filenames, hashes, strict=True)) if filenames is not None else {}
    shared = {n for n, count in Counter(filenames or ()).items() if count > 1}
    captions: dict[str, str] = {}
    for key, text in raw.items():
        h = key.lower().removeprefix("0x") if HEX_SHA256.fullmatch(str(key)) else None
        if h not in known:
            if key in shared:
                raise InvalidRegistration(
                    f"captions: file name {key!r} is shared by several images; key their "
                    "captions by SHA-256"
                )
            h = names.get(key)
        if h is None:
            what = "file name or SHA-256" if filenames is not None else "SHA-256"
            raise InvalidRegistration(
                f"captions: {key!r} names no image of this registration (expected an image's "
                f"{what})"
            )
        if h in captions:
            raise InvalidRegistration(f"captions: two captions for image {key!r} (sha256 {h})")
        try:
            captions[h] = validate_caption(text, f"captions[{key!r}]")
        except DataError as exc:
            raise InvalidRegistration(str(exc)) from None
    missing = [i for i, h in enumerate(hashes) if h not in captions]
    if missing:
        label = filenames[missing[0]] if filenames is not None else hashes[missing[0]]
        raise InvalidRegistration(
            f"image {label!r} has no caption; with captions every image needs one "
            f"({len(missing)} without)"
        )
    return captions


def _check_signature(message: str, signature: str, address: str) -> None:
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
    except (ValueError, AttributeError) as exc:
        raise InvalidRegistration("signature must be 0x-prefixed hex of 65 bytes") from exc
    if len(raw) != 65:
        raise InvalidRegistration(f"signature must be 65 bytes (r ‖ s ‖ v), got {len(raw)}")
    try:
        signer = Account.recover_message(encode_defunct(text=message), signature=raw)
    except Exception as exc:  # eth-keys raises several types for an invalid r, s or v
        raise SignatureRejected(f"signature cannot be recovered ({exc})") from exc
    if signer.lower() != address.lower():
        raise SignatureRejected(
            f"signature is by {signer}, not by {address}: it does not sign this registration "
            "(address, name, price, image set, captions, replace and issued_at must match the "
            "signed message, format v2)"
        )


_STREAM_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def _decode_error(filename: str, exc: Exception) -> InvalidRegistration:
    """InvalidRegistration naming the file (never Pillow's ``<_io.BytesIO object at …>``)."""
    if isinstance(exc, UnidentifiedImageError):
        reason = "Pillow cannot identify the image data"
    else:
        reason = _STREAM_REPR.sub(repr(filename), str(exc)) or type(exc).__name__
    return InvalidRegistration(f"image {filename!r} is corrupt or unreadable ({reason})")


def _image_header(filename: str, data: bytes, limits: RegistrationLimits) -> tuple[str, int]:
    """``(stored extension .png/.jpg, width × height)`` from the image's magic bytes and header
    (nothing decoded), else InvalidRegistration (not PNG/JPEG, unreadable header, a side out of
    ``[min_side_px, max_side_px]``)."""
    kind = next(
        ((fmt, ext) for magic, (fmt, ext) in _MAGIC.items() if data.startswith(magic)), None
    )
    if kind is None:
        raise InvalidRegistration(
            f"image {filename!r} is neither PNG nor JPEG (magic bytes {data[:8].hex()})"
        )
    fmt, ext = kind
    try:
        with Image.open(io.BytesIO(data)) as img:  # lazy: reads the header only
            found, (width, height) = img.format, img.size
    except IMAGE_DECODE_ERRORS as exc:
        raise _decode_error(filename, exc) from exc
    if found != fmt:
        raise InvalidRegistration(f"image {filename!r}: {found} data, not {fmt}")
    if not (
        limits.min_side_px <= width <= limits.max_side_px
        and limits.min_side_px <= height <= limits.max_side_px
    ):
        raise InvalidRegistration(
            f"image {filename!r} is {width}x{height} px; each side must lie in "
            f"[min_side_px {limits.min_side_px}, max_side_px {limits.max_side_px}]"
        )
    return ext, width * height


def _check_headers(images: Sequence[tuple[str, bytes]], limits: RegistrationLimits) -> list[str]:
    """The stored extension of each image, after checking every header and the total pixel
    budget (before anything is decoded).

    Raises:
        InvalidRegistration: as :func:`_image_header`.
        UploadTooLarge: the images hold more than ``max_total_pixels`` pixels in all.
    """
    extensions, total = [], 0
    for filename, data in images:
        ext, pixels = _image_header(filename, data, limits)
        extensions.append(ext)
        total += pixels
        if total > limits.max_total_pixels:
            raise UploadTooLarge(
                f"images decode to more than max_total_pixels {limits.max_total_pixels} pixels "
                f"(width x height summed; passed at image {filename!r}); send fewer or smaller "
                "images"
            )
    return extensions


def _check_decodes(filename: str, data: bytes) -> None:
    """Decode the image fully (Pillow ``verify()``, then the loader's decoding), else
    InvalidRegistration naming the file."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
        with Image.open(io.BytesIO(data)) as img:  # verify() leaves the image unusable
            decode_grayscale(img)  # the loader's decoding: 16-bit scaled, not clipped
    except DataError as exc:
        raise InvalidRegistration(f"image {filename!r}: {exc}") from exc
    except IMAGE_DECODE_ERRORS as exc:
        raise _decode_error(filename, exc) from exc


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------


def register_holder(
    holders_dir: Path,
    registration: Registration,
    images: Sequence[tuple[str, bytes]],
    limits: RegistrationLimits | None = None,
    *,
    allow_replace: bool = False,
    now: float | None = None,
) -> RegisteredHolder:
    """Validate a registration and store its images atomically under ``holders_dir``.

    Args:
        holders_dir: folder of holder folders (created if missing).
        registration: the request's fields.
        images: ``(client file name, file bytes)`` of each image; the file name only labels
            errors (files are stored as ``<sha256>.png|.jpg``).
        limits: size, count, dimension and signature-age limits; None: the defaults.
        allow_replace: replace this address's existing registration (its folder, possibly under
            another name) instead of refusing. A name held by another address is always refused.
        now: the current unix time (tests); None: ``time.time()``.

    Returns:
        The stored holder with its sorted file hashes and their root.

    Raises:
        InvalidRegistration: a bad field, a corrupt image, a wrong type or size in pixels, too
            few or too many images, the same image twice, a malformed signature, bad captions
            (see the module docstring).
        UploadTooLarge: an image over ``max_image_bytes``, all over ``max_total_bytes``, their
            headers over ``max_total_pixels``, or captions over ``max_captions_bytes``.
        SignatureRejected: the signer is not the address (the signed message includes
            ``allow_replace``), or ``issued_at`` is out of the window.
        DemoKeyRefused: the address is the demo-derived address of the name or of an existing
            folder.
        AlreadyRegistered: the address or the name is registered (and may not be replaced), or
            the name's folder has no address or an unreadable ``holder.json``.
        StaleRegistration: ``issued_at`` is not newer than the address's stored registration.
    """
    limits = limits or RegistrationLimits()
    fields = _check_fields(registration, limits, allow_replace)
    _check_sizes(images, limits)

    hashes = [hashlib.sha256(data).hexdigest() for _, data in images]
    seen: dict[str, str] = {}
    for (filename, _), h in zip(images, hashes, strict=True):
        if h in seen:
            raise InvalidRegistration(
                f"image {filename!r} is the same file as {seen[h]!r} (sha256 {h})"
            )
        seen[h] = filename

    captions = _check_captions(
        registration.captions, hashes, [filename for filename, _ in images], limits
    )
    _check_signed(fields, hashes, limits, now, captions)
    return _validate_and_store(Path(holders_dir), fields, images, hashes, limits, captions)


def register_from_manifest(
    holders_dir: Path,
    registration: Registration,
    image_sha256: Sequence[str],
    source_dir: Path,
    allowed_roots: Sequence[Path],
    limits: RegistrationLimits | None = None,
    *,
    allow_replace: bool = False,
    now: float | None = None,
) -> RegisteredHolder:
    """Register the image files of a local folder named by a manifest of their hashes.

    The signature covers the same v2 message as an upload, with ``images_root`` of
    ``image_sha256``. The folder rule (its image files are exactly the manifest set) and the
    order of checks are in the module docstring; the files then pass the same checks and the
    same atomic write as :func:`register_holder`.

    Args:
        holders_dir: folder of holder folders (created if missing).
        registration: the request's fields.
        image_sha256: hex SHA-256 of each image file (64 hex digits, ``0x`` optional, any order).
        source_dir: absolute path of the folder holding the images, on this machine.
        allowed_roots: folders a ``source_dir`` may lie in (resolved here); empty: refused.
        limits: size, count, dimension and signature-age limits; None: the defaults.
        allow_replace: as for :func:`register_holder`.
        now: the current unix time (tests); None: ``time.time()``.

    Returns:
        The stored holder with its sorted file hashes and their root.

    Raises:
        InvalidRegistration: as for :func:`register_holder`; also a malformed or repeated
            manifest hash, a relative or missing ``source_dir``, a file not in the manifest, a
            manifest hash without a file, two files with the same bytes.
        UploadTooLarge: a file over ``max_image_bytes`` or all over ``max_total_bytes`` (the
            reads stop at the limit).
        SignatureRejected, DemoKeyRefused, AlreadyRegistered, StaleRegistration: as for
            :func:`register_holder`.
        SourceNotAllowed: no allowed root, or ``source_dir`` or one of its image files resolves
            outside every allowed root.
    """
    limits = limits or RegistrationLimits()
    fields = _check_fields(registration, limits, allow_replace)
    hashes = _check_manifest(image_sha256, limits)
    captions = _check_captions(registration.captions, hashes, None, limits)
    _check_signed(fields, hashes, limits, now, captions)
    folder, root = _check_source_dir(source_dir, allowed_roots)
    images = _read_manifest_images(folder, root, hashes, limits)
    _check_sizes(images, limits)  # enforced while reading already; the upload's checks, as is
    return _validate_and_store(Path(holders_dir), fields, images, hashes, limits, captions)


@dataclass(frozen=True)
class _Fields:
    """A registration's checked fields (``signature`` as sent, checked by :func:`_check_signed`)."""

    address: str
    name: str
    price: int
    issued_at: int
    signature: str
    replace: bool


def _check_fields(registration: Registration, limits: RegistrationLimits, replace: bool) -> _Fields:
    return _Fields(
        address=check_address(registration.address),
        name=_check_name(registration.name),
        price=_check_int(
            "reservation_price_wei", registration.reservation_price_wei, 0, limits.max_price_wei
        ),
        issued_at=_check_int("issued_at", registration.issued_at, 0, 2**63 - 1),
        signature=registration.signature,
        replace=bool(replace),
    )


def _check_signed(
    fields: _Fields,
    hashes: Sequence[str],
    limits: RegistrationLimits,
    now: float | None,
    captions: Mapping[str, str] | None = None,
) -> None:
    """``issued_at`` within the window, the signature over the v2 message of ``hashes`` (and
    ``captions``), then the address not a demo-derived one of the name."""
    now = time.time() if now is None else now
    address, name, price, issued_at = fields.address, fields.name, fields.price, fields.issued_at
    if issued_at < now - limits.signature_max_age_s:
        raise SignatureRejected(
            f"signature expired: issued_at {issued_at} is {int(now - issued_at)} s ago "
            f"> signature_max_age_s {limits.signature_max_age_s}"
        )
    if issued_at > now + limits.signature_max_skew_s:
        raise SignatureRejected(
            f"issued_at {issued_at} is {int(issued_at - now)} s in the future "
            f"> signature_max_skew_s {limits.signature_max_skew_s}"
        )
    message = registration_message(
        address, name, price, hashes, issued_at, replace=fields.replace, captions=captions
    )
    _check_signature(message, fields.signature, address)
    if address == demo_address(name):
        raise DemoKeyRefused(_demo_key_text(address, name))


def _demo_key_text(address: str, name: str) -> str:
    return (
        f"address {address} is the demo-derived address of holder name {name!r} (its key is "
        "keccak256('holder:' + name), which anyone can compute); demo keys cannot register or "
        "change holders through the service"
    )


def _check_manifest(image_sha256: Sequence[str], limits: RegistrationLimits) -> list[str]:
    """The manifest's hashes as lowercase hex (no ``0x``): well formed, counted, distinct."""
    if isinstance(image_sha256, str) or not isinstance(image_sha256, Sequence):
        raise InvalidRegistration("image_sha256 must be a list of hex SHA-256 hashes")
    _check_count(len(image_sha256), limits)
    hashes: list[str] = []
    seen: set[str] = set()
    for i, raw in enumerate(image_sha256):
        if not isinstance(raw, str) or not HEX_SHA256.fullmatch(raw):
            raise InvalidRegistration(
                f"image_sha256[{i}] {raw!r} is not a hex SHA-256 (64 hex digits)"
            )
        h = raw.lower().removeprefix("0x")
        if h in seen:
            raise InvalidRegistration(f"image_sha256[{i}]: sha256 {h} is listed twice")
        seen.add(h)
        hashes.append(h)
    return hashes


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _check_source_dir(source_dir: Path, allowed_roots: Sequence[Path]) -> tuple[Path, Path]:
    """``(resolved source_dir, the allowed root holding it)``."""
    if not allowed_roots:
        raise SourceNotAllowed("registration from a manifest is disabled (no allowed roots)")
    if "\x00" in str(source_dir):
        raise InvalidRegistration("source_dir contains a NUL byte; it must be a folder path")
    raw = Path(source_dir)
    if not raw.is_absolute():
        raise InvalidRegistration(f"source_dir {str(raw)!r} must be an absolute path")
    try:
        folder = raw.resolve()
        roots = [Path(r).resolve() for r in allowed_roots]
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop
        raise InvalidRegistration(f"source_dir {str(raw)!r} cannot be resolved ({exc})") from exc
    root = next((r for r in roots if _within(folder, r)), None)
    if root is None:
        raise SourceNotAllowed(
            f"source_dir {str(raw)!r} (resolved: {str(folder)!r}) is not inside an allowed root"
        )
    if not folder.is_dir():
        raise InvalidRegistration(f"source_dir {str(raw)!r} is not an existing folder")
    return folder, root


def _read_manifest_images(
    folder: Path, root: Path, hashes: Sequence[str], limits: RegistrationLimits
) -> list[tuple[str, bytes]]:
    """The folder's image files as ``(file name, bytes)`` in manifest order, read within the
    size limits, after checking that their hashes are exactly ``hashes``."""
    try:
        candidates = sorted(
            p
            for p in folder.iterdir()
            if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        )
    except OSError as exc:
        raise InvalidRegistration(f"source_dir cannot be listed ({exc.strerror})") from exc
    files: list[tuple[str, Path]] = []
    for path in candidates:
        target = path.resolve()
        if not _within(target, root):
            raise SourceNotAllowed(
                f"file {path.name!r} links to {str(target)!r}, outside the allowed root"
            )
        if target.is_file():  # sub-folders (and FIFOs, devices) are not image files
            files.append((path.name, target))
    if len(files) > limits.max_images:
        raise InvalidRegistration(
            f"too many images: source_dir has {len(files)} image files > max_images "
            f"{limits.max_images}"
        )

    wanted = set(hashes)
    found: dict[str, tuple[str, bytes]] = {}
    total = 0
    for filename, target in files:
        try:
            with open(target, "rb") as handle:
                data = handle.read(limits.max_image_bytes + 1)
        except OSError as exc:
            raise InvalidRegistration(f"file {filename!r} cannot be read ({exc.strerror})") from exc
        if len(data) > limits.max_image_bytes:
            raise UploadTooLarge(
                f"image {filename!r} is over max_image_bytes {limits.max_image_bytes}"
            )
        total += len(data)
        if total > limits.max_total_bytes:
            raise UploadTooLarge(
                f"images total over max_total_bytes {limits.max_total_bytes} (stopped reading "
                f"at {filename!r})"
            )
        h = hashlib.sha256(data).hexdigest()
        if h not in wanted:
            stem = Path(filename).stem.lower()
            if HEX_SHA256.fullmatch(stem) and stem in wanted:
                raise InvalidRegistration(
                    f"hash mismatch: file {filename!r} has sha256 {h}, not the {stem} it is "
                    "named for"
                )
            raise InvalidRegistration(
                f"file {filename!r} (sha256 {h}) is not in the manifest; the folder's image "
                "files must be exactly the manifest set"
            )
        if h in found:
            raise InvalidRegistration(
                f"image {filename!r} is the same file as {found[h][0]!r} (sha256 {h})"
            )
        found[h] = (filename, data)
    missing = [h for h in hashes if h not in found]
    if missing:
        raise InvalidRegistration(
            f"{len(missing)} manifest image(s) missing from source_dir: no file has sha256 "
            + ", ".join(missing[:5])
            + (" …" if len(missing) > 5 else "")
        )
    return [found[h] for h in hashes]


def _validate_and_store(
    holders_dir: Path,
    fields: _Fields,
    images: Sequence[tuple[str, bytes]],
    hashes: Sequence[str],
    limits: RegistrationLimits,
    captions: Mapping[str, str] | None = None,
) -> RegisteredHolder:
    """Check the (authenticated) images' headers and pixel budget, decode them, then write them
    (and ``captions``, image SHA-256 → caption, as ``captions.json``) atomically: the part of a
    registration shared by uploads and manifests."""
    extensions = _check_headers(images, limits)
    for filename, data in images:
        _check_decodes(filename, data)

    holders_dir.mkdir(parents=True, exist_ok=True)
    with locked(holders_dir):
        recover_locked(holders_dir)
        own = _owned_folders(holders_dir, fields)
        publish_holder(
            holders_dir,
            fields.name,
            record={
                "address": fields.address,
                "issued_at": fields.issued_at,
                "signature": fields.signature,
            },
            files=[
                (f"{h}{ext}", data)
                for data, h, ext in zip((d for _, d in images), hashes, extensions, strict=True)
            ],
            meta={"address": fields.address, "reservation_price_wei": str(fields.price)},
            replaced=own,
            captions=(
                {f"{h}{ext}": captions[h] for h, ext in zip(hashes, extensions, strict=True)}
                if captions is not None
                else None
            ),
        )

    sorted_hashes = tuple(sorted(hashes))
    return RegisteredHolder(
        address=fields.address,
        name=fields.name,
        reservation_price_wei=fields.price,
        n_images=len(images),
        image_sha256=sorted_hashes,
        images_root="0x" + images_root(sorted_hashes),
    )


def _owned_folders(holders_dir: Path, fields: _Fields) -> list[Path]:
    """The folders ``fields.address`` owns (to be replaced), after checking that the name is
    free or its own, that no folder makes the address a demo key, and that the registration is
    newer than the stored one. Call under the registration lock.

    Raises:
        AlreadyRegistered: the address is registered and ``replace`` is false; the name belongs
            to another address, has no address (a demo folder) or an unreadable holder.json.
        DemoKeyRefused: the address is the demo-derived address of an existing folder.
        StaleRegistration: ``issued_at`` is not newer than the address's stored registration.
    """
    address, name = fields.address, fields.name
    own: list[Path] = []
    for folder in holder_folders(holders_dir):
        try:
            owner = folder_owner(folder)
        except UnreadableHolder as exc:
            if folder.name == name:
                raise AlreadyRegistered(
                    f"{exc}; the operator must repair or remove that folder before {name!r} "
                    "can be registered"
                ) from exc
            logger.warning("skipping holder folder %s: %s", folder, exc)
            continue
        if owner is None:
            if folder.name == name:
                raise AlreadyRegistered(
                    f"holder folder {name!r} has no address in {HOLDER_JSON}: it is a demo/CLI "
                    f"folder paid to the demo-derived address {demo_address(name)}, whose key "
                    "anyone can compute, so it cannot be changed through the service"
                )
            if demo_address(folder.name) == address:
                raise DemoKeyRefused(_demo_key_text(address, folder.name))
        elif owner == address:
            own.append(folder)
        elif folder.name == name:
            raise AlreadyRegistered(f"name {name!r} is registered by {owner}")
    if own and not fields.replace:
        raise AlreadyRegistered(
            f"address {address} is registered as {own[0].name!r}; ask to replace it"
        )
    newest = max((stored_issued_at(folder) for folder in own), default=None)
    if newest is not None and fields.issued_at <= newest:
        raise StaleRegistration(
            f"issued_at {fields.issued_at} is not newer than issued_at {newest} of {address}'s "
            "stored registration: an earlier signed registration cannot replace a later one; "
            "sign a new one"
        )
    return own
