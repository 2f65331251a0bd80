"""The shipped MNIST test split (10,000 digits), checksum-verified and parsed from IDX.

Files (``data/mnist/`` under the project root, see its README for provenance and licence)::

    t10k-images-idx3-ubyte.gz   gzip of IDX3: magic 2051, count, rows, cols (big-endian uint32),
                                then count·rows·cols uint8 pixels, row-major, 0 = background
    t10k-labels-idx1-ubyte.gz   gzip of IDX1: magic 2049, count (big-endian uint32),
                                then count uint8 labels in 0..9
    SHA256SUMS                  ``<hex sha256>  <file name>`` per line

Every file is checked against ``SHA256SUMS`` before it is parsed; nothing is read from the
network.
"""

from __future__ import annotations

import gzip
import logging
import struct
import zlib
from pathlib import Path

import numpy as np

from offchain.errors import DataError
from offchain.utils import sha256_file

__all__ = [
    "DEFAULT_MNIST_ROOT",
    "IMAGES_FILE",
    "LABELS_FILE",
    "load_mnist",
    "parse_idx_images",
    "parse_idx_labels",
    "read_sha256sums",
]

logger = logging.getLogger(__name__)

DEFAULT_MNIST_ROOT = Path(__file__).resolve().parents[2] / "data" / "mnist"
"""``<project root>/data/mnist``: the project root is the parent of the ``offchain`` package."""

IMAGES_FILE = "t10k-images-idx3-ubyte.gz"
LABELS_FILE = "t10k-labels-idx1-ubyte.gz"
SUMS_FILE = "SHA256SUMS"

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension


def load_mnist(root: Path = DEFAULT_MNIST_ROOT) -> tuple[np.ndarray, np.ndarray]:
    """Load the MNIST test split after verifying both files' SHA-256.

    Args:
        root: folder holding the two ``.gz`` IDX files and ``SHA256SUMS``.

    Returns:
        ``(images, labels)``: images uint8 of shape (10000, 28, 28), 0 = background, 255 = ink;
        labels int64 of shape (10000,), digits 0..9. Both arrays are fresh and writable.

    Raises:
        DataError: a missing file, a checksum mismatch (naming the file and both hashes), a
            corrupt gzip stream, a bad IDX header, a truncated or over-long payload, or image
            and label counts that differ.
    """
    root = Path(root)
    sums = read_sha256sums(root / SUMS_FILE)
    images_path = _verified(root, IMAGES_FILE, sums)
    labels_path = _verified(root, LABELS_FILE, sums)
    images = parse_idx_images(_gunzip(images_path), source=str(images_path))
    labels = parse_idx_labels(_gunzip(labels_path), source=str(labels_path))
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    logger.debug("loaded MNIST from %s: %d images %s", root, len(images), images.shape[1:])
    return images, labels


def read_sha256sums(path: Path) -> dict[str, str]:
    """Parse a ``sha256sum``-style file into ``{file name: lowercase hex digest}``.

    Raises:
        DataError: the file is missing or a line is not ``<64 hex digits>  <name>``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checksum file {path} is missing")
    sums: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        digest = parts[0].lower()
        if len(parts) != 2 or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise DataError(f"{path}:{lineno}: expected '<sha256 hex>  <file name>', got {line!r}")
        name = parts[1].strip().lstrip("*")  # '*' marks binary mode in sha256sum's output
        sums[name] = digest
    return sums


def parse_idx_images(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse an uncompressed IDX3 image file.

    Args:
        data: the decompressed file contents.
        source: a name for error messages (the file path).

    Returns:
        uint8 array of shape (count, rows, cols).

    Raises:
        DataError: wrong magic number, a header shorter than 16 bytes, or a payload that is not
            exactly ``count·rows·cols`` bytes.
    """
    if len(data) < 16:
        raise DataError(f"{source}: IDX image header needs 16 bytes, file has {len(data)}")
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != _IDX_IMAGES_MAGIC:
        raise DataError(
            f"{source}: IDX image magic number is {magic}, expected {_IDX_IMAGES_MAGIC}"
        )
    expected = count * rows * cols
    payload = len(data) - 16
    if payload != expected:
        state = "truncated" if payload < expected else "has trailing bytes"
        raise DataError(
            f"{source}: {state}: header announces {count}×{rows}×{cols} = {expected} pixel bytes, "
            f"found {payload}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols).copy()


def parse_idx_labels(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse an uncompressed IDX1 label file.

    Args:
        data: the decompressed file contents.
        source: a name for error messages (the file path).

    Returns:
        int64 array of shape (count,), values in 0..9.

    Raises:
        DataError: wrong magic number, a header shorter than 8 bytes, a payload that is not
            exactly ``count`` bytes, or a label outside 0..9.
    """
    if len(data) < 8:
        raise DataError(f"{source}: IDX label header needs 8 bytes, file has {len(data)}")
    magic, count = struct.unpack(">II", data[:8])
    if magic != _IDX_LABELS_MAGIC:
        raise DataError(
            f"{source}: IDX label magic number is {magic}, expected {_IDX_LABELS_MAGIC}"
        )
    payload = len(data) - 8
    if payload != count:
        state = "truncated" if payload < count else "has trailing bytes"
        raise DataError(f"{source}: {state}: header announces {count} labels, found {payload}")
    labels = np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64)
    if count and labels.max() > 9:
        raise DataError(f"{source}: label {int(labels.max())} is outside 0..9")
    return labels


def _verified(root: Path, name: str, sums: dict[str, str]) -> Path:
    """``root/name`` after checking its SHA-256 against ``sums``."""
    path = root / name
    if name not in sums:
        raise DataError(f"{root / SUMS_FILE} has no checksum for {name}")
    if not path.is_file():
        raise DataError(f"{path} is missing (expected sha256 {sums[name]})")
    actual = sha256_file(path)
    if actual != sums[name]:
        raise DataError(f"checksum mismatch for {path}: expected sha256 {sums[name]}, got {actual}")
    return path


def _gunzip(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: not a readable gzip stream ({exc})") from exc
