"""The holders folder on disk: its layout, the registration lock, listing, atomic publication
of a holder folder and recovery after a crash.

Layout, exactly what :func:`offchain.data.holders.load_holder_folders` reads::

    <holders_dir>/<name>/<sha256 of the file>.png | .jpg     the images, as uploaded
    <holders_dir>/<name>/holder.json                         {"address", "reservation_price_wei"}
    <holders_dir>/<name>/captions.json                       optional: {"<file name>": caption}
    <holders_dir>/<name>/.registration.json                  {"address", "issued_at", "signature"}

Hidden entries (a leading ``.``) are the service's own and ignored by the loader: the lock file
``.registration.lock``, the temporary folders ``.tmp-register-*`` a holder folder is written in
before it is renamed into place, the ``.old-*`` folders a replacement moves aside, and the
replacement journal ``.replace-journal.json``.

**Crash safety.** A replacement records its plan in ``.replace-journal.json``, moves the
address's old folders aside (``.old-<name>-…``) and renames the new one into place;
:func:`recover_holders_dir` (run by the API at start-up and before each registration, under the
registration lock) completes or rolls back an interrupted replacement from that journal, so a
crash never leaves a holder missing.

Who may write which folder (signatures, uniqueness, demo keys) is
:mod:`offchain.api.registration`; this module only reads and writes the folder.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from eth_utils import is_address, to_checksum_address

from offchain.data.holders import CAPTIONS_JSON, HOLDER_JSON, IMAGE_EXTENSIONS, holder_address
from offchain.errors import DataError
from offchain.faults import fault_point
from offchain.jsonsafe import UnsafeJSON, loads_bounded
from offchain.utils import write_json

try:  # advisory lock across processes (POSIX); the thread lock below covers one process
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "NAME_PATTERN",
    "RECORD_FILE",
    "RegisteredHolder",
    "UnreadableHolder",
    "count_registered",
    "demo_address",
    "folder_owner",
    "holder_folders",
    "list_registered",
    "locked",
    "publish_holder",
    "read_meta",
    "recover_holders_dir",
    "recover_locked",
    "stored_issued_at",
]

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""Holder names: 1–64 characters, letters, digits, ``_ . -``, not starting with ``.`` or ``-``."""

_LOCK_FILE = ".registration.lock"
RECORD_FILE = ".registration.json"
"""Inside a holder folder: ``{"address", "issued_at", "signature"}`` of the registration that
wrote it (hidden from the loader); written first, it also marks the service's own
``.tmp-register-*`` folders."""
_JOURNAL = ".replace-journal.json"
_MAX_META_BYTES = 64 * 1024
"""Largest ``holder.json`` read (ours are < 200 bytes)."""
demo_address = functools.lru_cache(maxsize=4096)(holder_address)
""":func:`offchain.data.holders.holder_address`, cached (≈ 2 ms each: an elliptic-curve
multiplication): the address a folder without one in ``holder.json`` is paid to."""
_TMP_PREFIX = ".tmp-register-"
_OLD_PREFIX = ".old-"


@dataclass(frozen=True)
class RegisteredHolder:
    """A holder as stored.

    Attributes:
        address: EIP-55 address.
        name: folder name.
        reservation_price_wei: price in wei.
        n_images: image files in the folder.
        image_sha256: hex SHA-256 of each image file, sorted (the stored file names' stems).
        images_root: ``0x`` + :func:`~offchain.api.registration.images_root` of
            ``image_sha256``.
    """

    address: str
    name: str
    reservation_price_wei: int
    n_images: int
    image_sha256: tuple[str, ...] = ()
    images_root: str | None = None


# ---------------------------------------------------------------------------------------------
# Lock and reading
# ---------------------------------------------------------------------------------------------

_thread_lock = threading.Lock()


