"""One holder's overview for the holder page: every campaign and round an address took part in,
with its contribution, copyright loss, payment, claim status and leaf (index, amount, Merkle
proof), answered in one request (``GET /holders/{address}/overview``).

What is parsed per round (``allocation.json``, ``contributions.json``, ``copyright.json``) is
kept per version of those files (:class:`RoundScores`), and the payout tree's proofs and the
node's claims come from the shared :class:`~offchain.api.rounds_view.RoundCache`; the encoded
body of an address is kept per :class:`OverviewGeneration` (the rounds' file versions, the
deployment file's version and the chain's claimed view), so a repeated request costs a
directory listing, a few ``stat`` calls and a dictionary lookup.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter

from offchain.allocation import parse_wei, wei_str
from offchain.api.rounds_view import (
    FileKey,
    RoundCache,
    RoundKey,
    VersionedCache,
    file_key,
    read_deployment,
    round_ids,
)
from offchain.api.schemas import ClaimedSource
from offchain.layout import RoundPaths
from offchain.utils import read_json

if TYPE_CHECKING:
    from offchain.chain.claims_watch import ClaimedView

__all__ = [
    "CampaignOverview",
    "HolderLeaf",
    "HolderOverview",
    "HolderOverviews",
    "HolderRound",
    "OverviewGeneration",
    "RoundScores",
    "ScoredRow",
]


# ---------------------------------------------------------------------------------------------
# Response bodies
# ---------------------------------------------------------------------------------------------


class HolderLeaf(BaseModel):
    """A payout leaf as ``claimRounds`` takes it (``LeafClaim``): round, index, amount (wei,
    decimal string) and Merkle proof (hex, leaf to root)."""

    round_id: int
    index: int
    amount_wei: str
    proof: list[str]


class HolderRound(BaseModel):
    """The address's part in one round (one entry per allocation row of the address: two
    holders sharing a payout address get one each)."""

    round_id: int
    status: str
    """How far the node took the round (``allocated``, ``signed``, ``posted``, ``claimed``)."""
    index: int
    name: str
    participating: bool
    contribution: float | None
    """``contributions.json``'s normalized share of the round (0 … 1); None without the file."""
    copyright_loss: float | None
    """``copyright.json``'s calibrated loss (0 … 1); None without the file."""
    amount_wei: str
    claimed: bool | None
    """Whether the payment is claimed (see ``claimed_source``); None for a zero payment."""
    leaf: HolderLeaf | None
    """What ``claimRounds`` needs; None for a zero payment or a round without ``tree.json``."""


class CampaignOverview(BaseModel):
    """The address's rounds of one campaign and their totals (wei, decimal strings)."""

    campaign_id: int | None
    """The deployment file's campaign; None before a deployment (nothing to claim yet)."""
    chain_id: int | None
    pool: str | None
    token: str | None
    rounds: list[HolderRound]
    total_wei: str
    claimed_wei: str
    unclaimed_wei: str
    """Sum of the unclaimed leaves (what one ``claimRounds`` would pay)."""
    unclaimed: int
    """How many leaves are not claimed yet (what one ``claimRounds`` would claim)."""


class HolderOverview(BaseModel):
    address: str
    claimed_source: ClaimedSource
    campaigns: list[CampaignOverview]
    """Empty when the address took part in no round of this node."""


_ADAPTER = TypeAdapter(HolderOverview)


# ---------------------------------------------------------------------------------------------
# Per-round parse
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredRow:
    """One allocation row: holder ``index``, ``name``, ``participating``, ``amount`` (wei),
    normalized ``contribution`` and copyright ``loss`` (None where the round has no such file
    or the file has no entry for the row)."""

    index: int
    name: str
    participating: bool
    amount: int
    contribution: float | None
    loss: float | None


ScoresKey = tuple[FileKey, FileKey, FileKey]
"""A round's version for :class:`RoundScores`: allocation, contributions and copyright files."""


def _column(path: Path, key: str, exists: bool) -> list[Any]:
    """``path``'s list ``key`` (empty when the file does not exist)."""
    if not exists:
        return []
    values = read_json(path).get(key)
    return values if isinstance(values, list) else []


def _at(values: list[Any], position: int) -> float | None:
    return float(values[position]) if position < len(values) else None


