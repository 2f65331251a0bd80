"""The sponsors' view of a campaign: ``GET /campaigns/{campaign_id}/report`` (JSON: parameters,
round budgets, payments per holder per round, claimed and unclaimed totals, in one response)
and ``GET /sponsor`` (the HTML page over the same report; its script,
``offchain/api/web/sponsor.js``, draws the charts and does the wallet parts: escrow, funding,
reclaiming).

Both read the report from :class:`~offchain.api.sponsor_view.SponsorReports`, kept on
``app.state.sponsor_reports``: built once per version of the rounds, of the deployment file and
of the chain's claimed view; the page's HTML is rendered once per report. The pages' warmer
(:func:`offchain.api.routers.pages.add_page_warmer`) builds both for the deployment file's
campaign before the first request and again whenever they change (:func:`warm_sponsor`, every
:data:`~offchain.api.routers.pages.PAGES_SCAN_S` s), so no request pays for parsing or
rendering them.
"""

from __future__ import annotations

import datetime as dt
import gzip
import threading
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse

from offchain.api.deps import DeploymentData, RunDir, State, Templates, chain_view
from offchain.api.routers.pages import add_page_warmer, format_tokens
from offchain.api.sponsor_view import CampaignReport, SponsorReports
from offchain.api.state_view import StateView
from offchain.utils import read_json

__all__ = ["router", "warm_sponsor"]

router = APIRouter(tags=["campaigns"])
_make_lock = threading.Lock()

PageKey = tuple[int, str]
"""A rendered page's key: the campaign id and the request's root path (the page's links)."""


def _reports(state: Any) -> SponsorReports:
    """The app's :class:`SponsorReports` (``app.state.sponsor_reports``, made on first use)."""
    reports = getattr(state, "sponsor_reports", None)
    if reports is None:
        with _make_lock:
            reports = getattr(state, "sponsor_reports", None)
            if reports is None:
                reports = state.sponsor_reports = SponsorReports(state.round_cache)
    return reports


def _store(state: Any, name: str) -> dict:
    """The dict ``app.state.<name>`` (made on first use)."""
    store = getattr(state, name, None)
    if store is None:
        with _make_lock:
            store = getattr(state, name, None)
            if store is None:
                store = {}
                setattr(state, name, store)
    return store


def _pages(state: Any) -> dict[PageKey, tuple[bytes, bytes]]:
    """Rendered pages: :data:`PageKey` → ``(report body, page HTML)``
    (``app.state.sponsor_pages``). A page is rendered again only when its report is a new one
    (a new object), so a repeated request of a 1,000-holder page costs no rendering."""
    return _store(state, "sponsor_pages")


def _gzipped(state: Any, key: tuple, raw: bytes) -> bytes:
    """``raw`` gzip-compressed, once per body object (``app.state.sponsor_gzip``)."""
    store = _store(state, "sponsor_gzip")
    cached = store.get(key)
    if cached is not None and cached[0] is raw:
        return cached[1]
    packed = gzip.compress(raw, compresslevel=6, mtime=0)
    store[key] = (raw, packed)
    return packed


