"""A campaign's report for its sponsors: the parameters, each round's budget and allocation, the
payments per holder per round with their claim flags, and the totals (``GET
/campaigns/{campaign_id}/report`` and the ``GET /sponsor`` page).

Each round's ``allocation.json`` is parsed once per version of the file (its ``(path, mtime_ns,
size)``, as :class:`~offchain.api.rounds_view.RoundCache` does), and the encoded report is kept
per generation (the rounds' versions and the chain's claimed view, as
:class:`~offchain.api.claims_cache.ClaimsResponses` does): a repeated request costs a directory
listing and a few ``stat`` calls per round.

Money is wei as decimal strings in JSON (Python ints here); times are Unix seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, TypeAdapter

from offchain.allocation import parse_wei, wei_str
from offchain.api.rounds_view import (
    FileKey,
    RoundCache,
    RoundKey,
    VersionedCache,
    artifact_status,
    file_key,
    round_ids,
    round_status,
)
from offchain.layout import RoundPaths
from offchain.utils import read_json

if TYPE_CHECKING:
    from offchain.chain.claims_watch import ClaimedView

__all__ = [
    "CampaignParameters",
    "CampaignReport",
    "HolderRow",
    "ReportRound",
    "ReportTotals",
    "RoundPayments",
    "SponsorReports",
    "build_report",
]

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


# -- response models -------------------------------------------------------------------------


class CampaignParameters(BaseModel):
    """The campaign's parameters as the deployment file records them (None: not recorded, or a
    campaign other than the deployment file's own)."""

    total_budget_wei: str | None
    round_cap_wei: str | None
    holder_cap_wei: str | None
    challenge_window_s: int | None
    posting_deadline: int | None
    """Unix seconds; no funding and no round from then on."""
    claim_deadline: int | None
    """Unix seconds; sponsors may reclaim their share from then on."""
    sponsor: str | None
    """The account that created and first funded the campaign."""


class ReportRound(BaseModel):
    """One round: its budget, what it allocated and what of that is claimed (wei)."""

    round_id: int
    status: str
    """How far the node took it: ``allocated``, ``signed``, ``posted`` or ``claimed``."""
    state: str
    """From its artifacts: ``pending``, ``challengeable`` or ``finalized``."""
    budget_wei: str
    allocated_wei: str
    """Sum of the holders' payments."""
    claimed_wei: str
    """Sum of the claimed payments (see :attr:`CampaignReport.claimed_source`)."""
    holders_paid: int
    """Holders with a positive payment."""


class HolderRow(BaseModel):
    """One holder (name and payout address) across the campaign's rounds.

    ``payments_wei[i]`` and ``claimed[i]`` belong to ``CampaignReport.rounds[i]``: ``"0"`` and
    None where the holder was not paid in that round (or was not in it).
    """

    name: str
    address: str
    payments_wei: list[str]
    claimed: list[bool | None]
    total_wei: str


class ReportTotals(BaseModel):
    """The campaign's totals (wei): ``allocated = claimed + unclaimed``; ``unallocated`` is
    the deployment file's total budget minus what the rounds allocated (None without a budget;
    0 when the rounds allocated more, from top-ups after the deployment, which only the chain
    knows)."""

    allocated_wei: str
    claimed_wei: str
    unclaimed_wei: str
    unallocated_wei: str | None


class CampaignReport(BaseModel):
    """Everything the sponsor page shows that the node knows, in one response."""

    campaign_id: int
    chain_id: int
    pool: str
    token: str | None
    native: bool
    """The campaign pays in the chain's native coin."""
    parameters: CampaignParameters
    rounds: list[ReportRound]
    holders: list[HolderRow]
    """In order of first appearance (round, then payout index)."""
    totals: ReportTotals
    claimed_source: Literal["chain", "node"]
    """``chain``: claim flags from the pool's events; ``node``: from the node's claims.json."""


_ADAPTER = TypeAdapter(CampaignReport)


# -- one round, parsed once per version -----------------------------------------------------


