"""Data holders: who owns which training images, where they are paid, and what they ask for.

Sources:

* :func:`mnist_holders` — the demo: the shipped MNIST test split divided among ``n_holders``
  holders of unequal sizes and distinct class mixes, with deterministic **demo-only** keys.
* :func:`split_holders` — that split of any labelled images; over a registered dataset
  (``mnist``, scikit-learn ``digits``, scikit-image ``lfw``) it is
  :func:`offchain.data.splits.dataset_holders`, e.g. for the policy calibration's sweeps.
* :func:`load_holder_folders` — a user's own data, one folder of images per holder, in
  grayscale (``channels=1``, the MNIST profile) or in color (``channels=3``), with the
  holder's captions where the folder has them.
* :func:`offchain.data.emoji.emoji_holders` — openly licensed emoji art, artist × category.

A holder's images are uint8 (n, H, W) grayscale or uint8 (n, H, W, 3) RGB; it may carry one
caption per image (:mod:`offchain.data.captions`), a licence (SPDX id) and the attribution text
that licence requires. :func:`write_dataset_manifest` records the holders (addresses, prices,
image hashes, and captions, licence and attribution where set) as JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from eth_account import Account
from eth_utils import is_address, is_checksum_address, keccak, to_checksum_address
from PIL import Image, UnidentifiedImageError

from offchain.allocation.wei import WEI_PER_TOKEN
from offchain.data.captions import validate_caption
from offchain.data.mnist import DEFAULT_MNIST_ROOT, load_mnist
from offchain.errors import DataError
from offchain.utils import write_json

__all__ = [
    "CAPTIONS_JSON",
    "DEFAULT_HOLDER_SIZES",
    "DOMINANT_FRACTION",
    "HOLDER_KEY_PREFIX",
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_SIDE_PX",
    "MIN_IMAGE_SIDE_PX",
    "Holder",
    "check_image_size",
    "check_unique_addresses",
    "default_holder_sizes",
    "decode_grayscale",
    "decode_rgb",
    "dominant_classes",
    "folder_captions",
    "holder_address",
    "holder_private_key",
    "image_hash",
    "load_holder_folders",
    "mnist_holders",
    "split_holders",
    "training_captions",
    "training_set",
    "dataset_manifest",
    "write_dataset_manifest",
]

logger = logging.getLogger(__name__)

DEFAULT_HOLDER_SIZES: tuple[int, ...] = (24, 32, 40, 48, 64, 80, 96, 128)
"""Images per holder of the 8-holder demo (512 in all): unequal, small enough for a CPU round."""

DOMINANT_FRACTION = 0.7
"""Share of a demo holder's images drawn from its two dominant digit classes."""

HOLDER_KEY_PREFIX = b"holder:"
"""Demo key derivation: ``private key = keccak256(HOLDER_KEY_PREFIX + name.encode())``."""

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg"})
"""Image files :func:`load_holder_folders` reads (case-insensitive)."""

MIN_IMAGE_SIDE_PX = 8
"""Smallest image width and height in pixels (the loader and the registration API)."""

MAX_IMAGE_SIDE_PX = 4096
"""Largest image width and height in pixels, checked from the header before decoding."""

HOLDER_JSON = "holder.json"
_HOLDER_JSON_KEYS = frozenset({"address", "reservation_price_wei", "licence", "attribution"})

CAPTIONS_JSON = "captions.json"
"""A holder folder's captions: a JSON object, image file name → caption (see
:func:`load_holder_folders`)."""

CAPTION_SUFFIX = ".txt"
"""A sidecar caption file: ``<image stem>.txt`` next to the image, UTF-8."""

_SPDX_ID = r"[A-Za-z0-9][A-Za-z0-9.+-]*"
_SPDX_EXPRESSION = re.compile(rf"^{_SPDX_ID}( (AND|OR|WITH) {_SPDX_ID})*$")
"""A licence: one SPDX id ("CC-BY-4.0") or a simple expression ("MIT OR Apache-2.0")."""

MAX_ATTRIBUTION_CHARS = 500
"""Longest attribution text of a holder."""