def _send(request: Request, key: tuple, raw: bytes, media_type: str) -> Response:
    """``raw`` as the response, gzip-compressed (stored, not per request) when the client
    accepts it: at 1,000 holders × 5 rounds the page is about 320 kB and the report 280 kB."""
    headers = {"vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["content-encoding"] = "gzip"
        raw = _gzipped(request.app.state, key, raw)
    return Response(content=raw, media_type=media_type, headers=headers)


def _chain_view(state: Any) -> Any:  # noqa: ANN401 (ClaimedView | None; chain import kept lazy)
    """As :func:`offchain.api.deps.chain_view`, from ``app.state``."""
    chain = getattr(state, "chain_claims", None)
    return None if chain is None else chain.view(state.deployment_file)


def _known(campaign_id: int, state: StateView, deployment: dict[str, Any]) -> bool:
    """Whether the pool's campaign ``campaign_id`` is the deployment file's or in the database."""
    if campaign_id == deployment.get("campaign_id"):
        return True
    return campaign_id in state.campaign_ids(int(deployment["chain_id"]), deployment["pool"])


def _report(request: Request, run_dir: RunDir, state: StateView,
            deployment: dict[str, Any] | None, campaign_id: int) -> tuple[CampaignReport, bytes]:
    """The report and its JSON; HTTPException 404 without a deployment or for an unknown
    campaign."""
    if deployment is None:
        raise HTTPException(status_code=404, detail="this node has no deployment yet "
                            "(no deployment.json in its run folder)")
    if not _known(campaign_id, state, deployment):
        raise HTTPException(status_code=404, detail=f"unknown campaign {campaign_id}")
    return _reports(request.app.state).report(run_dir, request.app.state.deployment_file,
                                              deployment, campaign_id, chain_view(request))


@router.get("/campaigns/{campaign_id}/report", response_model=CampaignReport)
def campaign_report(
    campaign_id: int, request: Request, run_dir: RunDir, state: State, deployment: DeploymentData
) -> Response:
    """A campaign's report for its sponsors, in one call: parameters (deployment file), per
    round the budget, allocated and claimed totals and status, the payments per holder per
    round (wei) with their claimed flags (from the chain when the node has an RPC, else from
    its claims.json: ``claimed_source``), and the totals allocated, claimed, unclaimed and
    unallocated. 404 without a deployment or for an unknown campaign."""
    _, body = _report(request, run_dir, state, deployment, campaign_id)
    return _send(request, ("report", campaign_id), body, "application/json")


# -- the page --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Amount:
    """An amount for the page: tokens to read, the exact wei in ``title``."""

    wei: str
    tokens: str


def _amount(wei: str | int | None) -> _Amount | None:
    return None if wei is None else _Amount(str(wei), format_tokens(int(wei)))


def _date(timestamp: int | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _payment_rows(report: CampaignReport) -> list[tuple[str, str, str, list[str], str]]:
    """The payments table's rows: name, address, short address, each round's payment in tokens
    (exact; `` ✓`` when claimed) and the total. Plain text cells: at 1,000 holders × 5 rounds
    the table is most of the page's bytes."""
    rows = []
    for h in report.holders:
        cells = [format_tokens(int(w)) + (" ✓" if claimed else "")
                 for w, claimed in zip(h.payments_wei, h.claimed, strict=True)]
        short = f"{h.address[:6]}…{h.address[-4:]}"
        rows.append((h.name, h.address, short, cells, format_tokens(int(h.total_wei))))
    return rows


def _page_context(report: CampaignReport) -> dict[str, Any]:
    p, t = report.parameters, report.totals
    return {
        "report": report,
        "payment_rows": _payment_rows(report),
        "amount": _amount,
        "budget": _amount(p.total_budget_wei),
        "round_cap": _amount(p.round_cap_wei),
        "holder_cap": _amount(p.holder_cap_wei),
        "posting_deadline": _date(p.posting_deadline),
        "claim_deadline": _date(p.claim_deadline),
        "allocated": _amount(t.allocated_wei),
        "claimed": _amount(t.claimed_wei),
        "unclaimed": _amount(t.unclaimed_wei),
        "unallocated": _amount(t.unallocated_wei),
    }


@router.get("/sponsor", response_class=HTMLResponse, include_in_schema=False)
def sponsor_page(
    request: Request,
    run_dir: RunDir,
    state: State,
    deployment: DeploymentData,
    templates: Templates,
    campaign: str | None = Query(default=None, description="campaign id (default: the "
                                 "deployment file's)"),
) -> HTMLResponse:
    """The sponsor page of campaign ``campaign`` (default: the deployment file's): summary,
    round budgets and payments (tables, and charts drawn by its script), and the wallet parts.
    Without a deployment or for an unknown campaign: the page with the reason (HTTP 404); a
    campaign that is not a number: the page with the reason (HTTP 400)."""
    if campaign is not None and not (campaign.isascii() and campaign.isdigit()):
        return templates.TemplateResponse(request, "sponsor.html", {
            "problem": f"“{campaign}” is not a campaign id: use a number, e.g. /sponsor?campaign=1."
        }, status_code=400)
    campaign_id = int(campaign) if campaign is not None else (deployment or {}).get("campaign_id")
    if deployment is None or campaign_id is None:
        return templates.TemplateResponse(request, "sponsor.html", {
            "problem": "This node has no campaign yet: there is nothing to sponsor here until "
                       "the operator deploys and creates one."}, status_code=404)
    try:
        report, body = _report(request, run_dir, state, deployment, int(campaign_id))
    except HTTPException as error:
        return templates.TemplateResponse(request, "sponsor.html", {
            "problem": f"No campaign {campaign_id} on this node's pool ({error.detail})."},
            status_code=error.status_code)
    root_path = request.scope.get("root_path", "")
    html = _page_html(request.app, root_path, report, body)
    return _send(request, ("page", report.campaign_id, root_path), html,
                 "text/html; charset=utf-8")


def _page_html(app: FastAPI, root_path: str, report: CampaignReport, body: bytes) -> bytes:
    """The page of ``report`` (whose JSON is ``body``) under ``root_path``: rendered once per
    report, then served from :func:`_pages`."""
    pages = _pages(app.state)
    key = (report.campaign_id, root_path)
    cached = pages.get(key)
    if cached is not None and cached[0] is body:  # the same report: the same page
        return cached[1]
    request = Request({"type": "http", "method": "GET", "path": "/sponsor",
                       "root_path": root_path, "query_string": b"", "headers": [], "app": app,
                       "router": app.router, "scheme": "http", "server": ("127.0.0.1", 80)})
    template = app.state.templates.get_template("sponsor.html")
    html = template.render(request=request, **_page_context(report)).encode()
    pages[key] = (body, html)
    return html


# -- built ahead of requests -----------------------------------------------------------------


@add_page_warmer
def warm_sponsor(app: FastAPI) -> int:
    """Build the report and page of the deployment file's campaign if what they are built from
    changed (a round posted or rewritten, the deployment file, the chain's claimed view);
    return how many were built (0 or 1). Without a deployment or a campaign, nothing."""
    state = app.state
    path = state.deployment_file
    deployment = read_json(path) if path.is_file() else None
    if not isinstance(deployment, dict) or deployment.get("campaign_id") is None:
        return 0
    campaign_id = int(deployment["campaign_id"])
    pages = _pages(state)
    cached = pages.get((campaign_id, ""))
    report, body = _reports(state).report(state.run_dir, path, deployment, campaign_id,
                                          _chain_view(state))
    if cached is not None and cached[0] is body:
        return 0
    html = _page_html(app, "", report, body)
    _gzipped(state, ("report", campaign_id), body)  # most clients accept gzip
    _gzipped(state, ("page", campaign_id, ""), html)
    return 1
