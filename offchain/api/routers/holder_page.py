"""The holder's page and its data: ``GET /holder`` (HTML) and ``GET /holders/{address}/overview``
(every campaign and round an address took part in, with what the page needs to claim, in one
request; :mod:`offchain.api.holder_view`).

``GET /holder?address=0x…`` renders that address's rounds on the server (readable without
JavaScript); the page's script (``offchain/api/web/holder.js``) connects the wallet, renders the
connected account's overview and sends the claims, the recipient authorisation and the
registration.

The pages' warmer (:func:`offchain.api.routers.pages.add_page_warmer`) parses every
round's scores before the first request and again whenever a round is posted or changed
(:func:`warm_overviews`), so no request pays for parsing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from offchain.api.deps import RunDir, Templates, chain_view
from offchain.api.holder_view import HolderOverview, HolderOverviews
from offchain.api.registration import InvalidRegistration, RegistrationLimits, check_address
from offchain.api.routers.pages import add_page_warmer, format_tokens

__all__ = ["overviews", "router", "warm_overviews"]

router = APIRouter()


def _store(app: FastAPI) -> HolderOverviews:
    state = app.state
    found = getattr(state, "holder_overviews", None)
    if found is None:
        found = state.holder_overviews = HolderOverviews(state.round_cache)
    return found


def overviews(request: Request) -> HolderOverviews:
    """The app's :class:`HolderOverviews` (made on first use, over the app's round cache)."""
    return _store(request.app)


@add_page_warmer
def warm_overviews(app: FastAPI) -> int:
    """Parse the rounds' scores that changed since the last call (called by the pages' warmer
    at start-up and every :data:`~offchain.api.routers.pages.PAGES_SCAN_S` s); returns how
    many rounds were parsed."""
    return _store(app).warm(app.state.run_dir)


def _account_or_422(address: str) -> str:
    try:
        return check_address(address)
    except InvalidRegistration as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc


async def _overview_body(request: Request, run_dir: Path, account: str) -> bytes:
    """The encoded overview of checksummed ``account`` (cached per generation)."""
    store = overviews(request)
    generation = store.generation(run_dir, request.app.state.deployment_file,
                                  chain_view(request))
    body = store.cached(generation, account)
    if body is None:
        if store.is_parsed(generation):  # a fraction of a millisecond: on the loop
            body = store.body(generation, account)
        else:  # rounds to parse (tens of ms): off the event loop
            body = await run_in_threadpool(store.body, generation, account)
    return body


@router.get("/holders/{address}/overview", response_model=HolderOverview, tags=["claims"])
async def holder_overview(
    address: Annotated[str, PathParam(examples=["0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"])],
    run_dir: RunDir,
    request: Request,
) -> Response:
    """Every campaign and round the address took part in: per round its contribution
    (normalized share), copyright loss, payment (wei, a decimal string), whether it is claimed
    (``claimed_source``: the chain's claims when the node has an RPC, else its ``claims.json``)
    and the leaf ``claimRounds`` takes (index, amount, Merkle proof); per campaign the totals.

    The address is checked as for ``/holders/{address}/claims`` (422 on a bad checksum); an
    address that took part in no round gets an empty ``campaigns`` list.
    """
    body = await _overview_body(request, run_dir, _account_or_422(address))
    return Response(content=body, media_type="application/json")


@dataclass(frozen=True)
class RoundLine:
    """One row of the server-rendered table (amounts in tokens for reading, exact wei kept)."""

    round_id: int
    status: str
    contribution_pct: str
    copyright_loss: str
    amount_wei: str
    amount_tokens: str
    claimed: str


def _lines(overview: HolderOverview) -> list[tuple[object, list[RoundLine]]]:
    out = []
    for campaign in overview.campaigns:
        lines = [
            RoundLine(
                round_id=r.round_id,
                status=r.status,
                contribution_pct="–" if r.contribution is None else f"{100 * r.contribution:.2f} %",
                copyright_loss="–" if r.copyright_loss is None else f"{r.copyright_loss:#.3g}",
                amount_wei=r.amount_wei,
                amount_tokens=format_tokens(int(r.amount_wei)),
                claimed="–" if r.claimed is None else ("claimed" if r.claimed else "unclaimed"),
            )
            for r in campaign.rounds
        ]
        out.append((campaign, lines))
    return out


@router.get("/holder", response_class=HTMLResponse, include_in_schema=False)
async def holder_page(
    request: Request,
    run_dir: RunDir,
    templates: Templates,
    address: Annotated[str | None, Query()] = None,
) -> HTMLResponse:
    """The holder's page: connect a wallet to see and claim its payments, name another
    recipient, or register works; ``?address=`` shows an address's rounds without a wallet."""
    limits: RegistrationLimits = request.app.state.registration_limits
    context: dict[str, object] = {
        "address": address or "",
        "lookup_error": None,
        "campaigns": None,
        "registration_open": request.app.state.holders_dir is not None,
        "limits": limits,
        "format_tokens": format_tokens,
    }
    if address:
        try:
            if len(address) > 100:
                raise InvalidRegistration("an address is 0x and 40 hex digits")
            account = check_address(address.strip())
        except InvalidRegistration as exc:
            context["lookup_error"] = str(exc)
        else:
            body = await _overview_body(request, run_dir, account)
            overview = HolderOverview.model_validate_json(body)
            context["address"] = account
            context["campaigns"] = _lines(overview)
            context["claimed_source"] = overview.claimed_source
    return templates.TemplateResponse(request, "holder.html", context)
