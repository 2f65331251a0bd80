"""Prometheus metrics of the API: request count and latency by route template, and gauges.

Each app gets its own :class:`~prometheus_client.CollectorRegistry` (no global state, so several
apps in one process, e.g. in tests, do not collide). Requests are labelled by ``method``, the
matched **route template** (``/holders/{address}/claims``, not the raw path, so the number of
series stays bounded; an unmatched path is ``<unmatched>``) and ``status``. The gauges are
computed when ``/metrics`` is scraped, never on the request path.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ApiMetrics", "MetricsMiddleware", "UNMATCHED"]

UNMATCHED = "<unmatched>"
"""Route label of a request that matched no route (404 on an unknown path)."""

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    """The metrics of one app instance, in a registry of their own.

    Args:
        rounds: returns the number of rounds served (called on scrape).
        holders: returns the number of registered holders, or None when registration is
            disabled (called on scrape; the gauge then reads 0).
    """

    def __init__(self, rounds: Callable[[], int], holders: Callable[[], int | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "api_requests",
            "HTTP requests answered, by method, route template and status code.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "api_request_duration_seconds",
            "Time from receiving a request to sending its response's last byte, in seconds.",
            ("method", "route", "status"),
            buckets=_BUCKETS,
            registry=self.registry,
        )
        Gauge(
            "api_rounds_served",
            "Rounds with an allocation.json in the run folder.",
            registry=self.registry,
        ).set_function(lambda: float(rounds()))
        Gauge(
            "api_registered_holders",
            "Holder folders in the holders folder (0 when registration is disabled).",
            registry=self.registry,
        ).set_function(lambda: float(holders() or 0))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


def _route_template(scope: Scope) -> str:
    """The template of the route the router matched (Starlette sets ``scope["route"]``, also
    for a path matched with another method, answered 405)."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task or body copy) that times every HTTP request.

    Sits inside Starlette's ``ServerErrorMiddleware``: an exception escaping the app is counted
    as a 500 and re-raised.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            method = scope["method"]
            self.metrics.observe(
                method if method in _METHODS else "OTHER",
                _route_template(scope),
                status,
                time.perf_counter() - start,
            )
