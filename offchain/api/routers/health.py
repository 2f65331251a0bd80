"""``GET /health`` and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from offchain.api.deps import Metrics, RunDir
from offchain.api.rounds_view import round_ids

__all__ = ["router"]

router = APIRouter()


@router.get("/health")
def health(run_dir: RunDir) -> dict[str, object]:  # no docstring: it would be the schema's
    return {"status": "ok", "rounds": len(round_ids(run_dir))}


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(m: Metrics) -> Response:
    """Prometheus text format: ``api_requests_total`` and ``api_request_duration_seconds`` by
    method, route template and status; gauges ``api_rounds_served``, ``api_registered_holders``."""
    return Response(content=m.render(), media_type=CONTENT_TYPE_LATEST)
