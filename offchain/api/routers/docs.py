"""``GET /docs``: the API's interactive documentation (Swagger UI) served entirely by the node.

FastAPI's own ``/docs`` loads Swagger UI's script and stylesheet from a CDN and its favicon from
fastapi.tiangolo.com, so offline it is a blank page. This route renders the same page with
:func:`fastapi.openapi.docs.get_swagger_ui_html` pointing at the local copies the web build
(``node scripts/build_web.mjs``, run by ``scripts/setup.sh``) puts in
``/static/dist/swagger/``. ReDoc is off (``create_app`` passes ``redoc_url=None``): it would need
its own script and Google fonts.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

__all__ = ["SWAGGER_DIR", "SWAGGER_FILES", "router"]

SWAGGER_DIR = Path(__file__).resolve().parents[1] / "static" / "dist" / "swagger"
"""Where the web build copies swagger-ui-dist's files (served at ``/static/dist/swagger/``)."""
SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
"""The files the page loads (all from this node)."""

router = APIRouter()


@router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
def docs(request: Request) -> HTMLResponse:
    """Swagger UI over ``/openapi.json``, every file from ``/static/dist/swagger/``; a 503 page
    that says how to build them when the web build has not run."""
    missing = [name for name in SWAGGER_FILES if not (SWAGGER_DIR / name).is_file()]
    if missing:
        return HTMLResponse(
            "<!doctype html><title>API documentation unavailable</title>"
            "<p>The API documentation's files are not built on this node (missing "
            + ", ".join(missing)
            + "): run <code>node scripts/build_web.mjs</code> (or <code>bash scripts/setup.sh"
            "</code>). The schema itself is at <a href=\"/openapi.json\">/openapi.json</a>.</p>",
            status_code=503,
        )
    base = "/static/dist/swagger/"
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url or "/openapi.json",
        title=f"{request.app.title} · API",
        swagger_js_url=base + "swagger-ui-bundle.js",
        swagger_css_url=base + "swagger-ui.css",
        swagger_favicon_url=base + "favicon-32x32.png",
    )
