"""The run folder's rounds as the API reads them: which rounds there are, their status and
summary, a cache of each round's parsed allocation, payout tree and claims (:class:`RoundIndex`)
and of what the round pages show (:class:`RoundPage`), and a store of encoded response bodies
kept per version of what they are made of (:class:`BodyCache`).

A round is served once its ``round_NNN/allocation.json`` exists; the other artifacts
(``signature.json``, ``submission.json``, ``claims.json``, ``finality.json``) advance its status.
"""

from __future__ import annotations

import gzip
import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from eth_utils import to_checksum_address

from offchain.allocation import PayoutTree, parse_wei, wei_str
from offchain.api.schemas import RoundSummary
from offchain.layout import RoundPaths
from offchain.utils import read_json

if TYPE_CHECKING:
    from offchain.chain.claims_watch import ClaimedView

__all__ = [
    "GZIP_MIN_BYTES",
    "PAGE_FILES",
    "BodyCache",
    "FileKey",
    "PageKey",
    "RoundCache",
    "RoundIndex",
    "RoundKey",
    "RoundPage",
    "RoundWarmer",
    "VersionedCache",
    "accepts_gzip",
    "app_bodies",
    "artifact_status",
    "claimed_by_round",
    "file_key",
    "read_deployment",
    "round_ids",
    "round_status",
    "round_summary",
]

FileKey = tuple[str, int, int] | None
"""``(path, st_mtime_ns, st_size)`` of an artifact, or None when it does not exist."""
RoundKey = tuple[FileKey, FileKey, FileKey]
"""A round's version: :data:`FileKey` of ``allocation.json``, ``tree.json``, ``claims.json``."""
PAGE_FILES: tuple[str, ...] = (
    "allocation", "signature", "submission", "decision", "manifest", "claims", "finality",
)
"""The :class:`~offchain.layout.RoundPaths` artifacts a :class:`RoundPage` is read from."""
PageKey = tuple[FileKey, ...]
"""A round page's version: the :data:`FileKey` of each of :data:`PAGE_FILES`, in that order."""


def file_key(path: Path) -> FileKey:
    """The :data:`FileKey` of ``path`` (one ``stat``)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (str(path), st.st_mtime_ns, st.st_size)


def read_deployment(path: Path | None) -> dict[str, Any] | None:
    """The deployment file's JSON object (``scripts``/``offchain deploy`` write it), or None when
    ``path`` is None, the file is missing or unreadable, or it is not a JSON object."""
    if path is None or not Path(path).is_file():
        return None
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def round_ids(run_dir: Path) -> list[int]:
    """Ids of the rounds with an ``allocation.json`` in ``run_dir``, ascending; a folder whose
    suffix is not ASCII digits (a stray ``round_001.bak``) is skipped."""
    ids = []
    for child in run_dir.glob("round_*"):
        suffix = child.name.removeprefix("round_")
        if not (suffix.isascii() and suffix.isdigit()):
            continue
        paths = RoundPaths(run_dir, int(suffix))
        if paths.allocation.exists():
            ids.append(paths.round_id)
    return sorted(ids)


def round_status(paths: RoundPaths) -> str:
    """How far the node took the round: ``allocated``, ``signed``, ``posted`` or ``claimed``
    (the latest artifact present)."""
    if paths.claims.exists():
        return "claimed"
    if paths.submission.exists():
        return "posted"
    if paths.signature.exists():
        return "signed"
    return "allocated"


def artifact_status(paths: RoundPaths) -> str:
    """A round's status in the state database's vocabulary (``pending``, ``challengeable``,
    ``finalized``), read from its artifacts."""
    if paths.finality.exists():
        return "finalized"
    if paths.submission.exists():
        return "challengeable"
    return "pending"


def round_summary(paths: RoundPaths) -> RoundSummary:
    """A round's status, budget (wei, decimal string), Merkle root and transaction.

    Raises:
        WeiFormatError: ``allocation.json``'s ``budget_wei`` is not a wei amount.
    """
    allocation = read_json(paths.allocation)
    submission = read_json(paths.submission) if paths.submission.exists() else {}
    return RoundSummary(
        round_id=paths.round_id,
        status=round_status(paths),
        budget_wei=wei_str(parse_wei(allocation["budget_wei"], "budget_wei"), "budget_wei"),
        merkle_root=allocation["merkle_root"],
        tx_hash=submission.get("tx_hash"),
    )


@dataclass(frozen=True)
class RoundIndex:
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
    def load(cls, paths: RoundPaths, tree_exists: bool, claims_exist: bool) -> RoundIndex:
        """Parse the round's ``allocation.json`` (and ``tree.json``, ``claims.json`` if they
        exist)."""
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
        """The Merkle proof of payout ``index`` (hex, leaf to root).

        Raises:
            FileNotFoundError: the round has no ``tree.json``.
            AllocationError: ``index`` is not in the tree.
        """
        if index in self.proofs:
            return self.proofs[index]
        if self.tree is None:  # as before the cache: a paid holder needs the round's tree
            raise FileNotFoundError(f"no tree.json for payout index {index}")
        return self.tree.proof(index)  # raises AllocationError for an index not in the tree

    def is_claimed(self, round_id: int, index: int, view: ClaimedView | None) -> bool:
        """Whether payout ``index`` of round ``round_id`` is claimed: as the chain's ``view``
        says, or without one (None) as the node's ``claims.json`` says."""
        return view.is_claimed(round_id, index) if view is not None else index in self.claimed


