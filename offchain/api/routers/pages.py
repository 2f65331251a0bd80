"""Web pages (HTML, rendered by Jinja2 from ``offchain/api/templates/``; not in the OpenAPI
schema). ``GET /``: the run's rounds with their status, budget and Merkle root, from the same
data as ``GET /rounds``."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from offchain.allocation.wei import WEI_PER_TOKEN
from offchain.api.deps import RunDir, Templates
from offchain.api.rounds_view import round_ids, round_summary
from offchain.layout import RoundPaths

__all__ = ["RoundRow", "format_tokens", "router"]

_TOKEN_DECIMALS = 18
"""Decimal places of the payout token (``WEI_PER_TOKEN`` = 10¹⁸ wei)."""


def format_tokens(wei: int) -> str:
    """``wei`` in whole tokens, exact (no float), thousands separated, trailing zeros dropped.

    >>> format_tokens(1_500_000_000_000_000_000), format_tokens(10**21), format_tokens(1)
    ('1.5', '1,000', '0.000000000000000001')
    """
    whole, fraction = divmod(wei, WEI_PER_TOKEN)
    if not fraction:
        return f"{whole:,}"
    return f"{whole:,}." + f"{fraction:0{_TOKEN_DECIMALS}d}".rstrip("0")


@dataclass(frozen=True)
class RoundRow:
    """One row of the rounds table: a :class:`~offchain.api.schemas.RoundSummary` with its
    budget in tokens for reading (the exact wei stays in ``budget_wei``)."""

    round_id: int
    status: str
    budget_wei: str
    budget_tokens: str
    merkle_root: str | None
    tx_hash: str | None


router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def rounds_page(request: Request, run_dir: RunDir, templates: Templates) -> HTMLResponse:
    """The run's rounds as an HTML table (the page ``GET /`` serves)."""
    rows = []
    for round_id in round_ids(run_dir):
        summary = round_summary(RoundPaths(run_dir, round_id))
        rows.append(RoundRow(
            round_id=summary.round_id,
            status=summary.status,
            budget_wei=summary.budget_wei,
            budget_tokens=format_tokens(int(summary.budget_wei)),
            merkle_root=summary.merkle_root,
            tx_hash=summary.tx_hash,
        ))
    return templates.TemplateResponse(request, "rounds.html", {"rounds": rows})