@dataclass(frozen=True)
class RoundPayments:
    """One round's ``allocation.json`` as the report needs it.

    Attributes:
        budget_wei: The round's budget.
        payments: ``(index, name, address, amount_wei)`` per holder, index order; the address
            as the file spells it (the node writes them checksummed; checksumming 1,000
            addresses per round again would cost most of a cold report).
    """

    budget_wei: int
    payments: tuple[tuple[int, str, str, int], ...]

    @classmethod
    def load(cls, paths: RoundPaths) -> RoundPayments:
        """Parse ``paths.allocation``.

        Raises:
            OSError / ValueError: the file is missing or not JSON.
            WeiFormatError: an amount is not a wei amount.
        """
        allocation = read_json(paths.allocation)
        payments = sorted(
            (int(h["index"]), str(h["name"]), str(h["address"]),
             parse_wei(h["amount_wei"], "amount_wei"))
            for h in allocation["holders"]
        )
        return cls(parse_wei(allocation["budget_wei"], "budget_wei"), tuple(payments))


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def parameters_of(deployment: dict[str, Any], own: bool) -> CampaignParameters:
    """The deployment file's campaign fields (all None for another campaign, ``own`` False)."""
    d = deployment if own else {}
    return CampaignParameters(
        total_budget_wei=_str(d.get("total_budget_wei")),
        round_cap_wei=_str(d.get("round_cap_wei")),
        holder_cap_wei=_str(d.get("holder_cap_wei")),
        challenge_window_s=_int(d.get("challenge_window_s")),
        posting_deadline=_int(d.get("posting_deadline")),
        claim_deadline=_int(d.get("claim_deadline")),
        sponsor=d.get("sponsor"),
    )


def build_report(
    deployment: dict[str, Any],
    campaign_id: int,
    rounds: list[tuple[int, RoundPaths, RoundPayments]],
    is_claimed: Any,
    source: Literal["chain", "node"],
) -> CampaignReport:
    """The report of ``campaign_id`` from its parsed ``rounds`` ``(round_id, paths, payments)``.

    Args:
        deployment: The parsed deployment file.
        is_claimed: ``is_claimed(round_id, paths, index) -> bool`` for a paid leaf.
        source: Where ``is_claimed`` reads from.
    """
    own = campaign_id == deployment.get("campaign_id")
    # A holder is its name and payout address (compared case-insensitively).
    holders: dict[tuple[str, str], tuple[str, list[int], list[bool | None]]] = {}
    out_rounds: list[ReportRound] = []
    total_allocated = total_claimed = 0
    n = len(rounds)
    for position, (round_id, paths, rnd) in enumerate(rounds):
        allocated = claimed = paid = 0
        for index, name, address, amount in rnd.payments:
            key = (name, address.lower())
            row = holders.get(key)
            if row is None:
                row = holders[key] = (address, [0] * n, [None] * n)
            if amount <= 0:
                continue
            is_paid_claimed = bool(is_claimed(round_id, paths, index))
            row[1][position] += amount
            row[2][position] = is_paid_claimed and row[2][position] is not False
            allocated += amount
            paid += 1
            claimed += amount if is_paid_claimed else 0
        total_allocated += allocated
        total_claimed += claimed
        out_rounds.append(ReportRound(
            round_id=round_id, status=round_status(paths), state=artifact_status(paths),
            budget_wei=str(rnd.budget_wei), allocated_wei=str(allocated),
            claimed_wei=str(claimed), holders_paid=paid,
        ))
    params = parameters_of(deployment, own)
    budget = _int(params.total_budget_wei)
    token = deployment.get("token")
    return CampaignReport(
        campaign_id=campaign_id,
        chain_id=int(deployment["chain_id"]),
        pool=deployment["pool"],
        token=token,
        native=token in (None, ZERO_ADDRESS),
        parameters=params,
        rounds=out_rounds,
        holders=[
            HolderRow(name=name, address=address, payments_wei=[str(a) for a in amounts],
                      claimed=flags, total_wei=str(sum(amounts)))
            for (name, _), (address, amounts, flags) in holders.items()
        ],
        totals=ReportTotals(
            allocated_wei=wei_str(total_allocated, "allocated_wei"),
            claimed_wei=wei_str(total_claimed, "claimed_wei"),
            unclaimed_wei=wei_str(total_allocated - total_claimed, "unclaimed_wei"),
            unallocated_wei=None if budget is None else str(max(0, budget - total_allocated)),
        ),
        claimed_source=source,
    )