@contextmanager
def locked(holders_dir: Path) -> Iterator[None]:
    """Serialise registrations in this process (thread lock) and across processes (flock)."""
    with _thread_lock:
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(holders_dir / _LOCK_FILE, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class UnreadableHolder(DataError):
    """A holder folder's ``holder.json`` is not a JSON object with a valid address and price."""


def read_meta(folder: Path) -> dict | None:
    """``folder/holder.json`` as a dict (None when there is none).

    Raises:
        UnreadableHolder: unreadable, not JSON, not an object, a bad address or price.
    """
    path = folder / HOLDER_JSON
    if not path.is_file():
        if path.exists() or path.is_symlink():
            raise UnreadableHolder(f"holder folder {folder.name!r}: {HOLDER_JSON} is not a file")
        return None
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_MAX_META_BYTES + 1)
    except OSError as exc:
        raise UnreadableHolder(
            f"holder folder {folder.name!r}: {HOLDER_JSON} cannot be read ({exc.strerror})"
        ) from exc
    try:
        meta = loads_bounded(raw, max_bytes=_MAX_META_BYTES, what=HOLDER_JSON)
    except UnsafeJSON as exc:  # names the file and why: not valid JSON, too large, too deep
        raise UnreadableHolder(f"holder folder {folder.name!r}: {exc}") from exc
    if not isinstance(meta, dict):
        raise UnreadableHolder(f"holder folder {folder.name!r}: {HOLDER_JSON} is not an object")
    address = meta.get("address")
    if address is not None and not (isinstance(address, str) and is_address(address)):
        raise UnreadableHolder(
            f"holder folder {folder.name!r}: {HOLDER_JSON} address {address!r} is not an address"
        )
    price = meta.get("reservation_price_wei", 0)
    if isinstance(price, str) and price.isascii() and price.isdigit():
        price = int(price)
    if isinstance(price, bool) or not isinstance(price, int) or price < 0:
        raise UnreadableHolder(
            f"holder folder {folder.name!r}: {HOLDER_JSON} reservation_price_wei {price!r} is "
            "not a non-negative integer"
        )
    return {**meta, "reservation_price_wei": price}


def folder_owner(folder: Path) -> str | None:
    """The EIP-55 address in ``holder.json``; None for a folder without one (a demo/CLI folder,
    paid to the demo-derived address of its name, whose key anyone can compute).

    Raises:
        UnreadableHolder: as :func:`read_meta`.
    """
    meta = read_meta(folder)
    if meta is None or meta.get("address") is None:
        return None
    return to_checksum_address(meta["address"])