@dataclass(frozen=True)
class RoundPage:
    """What the round pages and their endpoints show of one round, read once per version of
    its :data:`PAGE_FILES` (parsed JSON, so a response is built without reading files).

    Attributes:
        round_id: The round.
        allocation: ``allocation.json``.
        signature: ``signature.json`` (None before signing).
        submission: ``submission.json`` (None before posting).
        decision: ``decision.json`` (None without one).
        credits: Holder index → ``(licence, attribution)`` of ``manifest.json`` (None where not
            stated; empty without a manifest or holder entries).
        status: :func:`round_status` of the version read.
        artifact_status: :func:`artifact_status` of the version read.
    """

    round_id: int
    allocation: dict[str, Any]
    signature: dict[str, Any] | None
    submission: dict[str, Any] | None
    decision: dict[str, Any] | None
    credits: dict[int, tuple[str | None, str | None]]
    status: str
    artifact_status: str

    @staticmethod
    def key(paths: RoundPaths) -> PageKey:
        """The page's version: the :data:`FileKey` of each of :data:`PAGE_FILES`."""
        return tuple(file_key(getattr(paths, name)) for name in PAGE_FILES)

    @classmethod
    def load(cls, paths: RoundPaths, key: PageKey) -> RoundPage:
        """Read the round's page artifacts (those present in ``key``).

        Raises:
            OSError, ValueError: ``allocation.json`` (or a present artifact) cannot be read.
        """
        present = dict(zip(PAGE_FILES, key, strict=True))

        def doc(name: str) -> dict[str, Any] | None:
            return read_json(getattr(paths, name)) if present[name] is not None else None

        manifest = doc("manifest") or {}
        credits = {
            int(h["index"]): (h.get("licence"), h.get("attribution"))
            for h in manifest.get("holders") or []
            if isinstance(h, dict) and "index" in h
        }
        if present["claims"] is not None:
            status = "claimed"
        elif present["submission"] is not None:
            status = "posted"
        else:
            status = "signed" if present["signature"] is not None else "allocated"
        if present["finality"] is not None:
            artifacts = "finalized"
        else:
            artifacts = "challengeable" if present["submission"] is not None else "pending"
        return cls(
            round_id=paths.round_id,
            allocation=read_json(paths.allocation),
            signature=doc("signature"),
            submission=doc("submission"),
            decision=doc("decision"),
            credits=credits,
            status=status,
            artifact_status=artifacts,
        )

    def summary(self) -> RoundSummary:
        """As :func:`round_summary` of the version read.

        Raises:
            WeiFormatError: ``budget_wei`` is not a wei amount.
        """
        return RoundSummary(
            round_id=self.round_id,
            status=self.status,
            budget_wei=wei_str(parse_wei(self.allocation["budget_wei"], "budget_wei"),
                               "budget_wei"),
            merkle_root=self.allocation["merkle_root"],
            tx_hash=(self.submission or {}).get("tx_hash"),
        )


K = TypeVar("K")
V = TypeVar("V")


