"""Small shared helpers: seeding, hashing, atomic artifact writes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from offchain.faults import fault_point


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and (when installed) torch's generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:  # the chain-only install has no torch
        return
    torch.manual_seed(seed)


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Write a file through ``write(tmp_path)`` and move it into place atomically.

    A crash mid-write leaves no half-written ``path``: either the old file (or none) or the
    complete new one. ``write`` receives a temporary path in the same directory.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        fault_point(f"write:{target.name}")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def atomic_dir(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Fill a folder through ``write(tmp_dir)`` and rename it into place: the folder version of
    :func:`atomic_write`.

    ``write`` receives a fresh temporary sibling folder (``.<name>.tmp-<pid>``, created); a
    crash mid-write leaves no half-written ``path``. ``path`` must be absent or an empty folder
    (a rename cannot replace a full one; callers check that).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        write(tmp)
        if target.exists():
            target.rmdir()
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (ints stay exact: wei amounts are ints)."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON artifact."""
    return json.loads(Path(path).read_text())


def write_npy(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Atomically write a NumPy array (``.npy``)."""

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)

    return atomic_write(path, _write)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bytes):
        return "0x" + obj.hex()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