# ---------------------------------------------------------------------------------------------
# Holder
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Holder:
    """One data holder and its images.

    Equality is identity (the images are arrays); compare :attr:`image_hashes` for content.
    The ``images`` stored on the holder are a read-only view, so the hashes stay valid.
    """

    name: str
    """Unique name; the folder name for :func:`load_holder_folders`."""
    address: str
    """Payout address in EIP-55 checksum form."""
    reservation_price_wei: int
    """Least payment per round (wei of the 18-decimal token) for which the holder takes part."""
    images: np.ndarray
    """uint8 (n, H, W) grayscale images, 0 = black, or uint8 (n, H, W, 3) RGB; n ≥ 1."""
    labels: np.ndarray | None = None
    """int64 (n,) class labels where known (MNIST digits), else None."""
    captions: tuple[str, ...] | None = None
    """One caption per image (validated by :func:`~offchain.data.captions.validate_caption`,
    never ""), or None: the holder has no captions."""
    licence: str | None = None
    """SPDX licence id of the images ("Apache-2.0", "CC-BY-4.0"), or None: not stated."""
    attribution: str | None = None
    """The credit text the licence requires, or None."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise DataError(
                f"holder name must be a non-empty string without '/', got {self.name!r}"
            )
        if not isinstance(self.address, str) or not is_checksum_address(self.address):
            raise DataError(
                f"holder {self.name!r}: address {self.address!r} is not an EIP-55 checksum address"
            )
        if isinstance(self.reservation_price_wei, bool) or not isinstance(
            self.reservation_price_wei, int | np.integer
        ):
            raise DataError(
                f"holder {self.name!r}: reservation_price_wei must be an int (wei), "
                f"got {type(self.reservation_price_wei).__name__}"
            )
        if self.reservation_price_wei < 0:
            raise DataError(
                f"holder {self.name!r}: reservation_price_wei must be >= 0, "
                f"got {self.reservation_price_wei}"
            )
        object.__setattr__(self, "reservation_price_wei", int(self.reservation_price_wei))
        images = self.images
        if not _is_image_stack(images):
            raise DataError(
                f"holder {self.name!r}: images must be a uint8 array (n, H, W) or (n, H, W, 3), "
                f"got {getattr(images, 'dtype', type(images).__name__)} "
                f"{getattr(images, 'shape', '')}"
            )
        if len(images) == 0:
            raise DataError(f"holder {self.name!r} has no images")
        view = images.view()
        view.flags.writeable = False
        object.__setattr__(self, "images", view)
        self._check_captions_and_licence()
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
                raise DataError(
                    f"holder {self.name!r}: labels must be integers of shape ({len(images)},), "
                    f"got {labels.dtype} {labels.shape}"
                )
            labels = labels.astype(np.int64)
            labels.flags.writeable = False
            object.__setattr__(self, "labels", labels)

    def _check_captions_and_licence(self) -> None:
        if self.captions is not None:
            if isinstance(self.captions, str) or len(self.captions) != len(self.images):
                raise DataError(
                    f"holder {self.name!r}: captions must be a sequence of {len(self.images)} "
                    f"strings (one per image), got {type(self.captions).__name__} of "
                    f"length {len(self.captions)}"
                )
            captions = tuple(
                validate_caption(text, f"holder {self.name!r} image {i}")
                for i, text in enumerate(self.captions)
            )
            object.__setattr__(self, "captions", captions)
        if self.licence is not None and (
            not isinstance(self.licence, str) or not _SPDX_EXPRESSION.match(self.licence)
        ):
            raise DataError(
                f"holder {self.name!r}: licence must be an SPDX licence id such as "
                f"'CC-BY-4.0', got {self.licence!r}"
            )
        if self.attribution is not None:
            where = f"holder {self.name!r}: attribution"
            if not isinstance(self.attribution, str):
                raise DataError(f"{where} must be text, got {type(self.attribution).__name__}")
            text = self.attribution.strip()
            if not text or len(text) > MAX_ATTRIBUTION_CHARS or not text.isprintable():
                raise DataError(
                    f"{where} must be 1 … {MAX_ATTRIBUTION_CHARS} printable characters on one "
                    f"line, got {self.attribution!r:.80}"
                )
            object.__setattr__(self, "attribution", text)

    @property
    def n_images(self) -> int:
        """Number of images n."""
        return int(self.images.shape[0])

    @property
    def is_rgb(self) -> bool:
        """Whether the images are RGB (n, H, W, 3) rather than grayscale (n, H, W)."""
        return self.images.ndim == 4

    @cached_property
    def image_hashes(self) -> tuple[str, ...]:
        """Hex SHA-256 of each image, in order (see :func:`image_hash`)."""
        return tuple(image_hash(image) for image in self.images)


def image_hash(image: np.ndarray) -> str:
    """Hex SHA-256 of one uint8 image, grayscale (H, W) or RGB (H, W, 3).

    Grayscale: ``sha256(b"<H>x<W>:" + row-major pixel bytes)``; RGB:
    ``sha256(b"<H>x<W>x3:" + row-major bytes, channels last)``. The shape is part of the hash
    so that equal bytes in a different shape hash differently.

    Raises:
        DataError: any other dtype or shape.
    """
    if not isinstance(image, np.ndarray) or not _is_image_stack(image[None]):
        raise DataError(
            "image_hash needs a uint8 (H, W) or (H, W, 3) image, got "
            f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}"
        )
    prefix = "x".join(str(int(side)) for side in image.shape) + ":"
    digest = hashlib.sha256(prefix.encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def _is_image_stack(images: object) -> bool:
    """Whether ``images`` is uint8 (n, H, W) or uint8 (n, H, W, 3)."""
    return (
        isinstance(images, np.ndarray)
        and images.dtype == np.uint8
        and (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3))
    )


# ---------------------------------------------------------------------------------------------
# Demo keys
# ---------------------------------------------------------------------------------------------


def holder_private_key(name: str) -> str:
    """The demo private key of holder ``name``: ``0x`` + hex of ``keccak256(b"holder:" + name)``.

    DEMO ONLY: anyone can recompute these keys from the holder's name. They exist so that the
    demo's holders can sign their own claims on a local chain; never send real funds to them.
    """
    return "0x" + keccak(HOLDER_KEY_PREFIX + name.encode()).hex()


def holder_address(name: str) -> str:
    """EIP-55 address of :func:`holder_private_key` ``(name)`` (demo only)."""
    return Account.from_key(holder_private_key(name)).address


# ---------------------------------------------------------------------------------------------
# MNIST demo split
# ---------------------------------------------------------------------------------------------


def default_holder_sizes(n_holders: int) -> tuple[int, ...]:
    """Default images per holder: :data:`DEFAULT_HOLDER_SIZES` for 8 holders, else 24, 32, 40, …

    Every size differs, so holders are unequal for any ``n_holders`` ≥ 1.
    """
    if n_holders < 1:
        raise DataError(f"n_holders must be >= 1, got {n_holders}")
    if n_holders == len(DEFAULT_HOLDER_SIZES):
        return DEFAULT_HOLDER_SIZES
    return tuple(24 + 8 * h for h in range(n_holders))


def dominant_classes(holder_index: int, n_classes: int = 10) -> tuple[int, int]:
    """The two digit classes holder ``h`` mostly owns: ``(h mod 10, (h + 3) mod 10)``.

    For 8 holders the pairs are (0,3) (1,4) (2,5) (3,6) (4,7) (5,8) (6,9) (7,0): all distinct,
    every digit dominant somewhere. With more than 10 holders the pairs repeat.
    """
    return holder_index % n_classes, (holder_index + 3) % n_classes


def mnist_holders(
    n_holders: int = 8,
    sizes: Sequence[int] | None = None,
    seed: int = 0,
    reservation_prices_wei: Sequence[int] | None = None,
    mnist_root: Path = DEFAULT_MNIST_ROOT,
) -> list[Holder]:
    """Split the MNIST test set among holders of unequal sizes and distinct class mixes.

    Holder ``h`` is named ``holder_<h>``. Of its ``sizes[h]`` images, ``round(0.7·size)`` come
    from its two :func:`dominant_classes` (half each, the first taking the odd one) and the rest
    from the other eight classes, each image's class drawn uniformly among them. Images are drawn
    without replacement from per-class shuffled pools, so no image belongs to two holders; each
    holder's images are then shuffled. Everything depends only on ``seed``.

    Args:
        n_holders: number of holders H ≥ 1.
        sizes: images per holder, length H, each ≥ 1; None: :func:`default_holder_sizes`.
        seed: seed of the split and of the default prices' order.
        reservation_prices_wei: per-holder prices in wei, length H, each ≥ 0; None: whole-token
            prices spread evenly from 5 to 40 tokens (×10¹⁸ wei) in a seeded order.
        mnist_root: folder of the MNIST files (see :func:`offchain.data.mnist.load_mnist`).

    Returns:
        H holders with MNIST labels and demo addresses (:func:`holder_address`).

    Raises:
        DataError: bad sizes or prices, or a class pool runs out of images.
    """
    if n_holders < 1:
        raise DataError(f"n_holders must be >= 1, got {n_holders}")
    sizes = sizes if sizes is not None else default_holder_sizes(n_holders)
    return split_holders(
        lambda: load_mnist(mnist_root), "MNIST", n_holders, sizes, seed, reservation_prices_wei
    )


def split_holders(
    load: Callable[[], tuple[np.ndarray, np.ndarray]],
    source: str,
    n_holders: int,
    sizes: Sequence[int],
    seed: int,
    reservation_prices_wei: Sequence[int] | None,
) -> list[Holder]:
    """Split ``load()``'s labelled images among holders (:func:`mnist_holders`'s rule).

    Holder ``h`` is named ``holder_<h>`` and gets the demo address :func:`holder_address`.
    The random draws come in a fixed order (prices, class pools, then per holder its other
    classes and its permutation), so that the MNIST split stays what it always was.

    Args:
        load: returns ``(images, labels)``, uint8 (N, H, W) and int64 (N,) classes 0..K-1;
            called after the sizes and prices are checked.
        source: the dataset's name for error messages.
        n_holders: number of holders H ≥ 1.
        sizes: images per holder, length H, each ≥ 1.
        seed: seed of the default prices' order and of the split.
        reservation_prices_wei: per-holder prices in wei, length H; None: 5 … 40 tokens.

    Returns:
        H holders with labels.

    Raises:
        DataError: bad sizes or prices, or a class pool runs out of images.
    """
    if n_holders < 1:
        raise DataError(f"n_holders must be >= 1, got {n_holders}")
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) != n_holders:
        raise DataError(f"sizes has {len(sizes)} entries for {n_holders} holders")
    if min(sizes) < 1:
        raise DataError(f"every holder needs at least one image, got sizes {list(sizes)}")

    rng = np.random.default_rng(seed)
    if reservation_prices_wei is None:
        tokens = np.rint(np.linspace(5, 40, n_holders)).astype(np.int64)
        prices = [int(t) * WEI_PER_TOKEN for t in rng.permutation(tokens)]
    else:
        prices = [int(p) for p in reservation_prices_wei]
        if len(prices) != n_holders:
            raise DataError(
                f"reservation_prices_wei has {len(prices)} entries for {n_holders} holders"
            )

    images, labels = load()
    if sum(sizes) > len(images):
        raise DataError(f"holders ask for {sum(sizes)} images, {source} has {len(images)}")
    n_classes = int(labels.max()) + 1
    # Per-class pools of image indices in a seeded order; drawing pops from the front.
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in range(n_classes)]

    def draw(cls: int, count: int, holder: str) -> list[int]:
        if count > len(pools[cls]):
            raise DataError(
                f"{holder}: needs {count} more {source} images of class {cls}, only "
                f"{len(pools[cls])} left; use smaller sizes"
            )
        taken, pools[cls] = pools[cls][:count], pools[cls][count:]
        return taken

    holders = []
    for h, size in enumerate(sizes):
        name = f"holder_{h}"
        n_dominant = round(DOMINANT_FRACTION * size)
        if n_classes >= 4:
            first, second = dominant_classes(h, n_classes)
            dominant = (first, second)
            index = draw(first, n_dominant - n_dominant // 2, name) + draw(
                second, n_dominant // 2, name
            )
        else:  # too few classes for two distinct dominant ones (LFW: face / non-face)
            dominant = (h % n_classes,)
            index = draw(dominant[0], n_dominant, name)
        others = np.array([c for c in range(n_classes) if c not in dominant])
        n_other = size - n_dominant
        if n_other and not len(others):
            raise DataError(f"{source} has one class only: no class mix for {name}")
        other_draws = (
            np.bincount(rng.choice(others, size=n_other), minlength=n_classes)
            if len(others)
            else np.zeros(n_classes, np.int64)
        )
        for cls in others:
            index += draw(int(cls), int(other_draws[cls]), name)
        index = np.asarray(index)[rng.permutation(size)]
        holders.append(
            Holder(
                name=name,
                address=holder_address(name),
                reservation_price_wei=prices[h],
                images=images[index],
                labels=labels[index],
            )
        )
    return holders


# ---------------------------------------------------------------------------------------------
# Folders of the user's own images
# ---------------------------------------------------------------------------------------------


def load_holder_folders(
    root: Path,
    image_size: int | tuple[int, int] = 28,
    default_reservation_price_wei: int = 0,
    channels: int = 1,
) -> list[Holder]:
    """Load one holder per sub-folder of ``root``.

    Layout::

        root/<name>/*.png | *.jpg | *.jpeg     the holder's images (at least one)
        root/<name>/holder.json                optional: {"address": "0x…", "reservation_price_wei": 123,
                                                          "licence": "CC-BY-4.0", "attribution": "…"}
        root/<name>/captions.json              optional: {"<image file name>": "caption", …}
        root/<name>/<image stem>.txt           optional: the caption of <image stem>.png (UTF-8)

    Each image's sides must lie in [:data:`MIN_IMAGE_SIDE_PX`, :data:`MAX_IMAGE_SIDE_PX`] (as
    the registration API requires) and it is resized to ``image_size`` with Pillow's
    antialiased bilinear filter (the aspect ratio is not kept). ``channels`` chooses the
    profile: 1 (the default, the MNIST profile and this loader's behaviour before color) decodes
    to 8-bit grayscale by :func:`decode_grayscale` (16-bit images scaled, an alpha channel
    dropped); 3 keeps the color, decoding by :func:`decode_rgb` (transparency composited on
    white). Files whose names start with ``.`` (``.DS_Store``) are ignored; every other file
    must be a readable image, ``holder.json``, ``captions.json`` or a sidecar caption. Holders
    are sorted by name; no two may share a payout address (compared case-insensitively).

    **Captions.** An image's caption comes from ``captions.json`` (keyed by the image's file
    name) or from a sidecar ``<stem>.txt``; each passes
    :func:`~offchain.data.captions.validate_caption` (UTF-8, NFC, stripped, 1 … 200
    characters, no control characters). If a folder has any caption source, every image must
    have exactly one caption; a folder with none gives a holder with ``captions=None`` (its
    images train on the null caption, see :func:`training_captions`).

    In ``holder.json`` the address may be EIP-55 or all-lowercase (converted to EIP-55); a
    mixed-case address with a wrong checksum is an error. The price is a non-negative int in wei,
    or a string of decimal digits. ``licence`` (SPDX id) and ``attribution`` are optional text.
    Without ``holder.json`` (or a key of it) the holder gets its **demo-only** address
    :func:`holder_address` ``(name)`` and ``default_reservation_price_wei``.

    Args:
        root: folder of holder folders.
        image_size: output side (int) or ``(height, width)`` in pixels.
        default_reservation_price_wei: price for holders whose ``holder.json`` does not set one.
        channels: 1 for grayscale images (n, height, width), 3 for RGB (n, height, width, 3).

    Returns:
        Holders with uint8 images of shape (n, height, width) or (n, height, width, 3),
        ``labels=None``, and captions, licence and attribution where the folder gives them.

    Raises:
        DataError: naming the file or folder: missing root, no holder folders, a file directly in
            ``root``, a sub-sub-folder, an unsupported extension, an unreadable or corrupt image,
            an image side outside the limits, an empty holder folder, a bad ``holder.json``
            (syntax, unknown key, bad address, negative or non-integer price, bad licence), a
            bad caption (see above: invalid JSON, a caption of a file that is not there, an
            invalid caption, an image without one, an image with two), two holders with one
            address (naming both), or ``channels`` other than 1 or 3.
    """
    root = Path(root)
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if height < 1 or width < 1:
        raise DataError(f"image_size must be positive, got {image_size}")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if not root.is_dir():
        raise DataError(f"holder folder root {root} does not exist or is not a directory")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    stray = [p for p in entries if not p.is_dir()]
    if stray:
        raise DataError(f"{stray[0]}: only holder folders may be in {root}, found a file")
    if not entries:
        raise DataError(f"{root} has no holder folders (expected {root}/<name>/*.png)")

    holders = []
    for folder in entries:
        image_files, sidecars = _holder_files(folder)
        meta = _read_holder_json(folder, default_reservation_price_wei)
        captions = _read_captions(folder, image_files, sidecars)
        images = np.stack([_read_image(p, height, width, channels) for p in image_files])
        try:
            holder = Holder(
                name=folder.name,
                address=meta.address,
                reservation_price_wei=meta.price_wei,
                images=images,
                captions=captions,
                licence=meta.licence,
                attribution=meta.attribution,
            )
        except DataError as exc:
            raise DataError(f"{folder}: {exc}") from exc
        holders.append(holder)
        logger.info("holder %s: %d images from %s", folder.name, len(images), folder)
    check_unique_addresses(holders)
    return holders


def _holder_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, sidecar caption files) of a holder folder, sorted by name.

    Raises:
        DataError: a sub-folder, an unsupported file, or no image.
    """
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    image_files, sidecars = [], []
    for path in files:
        if path.name in (HOLDER_JSON, CAPTIONS_JSON):
            continue
        if path.is_dir():
            raise DataError(f"{path}: sub-folders are not supported in a holder folder")
        if path.suffix.lower() == CAPTION_SUFFIX:
            sidecars.append(path)
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            image_files.append(path)
        else:
            raise DataError(
                f"{path}: unsupported file type {path.suffix!r}; expected one of "
                f"{sorted(IMAGE_EXTENSIONS)}, {HOLDER_JSON}, {CAPTIONS_JSON} or a sidecar "
                f"caption <image stem>{CAPTION_SUFFIX}"
            )
    if not image_files:
        raise DataError(f"holder folder {folder} has no images ({sorted(IMAGE_EXTENSIONS)})")
    return image_files, sidecars


def folder_captions(folder: Path, image_files: Sequence[Path]) -> dict[str, str] | None:
    """The captions of ``image_files`` (files in ``folder``), image file name → caption, by
    :func:`load_holder_folders`' rule (``captions.json`` and sidecar ``<stem>.txt`` files; all
    or none); other files of the folder are not looked at. None when there are none.

    Raises:
        DataError: as :func:`load_holder_folders` for the captions (an invalid caption, a
            caption of a file not in ``image_files``, an image without one when others have one).
    """
    folder = Path(folder)
    sidecars = [
        folder / f"{p.stem}{CAPTION_SUFFIX}"
        for p in image_files
        if (folder / f"{p.stem}{CAPTION_SUFFIX}").is_file()
    ]
    captions = _read_captions(folder, image_files, sidecars)
    if captions is None:
        return None
    return {p.name: text for p, text in zip(image_files, captions, strict=True)}


def _read_captions(
    folder: Path, image_files: Sequence[Path], sidecars: Sequence[Path]
) -> tuple[str, ...] | None:
    """One caption per image file (in ``image_files`` order) from ``captions.json`` and the
    sidecar ``.txt`` files, or None when the folder has neither (rule: :func:`load_holder_folders`).

    Raises:
        DataError: naming the file: unreadable or invalid JSON, not an object of strings, a
            caption of an image that is not in the folder, an invalid caption, a sidecar whose
            stem matches no image or several, two captions for one image, an image without one.
    """
    path = folder / CAPTIONS_JSON
    if not path.exists() and not sidecars:
        return None
    by_name = {p.name: p for p in image_files}
    found: dict[str, tuple[str, Path]] = {}  # image name -> (caption, source file)
    if path.exists():
        try:
            table = json.loads(path.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not valid UTF-8 JSON ({exc})") from exc
        if not isinstance(table, dict):
            raise DataError(
                f"{path}: expected a JSON object of image file name -> caption, "
                f"got {type(table).__name__}"
            )
        for name, text in table.items():
            if name not in by_name:
                raise DataError(
                    f"{path}: caption for {name!r}, which is not an image file of {folder}"
                )
            found[name] = (validate_caption(text, f"{path} [{name!r}]"), path)
    stems: dict[str, list[Path]] = {}
    for image in image_files:
        stems.setdefault(image.stem, []).append(image)
    for sidecar in sidecars:
        images = stems.get(sidecar.stem, [])
        if len(images) != 1:
            what = "no image" if not images else f"{len(images)} images ({[p.name for p in images]})"
            raise DataError(
                f"{sidecar}: sidecar caption matches {what} named {sidecar.stem}.*; it must "
                "caption exactly one image"
            )
        name = images[0].name
        if name in found:
            raise DataError(
                f"{images[0]}: two captions, in {found[name][1]} and in {sidecar}; keep one"
            )
        try:
            raw = sidecar.read_bytes()
        except OSError as exc:
            raise DataError(f"{sidecar}: cannot be read ({exc.strerror})") from exc
        found[name] = (validate_caption(raw, str(sidecar)), sidecar)
    missing = [p for p in image_files if p.name not in found]
    if missing:
        raise DataError(
            f"{missing[0]}: no caption, but {folder} has captions for other images; every image "
            f"needs one (in {CAPTIONS_JSON} or {missing[0].stem}{CAPTION_SUFFIX})"
            + (f" ({len(missing) - 1} more without)" if len(missing) > 1 else "")
        )
    return tuple(found[p.name][0] for p in image_files)


def check_unique_addresses(holders: Sequence[Holder]) -> None:
    """Refuse two holders with one payout address (case-insensitive): the pool pays per leaf,
    and one address would receive both holders' money under one key.

    Raises:
        DataError: naming both holders and the address.
    """
    seen: dict[str, str] = {}
    for holder in holders:
        first = seen.setdefault(holder.address.lower(), holder.name)
        if first != holder.name:
            raise DataError(
                f"holders {first!r} and {holder.name!r} have the same payout address "
                f"{holder.address}; each holder needs its own address"
            )


IMAGE_DECODE_ERRORS = (
    OSError,
    UnidentifiedImageError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
)
"""What Pillow raises for a corrupt, truncated or oversized image file."""


_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
"""Pillow modes of one 16-bit channel (``I``: 32-bit ints, as older Pillows open 16-bit PNGs)."""


def check_image_size(width: int, height: int) -> None:
    """Refuse an image whose width or height (pixels) lies outside
    [:data:`MIN_IMAGE_SIDE_PX`, :data:`MAX_IMAGE_SIDE_PX`].

    Raises:
        DataError: naming the size and the limits.
    """
    low, high = MIN_IMAGE_SIDE_PX, MAX_IMAGE_SIDE_PX
    if not (low <= width <= high and low <= height <= high):
        raise DataError(f"image is {width}x{height} px; each side must lie in [{low}, {high}]")


def decode_grayscale(img: Image.Image) -> Image.Image:
    """8-bit grayscale (mode ``L``) of an opened Pillow image, the one decoding of holders' images.

    8-bit modes go through Pillow's ``convert("L")`` (alpha dropped). One 16-bit channel
    (``I;16``, ``I;16B``, ``I`` with values in 0…65535), which ``convert`` would clip to 255
    (white), is scaled: ``round(v · 255 / 65535)``. Pillow already reduces 16-bit RGB/RGBA PNGs
    to 8 bits per channel.

    Raises:
        DataError: a mode with no 8-bit reading (floats, ``I`` values outside 0…65535).
        Pillow's decoding errors (:data:`IMAGE_DECODE_ERRORS`) for a corrupt file.
    """
    img.load()
    if img.mode not in _SIXTEEN_BIT_MODES:
        if img.mode == "F":
            raise DataError("image has floating-point pixels (mode F); save it as 8- or 16-bit")
        return img.convert("L")
    pixels = np.asarray(img).astype(np.int64)
    if pixels.size and (pixels.min() < 0 or pixels.max() > 0xFFFF):
        raise DataError(
            f"image of mode {img.mode} has values outside 0…65535; save it as 8- or 16-bit"
        )
    scaled = (pixels * 255 + 0x7FFF) // 0xFFFF
    return Image.fromarray(scaled.astype(np.uint8))


def decode_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB (mode ``RGB``) of an opened Pillow image, transparency composited on white.

    Images with an alpha channel or a transparent palette entry (``RGBA``, ``LA``, ``PA``,
    ``P`` / ``L`` / ``RGB`` with ``transparency``) are alpha-composited over an opaque white
    background; one 16-bit channel is read as by :func:`decode_grayscale` and replicated;
    everything else goes through Pillow's ``convert("RGB")``.

    Raises:
        DataError: as :func:`decode_grayscale` (float pixels, 16-bit values out of range).
        Pillow's decoding errors (:data:`IMAGE_DECODE_ERRORS`) for a corrupt file.
    """
    img.load()
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "F":
        return decode_grayscale(img).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _read_image(path: Path, height: int, width: int, channels: int = 1) -> np.ndarray:
    """uint8 (height, width) grayscale or (height, width, 3) RGB pixels of the image at ``path``."""
    try:
        with Image.open(path) as img:
            check_image_size(*img.size)
            decoded = decode_grayscale(img) if channels == 1 else decode_rgb(img)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
    except IMAGE_DECODE_ERRORS as exc:
        raise DataError(f"{path}: unreadable or corrupt image ({exc})") from exc
    if decoded.size != (width, height):
        decoded = decoded.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(decoded, dtype=np.uint8)


@dataclass(frozen=True)
class _HolderMeta:
    """What a holder folder's ``holder.json`` says, with the documented defaults."""

    address: str
    price_wei: int
    licence: str | None = None
    attribution: str | None = None


def _read_holder_json(folder: Path, default_price_wei: int) -> _HolderMeta:
    """The address (EIP-55), price (wei), licence and attribution of ``folder/holder.json``,
    with the documented defaults (:func:`load_holder_folders`)."""
    path = folder / HOLDER_JSON
    meta: dict[str, Any] = {}
    if path.exists():
        try:
            meta = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(meta, dict):
            raise DataError(f"{path}: expected a JSON object, got {type(meta).__name__}")
        unknown = set(meta) - _HOLDER_JSON_KEYS
        if unknown:
            raise DataError(
                f"{path}: unknown keys {sorted(unknown)}; allowed {sorted(_HOLDER_JSON_KEYS)}"
            )

    if "address" in meta:
        raw = meta["address"]
        if not isinstance(raw, str) or not is_address(raw):
            raise DataError(f"{path}: address {raw!r} is not a 20-byte hex address")
        if (
            raw[2:] != raw[2:].lower()
            and raw[2:] != raw[2:].upper()
            and not is_checksum_address(raw)
        ):
            raise DataError(
                f"{path}: address {raw} has a wrong EIP-55 checksum (expected {to_checksum_address(raw)})"
            )
        address = to_checksum_address(raw)
    else:
        address = holder_address(folder.name)
        logger.warning("%s: no address given; using the DEMO-ONLY address %s", folder, address)

    price = meta.get("reservation_price_wei", default_price_wei)
    if isinstance(price, str) and price.isascii() and price.isdigit():  # "²".isdigit() too
        price = int(price)
    if isinstance(price, bool) or not isinstance(price, int):
        raise DataError(f"{path}: reservation_price_wei must be an integer (wei), got {price!r}")
    if price < 0:
        raise DataError(f"{path}: reservation_price_wei must be >= 0, got {price}")
    licence, attribution = meta.get("licence"), meta.get("attribution")
    for key, value in (("licence", licence), ("attribution", attribution)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise DataError(f"{path}: {key} must be non-empty text, got {value!r}")
    if licence is not None and not _SPDX_EXPRESSION.match(licence):
        raise DataError(f"{path}: licence {licence!r} is not an SPDX licence id (e.g. CC-BY-4.0)")
    return _HolderMeta(address, price, licence, attribution)


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------


def training_set(
    holders: Sequence[Holder], participating: Sequence[bool] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The images of the (participating) holders stacked in holder order, with their owners.

    Args:
        holders: the campaign's holders; their images must share one shape.
        participating: bool (H,) mask; None: every holder.

    Returns:
        ``(images, holder_index)``: uint8 (N, H, W) or (N, H, W, 3), and int64 (N,), the index
        in ``holders`` of each image's owner.

    Raises:
        DataError: no holders chosen, a mask of the wrong length, or images of different shapes
            (sizes, or grayscale next to RGB).
    """
    chosen = _chosen_holders(holders, participating)
    shapes = {holders[i].images.shape[1:] for i in chosen}
    if len(shapes) != 1:
        raise DataError(f"holders' images differ in shape: {sorted(shapes)}")
    images = np.concatenate([holders[i].images for i in chosen]).astype(np.uint8, copy=False)
    holder_index = np.concatenate([np.full(holders[i].n_images, i, dtype=np.int64) for i in chosen])
    return images, holder_index


def training_captions(
    holders: Sequence[Holder], participating: Sequence[bool] | np.ndarray | None = None
) -> list[str]:
    """The captions of :func:`training_set`'s images, in the same order.

    An image of a holder without captions (``captions is None``) gets ``""``, the null caption:
    a text-conditioned backend trains it unconditionally.

    Args:
        holders: the campaign's holders.
        participating: bool (H,) mask; None: every holder.

    Returns:
        N strings, N = the participating holders' images.

    Raises:
        DataError: no holders chosen, or a mask of the wrong length.
    """
    captions: list[str] = []
    for i in _chosen_holders(holders, participating):
        holder = holders[i]
        captions.extend(holder.captions if holder.captions is not None else [""] * holder.n_images)
    return captions


def _chosen_holders(
    holders: Sequence[Holder], participating: Sequence[bool] | np.ndarray | None
) -> np.ndarray:
    """Indices of the participating holders (int64, ascending); refuses an empty choice."""
    mask = np.ones(len(holders), bool) if participating is None else np.asarray(participating, bool)
    if mask.shape != (len(holders),):
        raise DataError(f"participation mask has {mask.shape}, expected ({len(holders)},)")
    chosen = np.flatnonzero(mask)
    if chosen.size == 0:
        raise DataError("no holder chosen: the training set would be empty")
    return chosen


def dataset_manifest(holders: Sequence[Holder]) -> dict[str, Any]:
    """The holders' dataset manifest (what :func:`write_dataset_manifest` writes).

    Layout::

        {"holders": [{"name", "address", "reservation_price_wei" (decimal string, wei),
                      "n_images", "image_shape": [H, W] or [H, W, 3],
                      "image_hashes": [hex, …],
                      "captions": [text, …], "licence": SPDX id, "attribution": text}, …],
         "manifest_hash": hex}

    ``captions``, ``licence`` and ``attribution`` appear only for a holder that has them (not
    None), so the manifest of holders without them (the MNIST demo's) is what it always was.

    ``manifest_hash`` is the SHA-256 of the ``holders`` list serialised as compact JSON with
    sorted keys (``json.dumps(holders, sort_keys=True, separators=(",", ":"))``), so any change
    of an address, price or image changes it. Prices are decimal strings (a JavaScript client
    reads them exactly and can recompute the hash); run folders written before that rule carry
    the hash over integer prices, :func:`manifest_hashes` gives both for the resume check.

    Raises:
        DataError: no holders, or two holders with the same name or payout address.
    """
    if not holders:
        raise DataError("cannot build a dataset manifest without holders")
    names = [h.name for h in holders]
    if len(set(names)) != len(names):
        raise DataError(f"holder names must be unique, got {names}")
    check_unique_addresses(holders)
    entries = _manifest_entries(holders, price=str)
    return {"holders": entries, "manifest_hash": _entries_hash(entries)}


def manifest_hashes(holders: Sequence[Holder]) -> frozenset[str]:
    """Every ``manifest_hash`` these holders may carry in a run folder: the current one (prices
    as decimal strings) and the one of folders written before that rule (prices as integers).

    Raises:
        DataError: as :func:`dataset_manifest`.
    """
    legacy = _entries_hash(_manifest_entries(holders, price=int))
    return frozenset({dataset_manifest(holders)["manifest_hash"], legacy})


def _manifest_entries(holders: Sequence[Holder], price: Callable[[int], Any]) -> list[dict[str, Any]]:
    entries = []
    for h in holders:
        entry: dict[str, Any] = {
            "name": h.name,
            "address": h.address,
            "reservation_price_wei": price(int(h.reservation_price_wei)),
            "n_images": h.n_images,
            "image_shape": [int(s) for s in h.images.shape[1:]],
            "image_hashes": list(h.image_hashes),
        }
        if h.captions is not None:
            entry["captions"] = list(h.captions)
        if h.licence is not None:
            entry["licence"] = h.licence
        if h.attribution is not None:
            entry["attribution"] = h.attribution
        entries.append(entry)
    return entries


def _entries_hash(entries: list[dict[str, Any]]) -> str:
    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_dataset_manifest(holders: Sequence[Holder], path: Path) -> dict[str, Any]:
    """Write the holders' dataset manifest (:func:`dataset_manifest`) as JSON and return it.

    Raises:
        DataError: no holders, or two holders with the same name or payout address.
    """
    manifest = dataset_manifest(holders)
    write_json(path, manifest)
    return manifest