class VersionedCache(Generic[K, V]):
    """One parsed value per slot (a round's folder), kept while the slot's version
    key (:data:`FileKey` tuples of the files it was read from) is unchanged. Thread-safe: one
    thread parses a new version, the others wait for its result instead of parsing it again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Hashable, tuple[K, V]] = {}

    def is_current(self, slot: Hashable, key: K) -> bool:
        """Whether version ``key`` of ``slot`` is parsed already (a :meth:`get` costs nothing)."""
        found = self._entries.get(slot)
        return found is not None and found[0] == key

    def get(self, slot: Hashable, key: K, load: Callable[[], V]) -> V:
        """The value of ``slot`` at version ``key``, calling ``load()`` only for a new version.

        Raises:
            Whatever ``load`` raises (nothing is stored then)."""
        found = self._entries.get(slot)
        if found is not None and found[0] == key:
            return found[1]
        with self._lock:
            found = self._entries.get(slot)
            if found is None or found[0] != key:
                found = (key, load())
                self._entries[slot] = found
        return found[1]


class RoundCache:
    """Parsed round artifacts, keyed by each file's ``(path, mtime_ns, size)``.

    Artifacts are written atomically (a new file replaces the old one), so a changed key means a
    new version: a new or rewritten round is picked up on the next request, and an unchanged one
    costs three ``stat`` calls instead of parsing JSON and rebuilding its Merkle tree.
    :meth:`warm` parses every round ahead of requests (the server calls it at start-up and from
    a :class:`RoundWarmer` thread, so a posted round is ready before anyone asks for it).
    """

    def __init__(self) -> None:
        self._rounds: VersionedCache[RoundKey, RoundIndex] = VersionedCache()
        self._pages: VersionedCache[PageKey, RoundPage] = VersionedCache()

    @staticmethod
    def key(paths: RoundPaths) -> RoundKey:
        """The round's version: the :data:`FileKey` of its allocation, tree and claims."""
        return (file_key(paths.allocation), file_key(paths.tree), file_key(paths.claims))

    def get(self, paths: RoundPaths, key: RoundKey | None = None) -> RoundIndex:
        """The round's :class:`RoundIndex`, parsed again only when an artifact changed.

        Args:
            paths: The round's artifacts.
            key: Its :meth:`key`, when the caller has just read it (saves the ``stat`` calls).
        """
        key = self.key(paths) if key is None else key
        return self._rounds.get(
            paths.dir, key, lambda: RoundIndex.load(paths, key[1] is not None, key[2] is not None))

    def is_current(self, paths: RoundPaths, key: RoundKey) -> bool:
        """Whether the round's version ``key`` is parsed already (a :meth:`get` costs nothing)."""
        return self._rounds.is_current(paths.dir, key)

    def page(self, paths: RoundPaths, key: PageKey | None = None) -> RoundPage:
        """The round's :class:`RoundPage`, read again only when one of its artifacts changed.

        Args:
            paths: The round's artifacts.
            key: Its :meth:`RoundPage.key`, when the caller has just read it.

        Raises:
            As :meth:`RoundPage.load`.
        """
        key = RoundPage.key(paths) if key is None else key
        return self._pages.get(paths.dir, key, lambda: RoundPage.load(paths, key))

    def warm(self, run_dir: Path) -> int:
        """Parse every round of ``run_dir`` whose artifacts changed (its :class:`RoundIndex`
        and :class:`RoundPage`); return how many rounds had something parsed.

        A round that fails to parse (a half-written run folder) is skipped here: the request that
        asks for it gets the error, as without warming.
        """
        parsed = 0
        for round_id in round_ids(run_dir):
            paths = RoundPaths(run_dir, round_id)
            key, page_key = self.key(paths), RoundPage.key(paths)
            if self.is_current(paths, key) and self._pages.is_current(paths.dir, page_key):
                continue
            try:
                self.get(paths, key)
                self.page(paths, page_key)
            except (OSError, ValueError, KeyError, TypeError):  # includes Allocation/Wei errors
                continue
            parsed += 1
        return parsed


GZIP_MIN_BYTES = 8192
"""Bodies at least this long are also kept gzip-encoded (:meth:`BodyCache.gzipped`)."""


