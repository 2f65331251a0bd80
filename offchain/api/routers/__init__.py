"""One router per resource; :data:`ROUTERS` in the order :func:`offchain.api.app.create_app`
includes them (the order of the OpenAPI schema's paths).

* :mod:`~offchain.api.routers.health`: ``/health``, ``/metrics``
* :mod:`~offchain.api.routers.rounds`: ``/rounds``, ``/rounds/{round_id}``
* :mod:`~offchain.api.routers.claims`: ``/holders/{address}/claims`` (amounts and Merkle proofs)
* :mod:`~offchain.api.routers.registration`: ``POST /holders``, ``POST /holders/manifest``,
  ``GET /holders``
* :mod:`~offchain.api.routers.campaigns`: ``/campaigns``, ``/campaigns/{campaign_id}[/rounds]``
* :mod:`~offchain.api.routers.cosigning`: ``/rounds/{round_id}/signing-request``,
  ``/rounds/{round_id}/signatures``
* :mod:`~offchain.api.routers.operator`: ``/operator/…`` (bearer token)
* :mod:`~offchain.api.routers.web`: ``/web/config`` (what the pages' scripts need)
* :mod:`~offchain.api.routers.pages`: ``GET /`` (HTML, not in the schema)
* :mod:`~offchain.api.routers.holder_page`: ``GET /holder`` (HTML)
* :mod:`~offchain.api.routers.sponsor_page`: ``GET /sponsor`` (HTML)
* :mod:`~offchain.api.routers.explorer`: ``GET /explorer/rounds/{round_id}`` (HTML)
"""

from __future__ import annotations

from fastapi import APIRouter

from offchain.api.routers import (
    campaigns,
    claims,
    cosigning,
    explorer,
    health,
    holder_page,
    operator,
    pages,
    registration,
    rounds,
    sponsor_page,
    web,
)

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    rounds.router,
    claims.router,
    registration.router,
    campaigns.router,
    cosigning.router,
    operator.router,
    web.router,
    pages.router,
    holder_page.router,
    sponsor_page.router,
    explorer.router,
)