@dataclass(frozen=True)
class RoundScores:
    """A round's rows per lowercase address (in allocation order), parsed once per version
    (lowercase, not EIP-55: a thousand checksums would cost more than the whole parse).

    The score files list one value per allocation row, in the same order
    (:func:`offchain.oracle.report.round_table` reads them the same way).
    """

    rows: dict[str, tuple[ScoredRow, ...]]

    @staticmethod
    def key(paths: RoundPaths) -> ScoresKey:
        return (file_key(paths.allocation), file_key(paths.contributions),
                file_key(paths.copyright))

    @classmethod
    def load(cls, paths: RoundPaths, key: ScoresKey) -> RoundScores:
        """Parse the round's files (``key`` says which exist).

        Raises:
            OSError, ValueError, KeyError: an artifact is missing or does not parse.
            WeiFormatError: an ``amount_wei`` is not a wei amount.
        """
        allocation = read_json(paths.allocation)
        normalized = _column(paths.contributions, "normalized", key[1] is not None)
        losses = _column(paths.copyright, "loss", key[2] is not None)
        rows: dict[str, list[ScoredRow]] = {}
        for position, holder in enumerate(allocation["holders"]):
            rows.setdefault(str(holder["address"]).lower(), []).append(ScoredRow(
                index=int(holder["index"]),
                name=str(holder["name"]),
                participating=bool(holder["participating"]),
                amount=parse_wei(holder["amount_wei"], "amount_wei"),
                contribution=_at(normalized, position),
                loss=_at(losses, position),
            ))
        return cls({account: tuple(found) for account, found in rows.items()})


# ---------------------------------------------------------------------------------------------
# Generations and the body cache
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverviewGeneration:
    """One version of everything the overview reads: per round its id, paths,
    :class:`RoundCache` key, :class:`RoundScores` key and status; the deployment file (its
    version and contents) and the chain's ``view`` (None: claim flags from ``claims.json``)."""

    rounds: tuple[tuple[int, RoundPaths, RoundKey, ScoresKey, str], ...]
    deployment_key: FileKey
    deployment: dict[str, Any] | None
    view: ClaimedView | None

    def same_as(self, other: OverviewGeneration | None) -> bool:
        return (
            other is not None
            and self.view is other.view  # a refreshed view is a new object
            and self.deployment_key == other.deployment_key
            and [r[:1] + r[2:] for r in self.rounds] == [r[:1] + r[2:] for r in other.rounds]
        )


def _status(paths: RoundPaths) -> str:
    """As :func:`offchain.api.rounds_view.round_status` (the latest artifact present)."""
    for path, status in ((paths.claims, "claimed"), (paths.submission, "posted"),
                         (paths.signature, "signed")):
        if path.exists():
            return status
    return "allocated"