class BodyCache:
    """Encoded response bodies, each kept with the version of what it was built from.

    A body is named by any hashable (``("round", 3)``) and stored with its version (any value
    compared with ``==``: file keys, a database version...). :meth:`get` returns the stored body
    while the version is the same and builds (and stores) a new one when it changed, so a
    repeated request costs the version's computation and a dictionary lookup. A body of at least
    :data:`GZIP_MIN_BYTES` is gzip-encoded once when stored (a round of 1,000 holders: 200 KB of
    JSON, about a fifth of it encoded). One body per name: the store is bounded by the names used
    (routes × rounds or campaigns).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: dict[Hashable, tuple[Any, bytes, bytes | None]] = {}

    def cached(self, name: Hashable, version: Any) -> bytes | None:
        """The body stored for ``name`` at ``version``, or None."""
        hit = self._bodies.get(name)
        return hit[1] if hit is not None and hit[0] == version else None

    def gzipped(self, name: Hashable, version: Any) -> bytes | None:
        """The gzip encoding of the body stored for ``name`` at ``version``; None when none is
        stored or it is shorter than :data:`GZIP_MIN_BYTES`."""
        hit = self._bodies.get(name)
        return hit[2] if hit is not None and hit[0] == version else None

    def get(self, name: Hashable, version: Any, build: Callable[[], bytes]) -> bytes:
        """The body of ``name`` at ``version``: the stored one, or ``build()``'s (then stored,
        with its gzip encoding when long).

        Raises:
            Whatever ``build`` raises (nothing is stored then).
        """
        body = self.cached(name, version)
        if body is None:
            body = build()
            packed = (gzip.compress(body, compresslevel=6, mtime=0)
                      if len(body) >= GZIP_MIN_BYTES else None)
            with self._lock:
                self._bodies[name] = (version, body, packed)
        return body

    def __len__(self) -> int:
        return len(self._bodies)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header value accepts ``gzip`` (named or ``*``, with a
    quality above 0)."""
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            quality = params.strip().removeprefix("q=").strip() if params else "1"
            try:
                return float(quality) > 0
            except ValueError:
                return False
    return False


_BODIES_LOCK = threading.Lock()
_CLAIMED_MEMO: list[tuple[ClaimedView, dict[int, frozenset[int]]]] = []


def app_bodies(state: Any) -> BodyCache:
    """The app's :class:`BodyCache` of page and endpoint bodies (``state``: ``app.state``),
    made on first use."""
    bodies = getattr(state, "page_bodies", None)
    if bodies is None:
        with _BODIES_LOCK:
            bodies = getattr(state, "page_bodies", None)
            if bodies is None:
                bodies = state.page_bodies = BodyCache()
    return bodies


def claimed_by_round(view: ClaimedView) -> dict[int, frozenset[int]]:
    """Round id → claimed payout indices of the chain's ``view`` (computed once per view: a
    body built from one round's flags stays valid across views that agree on that round)."""
    memo = _CLAIMED_MEMO[0] if _CLAIMED_MEMO else None
    if memo is not None and memo[0] is view:
        return memo[1]
    by_round: dict[int, set[int]] = {}
    for round_id, index in view.leaves:
        by_round.setdefault(round_id, set()).add(index)
    frozen = {r: frozenset(indices) for r, indices in by_round.items()}
    _CLAIMED_MEMO[:] = [(view, frozen)]
    return frozen


class RoundWarmer:
    """A daemon thread that keeps a :class:`RoundCache` parsed: every ``interval_s`` seconds it
    calls :meth:`RoundCache.warm`, so a round posted (or rewritten) while the server runs is
    parsed within about ``interval_s`` instead of on the first request that needs it.

    Args:
        cache: The cache to fill.
        run_dir: The run folder to watch.
        interval_s: Seconds between two scans (a scan of an unchanged folder is one directory
            listing and three ``stat`` calls per round).
        on_parsed: Called with the number of rounds parsed after a scan that parsed some (the
            server freezes the garbage collector's view of them, :func:`gc.freeze`).
    """

    def __init__(self, cache: RoundCache, run_dir: Path, interval_s: float = 0.5,
                 on_parsed: Callable[[int], None] | None = None) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.cache, self.run_dir, self.interval_s = cache, Path(run_dir), interval_s
        self.on_parsed = on_parsed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="round-warmer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to stop and wait for it (at most ``timeout_s``)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                parsed = self.cache.warm(self.run_dir)
            except OSError:  # the run folder vanished for a moment: try again next scan
                continue
            if parsed and self.on_parsed is not None:
                self.on_parsed(parsed)
