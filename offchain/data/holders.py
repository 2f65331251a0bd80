"""Data holders: who owns which training images, where they are paid, and what they ask for.

Sources:

* :func:`mnist_holders` — the demo: the shipped MNIST test split divided among ``n_holders``
  holders of unequal sizes and distinct class mixes, with deterministic **demo-only** keys.
* :func:`split_holders` — that split of any labelled images; over a registered dataset
  (``mnist``, scikit-learn ``digits``, scikit-image ``lfw``) it is
  :func:`offchain.data.splits.dataset_holders`, e.g. for the policy calibration's sweeps.
* :func:`load_holder_folders` — a user's own data, one folder of images per holder.

:func:`write_dataset_manifest` records the holders (addresses, prices, image hashes) as JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
from offchain.data.mnist import DEFAULT_MNIST_ROOT, load_mnist
from offchain.errors import DataError
from offchain.utils import write_json

__all__ = [
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
    "dominant_classes",
    "holder_address",
    "holder_private_key",
    "image_hash",
    "load_holder_folders",
    "mnist_holders",
    "split_holders",
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
_HOLDER_JSON_KEYS = frozenset({"address", "reservation_price_wei"})


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
    """uint8 (n, H, W) grayscale images, 0 = black; n ≥ 1."""
    labels: np.ndarray | None = None
    """int64 (n,) class labels where known (MNIST digits), else None."""

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
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
            raise DataError(
                f"holder {self.name!r}: images must be a uint8 array (n, H, W), got "
                f"{getattr(images, 'dtype', type(images).__name__)} "
                f"{getattr(images, 'shape', '')}"
            )
        if len(images) == 0:
            raise DataError(f"holder {self.name!r} has no images")
        view = images.view()
        view.flags.writeable = False
        object.__setattr__(self, "images", view)
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

    @property
    def n_images(self) -> int:
        """Number of images n."""
        return int(self.images.shape[0])

    @cached_property
    def image_hashes(self) -> tuple[str, ...]:
        """Hex SHA-256 of each image, in order (see :func:`image_hash`)."""
        return tuple(image_hash(image) for image in self.images)


def image_hash(image: np.ndarray) -> str:
    """Hex SHA-256 of one uint8 (H, W) image: ``sha256(b"<H>x<W>:" + row-major pixel bytes)``.

    The shape is part of the hash so that equal bytes in a different shape hash differently.
    """
    if image.dtype != np.uint8 or image.ndim != 2:
        raise DataError(f"image_hash needs a uint8 (H, W) image, got {image.dtype} {image.shape}")
    height, width = image.shape
    digest = hashlib.sha256(f"{height}x{width}:".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


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
) -> list[Holder]:
    """Load one holder per sub-folder of ``root``.

    Layout::

        root/<name>/*.png | *.jpg | *.jpeg     the holder's images (at least one)
        root/<name>/holder.json                optional: {"address": "0x…", "reservation_price_wei": 123}

    Each image's sides must lie in [:data:`MIN_IMAGE_SIDE_PX`, :data:`MAX_IMAGE_SIDE_PX`] (as
    the registration API requires); it is decoded to 8-bit grayscale by
    :func:`decode_grayscale` (16-bit images scaled, an alpha channel dropped) and resized to
    ``image_size`` with Pillow's antialiased bilinear filter (the aspect ratio is not kept). Files whose names start with ``.`` (``.DS_Store``) are not images and are ignored;
    every other file must be a readable image or ``holder.json``. Holders are sorted by name;
    no two may share a payout address (compared case-insensitively).

    In ``holder.json`` the address may be EIP-55 or all-lowercase (converted to EIP-55); a
    mixed-case address with a wrong checksum is an error. The price is a non-negative int in wei,
    or a string of decimal digits. Without ``holder.json`` (or a key of it) the holder gets its
    **demo-only** address :func:`holder_address` ``(name)`` and ``default_reservation_price_wei``.

    Args:
        root: folder of holder folders.
        image_size: output side (int) or ``(height, width)`` in pixels.
        default_reservation_price_wei: price for holders whose ``holder.json`` does not set one.

    Returns:
        Holders with uint8 images of shape (n, height, width) and ``labels=None``.

    Raises:
        DataError: naming the file or folder: missing root, no holder folders, a file directly in
            ``root``, a sub-sub-folder, an unsupported extension, an unreadable or corrupt image,
            an image side outside the limits, an empty holder folder, a bad ``holder.json``
            (syntax, unknown key, bad address, negative or non-integer price), or two holders
            with one address (naming both).
    """
    root = Path(root)
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if height < 1 or width < 1:
        raise DataError(f"image_size must be positive, got {image_size}")
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
        files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        image_files = []
        for path in files:
            if path.name == HOLDER_JSON:
                continue
            if path.is_dir():
                raise DataError(f"{path}: sub-folders are not supported in a holder folder")
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise DataError(
                    f"{path}: unsupported file type {path.suffix!r}; "
                    f"expected one of {sorted(IMAGE_EXTENSIONS)}"
                )
            image_files.append(path)
        if not image_files:
            raise DataError(f"holder folder {folder} has no images ({sorted(IMAGE_EXTENSIONS)})")
        address, price = _read_holder_json(folder, default_reservation_price_wei)
        images = np.stack([_read_image(p, height, width) for p in image_files])
        holders.append(
            Holder(name=folder.name, address=address, reservation_price_wei=price, images=images)
        )
        logger.info("holder %s: %d images from %s", folder.name, len(images), folder)
    check_unique_addresses(holders)
    return holders


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


def _read_image(path: Path, height: int, width: int) -> np.ndarray:
    """uint8 (height, width) grayscale pixels of the image at ``path``."""
    try:
        with Image.open(path) as img:
            check_image_size(*img.size)
            gray = decode_grayscale(img)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
    except IMAGE_DECODE_ERRORS as exc:
        raise DataError(f"{path}: unreadable or corrupt image ({exc})") from exc
    if gray.size != (width, height):
        gray = gray.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)


def _read_holder_json(folder: Path, default_price_wei: int) -> tuple[str, int]:
    """(EIP-55 address, price in wei) from ``folder/holder.json``, with the documented defaults."""
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
    return address, price


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------


def training_set(
    holders: Sequence[Holder], participating: Sequence[bool] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The images of the (participating) holders stacked in holder order, with their owners.

    Args:
        holders: the campaign's holders; their images must share one size.
        participating: bool (H,) mask; None: every holder.

    Returns:
        ``(images, holder_index)``: uint8 (N, H, W) and int64 (N,), the index in ``holders``
        of each image's owner.

    Raises:
        DataError: no holders chosen, a mask of the wrong length, or images of different sizes.
    """
    mask = np.ones(len(holders), bool) if participating is None else np.asarray(participating, bool)
    if mask.shape != (len(holders),):
        raise DataError(f"participation mask has {mask.shape}, expected ({len(holders)},)")
    chosen = np.flatnonzero(mask)
    if chosen.size == 0:
        raise DataError("no holder chosen: the training set would be empty")
    shapes = {holders[i].images.shape[1:] for i in chosen}
    if len(shapes) != 1:
        raise DataError(f"holders' images differ in size: {sorted(shapes)}")
    images = np.concatenate([holders[i].images for i in chosen]).astype(np.uint8, copy=False)
    holder_index = np.concatenate([np.full(holders[i].n_images, i, dtype=np.int64) for i in chosen])
    return images, holder_index


def dataset_manifest(holders: Sequence[Holder]) -> dict[str, Any]:
    """The holders' dataset manifest (what :func:`write_dataset_manifest` writes).

    Layout::

        {"holders": [{"name", "address", "reservation_price_wei" (decimal string, wei),
                      "n_images", "image_shape": [H, W], "image_hashes": [hex, …]}, …],
         "manifest_hash": hex}

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
    return [
        {
            "name": h.name,
            "address": h.address,
            "reservation_price_wei": price(int(h.reservation_price_wei)),
            "n_images": h.n_images,
            "image_shape": [int(s) for s in h.images.shape[1:]],
            "image_hashes": list(h.image_hashes),
        }
        for h in holders
    ]


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