def stored_issued_at(folder: Path) -> int:
    """``issued_at`` of the registration that wrote ``folder`` (0 if it has no record)."""
    try:
        value = json.loads((folder / RECORD_FILE).read_text()).get("issued_at", 0)
    except (OSError, ValueError, AttributeError):
        return 0
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def holder_folders(holders_dir: Path) -> list[Path]:
    """The holder folders under ``holders_dir`` (not hidden), by name."""
    return sorted(p for p in holders_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def count_registered(holders_dir: Path) -> int:
    """The number of holder folders under ``holders_dir`` (one ``iterdir``, no file reads)."""
    holders_dir = Path(holders_dir)
    return len(holder_folders(holders_dir)) if holders_dir.is_dir() else 0


def list_registered(holders_dir: Path) -> list[RegisteredHolder]:
    """The holders stored under ``holders_dir`` (address, name, price, image count), by name.

    A folder without an address in ``holder.json`` is listed with the demo address of its name
    (what the loader pays); a folder whose ``holder.json`` is unreadable is skipped with a
    logged warning, so it does not hide the others.
    """
    holders_dir = Path(holders_dir)
    if not holders_dir.is_dir():
        return []
    found = []
    for folder in holder_folders(holders_dir):
        try:
            meta = read_meta(folder) or {}
        except UnreadableHolder as exc:
            logger.warning("skipping holder folder %s: %s", folder, exc)
            continue
        owner = meta.get("address")
        files = [
            p
            for p in folder.iterdir()
            if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        ]
        found.append(
            RegisteredHolder(
                address=to_checksum_address(owner) if owner else demo_address(folder.name),
                name=folder.name,
                reservation_price_wei=meta.get("reservation_price_wei", 0),
                n_images=len(files),
            )
        )
    return found


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def publish_holder(
    holders_dir: Path,
    name: str,
    record: dict[str, object],
    files: Sequence[tuple[str, bytes]],
    meta: dict[str, str],
    replaced: Sequence[Path],
    captions: dict[str, str] | None = None,
) -> None:
    """Write holder folder ``name`` atomically, replacing the folders ``replaced``.

    Everything is written into a hidden temporary folder, synced, then renamed into place by
    :func:`_move_into_place`; a failure removes the temporary folder and leaves the holders
    folder as it was. Call under :func:`locked`.

    Args:
        holders_dir: the holders folder (exists).
        name: the holder folder's name (checked against :data:`NAME_PATTERN` by the caller).
        record: the registration record, written first as :data:`RECORD_FILE`.
        files: ``(stored file name, bytes)`` of each image.
        meta: ``holder.json``'s content (``address``, ``reservation_price_wei``).
        replaced: the folders of the same address this one replaces (moved aside, then
            deleted).
        captions: stored file name → caption (validated by the caller), written as
            ``captions.json`` (UTF-8); None: no captions file.
    """
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=holders_dir))
    try:
        (tmp / RECORD_FILE).write_text(  # first: marks the folder as the service's own
            json.dumps(record, indent=2) + "\n"
        )
        for file_name, data in files:
            (tmp / file_name).write_bytes(data)
        (tmp / HOLDER_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        if captions is not None:
            (tmp / CAPTIONS_JSON).write_text(
                json.dumps(captions, indent=2, ensure_ascii=False, sort_keys=True) + "\n",
                encoding="utf-8",
            )
        _sync_folder(tmp)
        _move_into_place(tmp, holders_dir / name, replaced)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _sync_folder(folder: Path) -> None:
    """fsync the files of ``folder`` so the rename publishes complete files."""
    for path in folder.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _move_into_place(tmp: Path, target: Path, replaced: Sequence[Path]) -> None:
    """Rename ``tmp`` to ``target``, first moving the ``replaced`` folders aside (restored on an
    exception, deleted on success). The plan is written to the journal before the first rename,
    so that :func:`recover_holders_dir` can undo or finish it after a crash."""
    holders_dir = target.parent
    stamp = f"{os.getpid()}-{time.time_ns()}"
    aside = [(f, f.with_name(f"{_OLD_PREFIX}{f.name}-{stamp}")) for f in replaced]
    journal = holders_dir / _JOURNAL
    if aside:
        plan = {
            "tmp": tmp.name,
            "target": target.name,
            "aside": [[f.name, b.name] for f, b in aside],
        }
        write_json(journal, plan)
    moved: list[tuple[Path, Path]] = []
    try:
        for folder, backup in aside:
            folder.rename(backup)
            moved.append((folder, backup))
        if aside:
            fault_point("register:aside")
        tmp.rename(target)
    except BaseException:
        for folder, backup in reversed(moved):
            backup.rename(folder)
        journal.unlink(missing_ok=True)
        raise
    if aside:
        fault_point("register:published")
    for _, backup in aside:
        shutil.rmtree(backup, ignore_errors=True)
    journal.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Recovery after a crash
# ---------------------------------------------------------------------------------------------


def recover_holders_dir(holders_dir: Path) -> list[str]:
    """Undo or finish a replacement interrupted by a crash, and remove the service's leftover
    temporary folders, under the registration lock.

    * ``.replace-journal.json`` present: if its ``.tmp-register-*`` folder still exists, the new
      registration was never published: the ``.old-*`` folders it names are renamed back (when
      their name is free) and the temporary folder is removed; otherwise the new one is live and
      the ``.old-*`` folders it names are removed. Then the journal is removed.
    * ``.tmp-register-*`` folders holding the service's marker (``.registration.json``), or
      empty, are removed; others are left alone.
    * An ``.old-<name>-<pid>-<ns>`` folder no journal names (left by an older version) is renamed
      back to ``<name>`` if that name is free and no live folder has its address; otherwise it
      is left with a warning.

    Returns:
        One line per action (each also logged as a warning); empty when nothing was left over.

    Raises:
        DataError: an unreadable or malformed journal (repair by hand).
        OSError: the folder cannot be listed, or a rename or removal fails.
    """
    holders_dir = Path(holders_dir)
    if not holders_dir.is_dir():
        return []
    with locked(holders_dir):
        return recover_locked(holders_dir)


def recover_locked(holders_dir: Path) -> list[str]:
    """:func:`recover_holders_dir`'s work; the caller holds the lock."""
    done: list[str] = []
    journal = holders_dir / _JOURNAL
    if journal.exists():
        done += _replay_journal(holders_dir, journal)
    for path in sorted(holders_dir.iterdir()):
        if path.is_symlink() or not path.is_dir():
            continue
        if path.name.startswith(_TMP_PREFIX):
            if (path / RECORD_FILE).is_file():
                shutil.rmtree(path)
                done.append(f"removed the unfinished registration folder {path.name}")
            elif not any(path.iterdir()):
                path.rmdir()
                done.append(f"removed the empty registration folder {path.name}")
        elif path.name.startswith(_OLD_PREFIX):
            done += _restore_orphan(holders_dir, path)
    for line in done:
        logger.warning("holders folder %s: %s", holders_dir, line)
    return done


def _journal_plan(journal: Path) -> tuple[str, list[tuple[str, str]]]:
    """``(temporary folder name, [(holder name, backup name)])`` of a journal, names checked."""
    try:
        plan = json.loads(journal.read_text())
        tmp_name = plan["tmp"]
        aside = [(str(a), str(b)) for a, b in plan["aside"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{journal}: unreadable replacement journal ({exc}); repair by hand"
        ) from exc
    names = [tmp_name, *(a for a, _ in aside), *(b for _, b in aside)]
    if not (
        isinstance(tmp_name, str)
        and tmp_name.startswith(_TMP_PREFIX)
        and all(NAME_PATTERN.fullmatch(a) and b.startswith(_OLD_PREFIX) for a, b in aside)
        and all("/" not in n and n not in (".", "..") for n in names)
    ):
        raise DataError(f"{journal}: replacement journal names unexpected folders; repair by hand")
    return tmp_name, aside


def _replay_journal(holders_dir: Path, journal: Path) -> list[str]:
    tmp_name, aside = _journal_plan(journal)
    done: list[str] = []
    tmp = holders_dir / tmp_name
    if tmp.is_dir():  # the new registration was never published: undo
        for name, backup in aside:
            if (holders_dir / backup).is_dir() and not (holders_dir / name).exists():
                (holders_dir / backup).rename(holders_dir / name)
                done.append(f"restored holder {name!r} (its replacement was interrupted)")
        shutil.rmtree(tmp)
        done.append(f"removed the unpublished registration folder {tmp_name}")
    else:  # published: finish
        for _, backup in aside:
            if (holders_dir / backup).is_dir():
                shutil.rmtree(holders_dir / backup)
                done.append(f"removed {backup}, replaced by a completed registration")
    journal.unlink()
    return done


def _restore_orphan(holders_dir: Path, backup: Path) -> list[str]:
    """Rename an ``.old-<name>-<pid>-<ns>`` folder no journal names back, when safe."""
    name, _, stamp = backup.name.removeprefix(_OLD_PREFIX).rpartition("-")
    name, _, pid = name.rpartition("-")
    if not (NAME_PATTERN.fullmatch(name) and pid.isdigit() and stamp.isdigit()):
        return []
    try:
        owner = folder_owner(backup)
    except UnreadableHolder as exc:
        logger.warning("holders folder %s: left %s alone: %s", holders_dir, backup.name, exc)
        return []
    live = (holders_dir / name).exists() or (
        owner is not None and any(_owner_or_none(f) == owner for f in holder_folders(holders_dir))
    )
    if live:
        logger.warning(
            "holders folder %s: left %s alone (holder %r or its address is live)",
            holders_dir,
            backup.name,
            name,
        )
        return []
    backup.rename(holders_dir / name)
    return [f"restored holder {name!r} from {backup.name} (a replacement was interrupted)"]


def _owner_or_none(folder: Path) -> str | None:
    try:
        return folder_owner(folder)
    except UnreadableHolder:
        return None