# -- the cache -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Generation:
    deployment: FileKey
    campaign_id: int
    rounds: tuple[tuple[int, RoundKey], ...]
    claimed: frozenset[tuple[int, int]] | None
    """The chain view's claimed leaves (None: no view): a refreshed view with the same leaves
    is the same generation, so the report is rebuilt when a claim lands, not every refresh."""

    def same_as(self, other: _Generation | None) -> bool:
        return (other is not None
                and (self.deployment, self.campaign_id, self.rounds)
                == (other.deployment, other.campaign_id, other.rounds)
                and (self.claimed is other.claimed or self.claimed == other.claimed))


class SponsorReports:
    """Campaign reports, built once per generation of what they read.

    A generation is the deployment file's version, the campaign, each served round's
    :data:`~offchain.api.rounds_view.RoundKey` and the set of leaves the chain's claimed view
    says are claimed (None without a view). Each round's :class:`RoundPayments` is parsed
    once per version of its ``allocation.json``; the claim flags of the node's own
    ``claims.json`` come from the shared :class:`~offchain.api.rounds_view.RoundCache`.

    Args:
        cache: The API's parsed rounds (for ``claims.json`` flags without a chain view).
    """

    def __init__(self, cache: RoundCache) -> None:
        self.cache = cache
        self._payments: VersionedCache[FileKey, RoundPayments] = VersionedCache()
        self._reports: dict[int, tuple[_Generation, CampaignReport, bytes]] = {}

    def payments(self, paths: RoundPaths, key: FileKey) -> RoundPayments:
        """The round's :class:`RoundPayments` for version ``key`` of its allocation."""
        return self._payments.get(paths.dir, key, lambda: RoundPayments.load(paths))

    def report(
        self,
        run_dir: Path,
        deployment_file: Path,
        deployment: dict[str, Any],
        campaign_id: int,
        view: ClaimedView | None,
    ) -> tuple[CampaignReport, bytes]:
        """The report of ``campaign_id`` and its JSON encoding (what the API route sends).

        Only the deployment file's own campaign has rounds in the run folder; another campaign
        of the pool gets its chain and pool fields and no rounds.

        Raises:
            OSError, ValueError, KeyError: a round's artifacts cannot be read or parsed.
        """
        own = campaign_id == deployment.get("campaign_id")
        listed = []
        for round_id in round_ids(run_dir) if own else []:
            paths = RoundPaths(run_dir, round_id)
            listed.append((round_id, paths, RoundCache.key(paths)))
        generation = _Generation(file_key(deployment_file), campaign_id,
                                 tuple((r, k) for r, _, k in listed),
                                 None if view is None else view.leaves)
        cached = self._reports.get(campaign_id)
        if cached is not None and generation.same_as(cached[0]):
            return cached[1], cached[2]
        rounds = [(r, paths, self.payments(paths, key[0])) for r, paths, key in listed]
        keys = {r: key for r, _, key in listed}

        def is_claimed(round_id: int, paths: RoundPaths, index: int) -> bool:
            if view is not None:
                return view.is_claimed(round_id, index)
            return self.cache.get(paths, keys[round_id]).is_claimed(round_id, index, None)

        report = build_report(deployment, campaign_id, rounds, is_claimed,
                              "chain" if view is not None else "node")
        body = _ADAPTER.dump_json(report)
        self._reports[campaign_id] = (generation, report, body)
        return report, body