class HolderOverviews:
    """Encoded :class:`HolderOverview` bodies of the current generation, per address, over the
    parsed rounds (:class:`RoundScores` here, proofs and node claims in ``cache``).

    Only addresses that took part in some round are stored, so the memory is bounded by the run
    folder's holders; a new generation empties the store. Thread-safe.

    Args:
        cache: The shared parsed rounds (payout trees, proofs, ``claims.json``).
    """

    def __init__(self, cache: RoundCache) -> None:
        self.cache = cache
        self._lock = threading.Lock()
        self._scores: VersionedCache[ScoresKey, RoundScores] = VersionedCache()
        self._generation: OverviewGeneration | None = None
        self._bodies: dict[str, bytes] = {}

    def generation(self, run_dir: Path, deployment_file: Path,
                   view: ClaimedView | None) -> OverviewGeneration:
        """The current generation: a directory listing and about ten ``stat`` calls per round,
        and the deployment file read again only when it changed."""
        rounds = []
        for round_id in round_ids(run_dir):
            paths = RoundPaths(run_dir, round_id)
            rounds.append((round_id, paths, RoundCache.key(paths), RoundScores.key(paths),
                           _status(paths)))
        key = file_key(deployment_file)
        current = self._generation
        if current is not None and current.deployment_key == key:
            deployment = current.deployment
        else:
            deployment = read_deployment(deployment_file) if key is not None else None
        return OverviewGeneration(tuple(rounds), key, deployment, view)

    def scores(self, paths: RoundPaths, key: ScoresKey) -> RoundScores:
        """The round's :class:`RoundScores`, parsed again only when a file changed."""
        return self._scores.get(paths.dir, key, lambda: RoundScores.load(paths, key))

    def warm(self, run_dir: Path) -> int:
        """Parse every round of ``run_dir`` whose files changed (for a start-up or a watcher
        thread); a round that does not parse is skipped (its request gets the error). Returns
        how many rounds were parsed."""
        parsed = 0
        for round_id in round_ids(run_dir):
            paths = RoundPaths(run_dir, round_id)
            key = RoundScores.key(paths)
            if self._scores.is_current(paths.dir, key):
                continue
            try:
                self.scores(paths, key)
                self.cache.get(paths)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            parsed += 1
        return parsed

    def is_parsed(self, generation: OverviewGeneration) -> bool:
        """Whether :meth:`body` will parse nothing for ``generation``."""
        return all(
            self.cache.is_current(paths, rkey) and self._scores.is_current(paths.dir, skey)
            for _, paths, rkey, skey, _ in generation.rounds
        )

    def cached(self, generation: OverviewGeneration, account: str) -> bytes | None:
        """The stored body of ``account`` for ``generation``, or None."""
        if not generation.same_as(self._generation):
            return None
        return self._bodies.get(account)

    def body(self, generation: OverviewGeneration, account: str) -> bytes:
        """The encoded :class:`HolderOverview` of checksummed ``account`` (stored when the
        address took part in a round). Parses rounds that are not yet: call it off the event
        loop unless :meth:`is_parsed`.

        Raises:
            As :meth:`RoundScores.load` and :meth:`RoundCache.get`.
        """
        overview = self.model(generation, account)
        body = _ADAPTER.dump_json(overview)
        if overview.campaigns:
            with self._lock:
                if not generation.same_as(self._generation):
                    self._generation, self._bodies = generation, {}
                self._bodies[account] = body
        return body

    def model(self, generation: OverviewGeneration, account: str) -> HolderOverview:
        """The :class:`HolderOverview` of checksummed ``account`` for ``generation``."""
        view = generation.view
        rows: list[HolderRound] = []
        for round_id, paths, rkey, skey, status in generation.rounds:
            found = self.scores(paths, skey).rows.get(account.lower())
            if not found:
                continue
            index = self.cache.get(paths, rkey)
            for row in found:
                leaf = None
                if row.amount > 0 and index.tree is not None:
                    leaf = HolderLeaf(round_id=round_id, index=row.index,
                                      amount_wei=wei_str(row.amount, "amount_wei"),
                                      proof=index.proof(row.index))
                rows.append(HolderRound(
                    round_id=round_id, status=status, index=row.index, name=row.name,
                    participating=row.participating, contribution=row.contribution,
                    copyright_loss=row.loss, amount_wei=wei_str(row.amount, "amount_wei"),
                    claimed=None if row.amount == 0 else index.is_claimed(round_id, row.index,
                                                                          view),
                    leaf=leaf,
                ))
        source: ClaimedSource = "chain" if view is not None else "node"
        campaigns = [_campaign(rows, generation.deployment)] if rows else []
        return HolderOverview(address=account, claimed_source=source, campaigns=campaigns)


def _campaign(rows: list[HolderRound], deployment: dict[str, Any] | None) -> CampaignOverview:
    """The run folder's campaign (the deployment file's) with ``rows`` and their totals."""
    deployment = deployment or {}
    total = sum(int(r.amount_wei) for r in rows)
    claimed = sum(int(r.amount_wei) for r in rows if r.claimed)
    open_rows = [r for r in rows if r.claimed is False and r.leaf is not None]
    campaign_id = deployment.get("campaign_id")
    chain_id = deployment.get("chain_id")
    return CampaignOverview(
        campaign_id=None if campaign_id is None else int(campaign_id),
        chain_id=None if chain_id is None else int(chain_id),
        pool=deployment.get("pool"),
        token=deployment.get("token"),
        rounds=rows,
        total_wei=wei_str(total, "total_wei"),
        claimed_wei=wei_str(claimed, "claimed_wei"),
        unclaimed_wei=wei_str(sum(int(r.amount_wei) for r in open_rows), "unclaimed_wei"),
        unclaimed=len(open_rows),
    )
