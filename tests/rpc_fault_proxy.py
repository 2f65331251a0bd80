"""A loopback JSON-RPC proxy that injects faults, for testing the chain client's retries.

:class:`FaultProxy` listens on ``127.0.0.1`` (a free port), forwards each HTTP POST to an
upstream node (anvil) and, per a seeded schedule, instead:

``drop_request``
    closes the connection without forwarding or answering (the node never sees it);
``delay``
    sleeps a random ``delay_s`` range, then forwards;
``http_502``
    answers ``502 Bad Gateway`` without forwarding;
``drop_response``
    forwards, then closes the connection without answering (the node acted on it, the client
    does not know: the dangerous case for ``eth_sendRawTransaction``).

Usage::

    with FaultProxy(anvil.rpc_url, FaultPlan(seed=1, drop_response=0.1)) as proxy:
        client = ChainClient(proxy.url)
        ...
    proxy.counts  # Counter of (fault, method)
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

FAULTS = ("drop_request", "delay", "http_502", "drop_response")


@dataclass(frozen=True)
class FaultPlan:
    """Fault probabilities per request (their sum must be at most 1) and the schedule's seed.

    ``methods``: if given, only requests of these JSON-RPC methods get faults;
    ``send_drop_response``: extra probability of ``drop_response`` for
    ``eth_sendRawTransaction`` (on top of ``drop_response``).
    """

    seed: int = 0
    drop_request: float = 0.0
    delay: float = 0.0
    http_502: float = 0.0
    drop_response: float = 0.0
    send_drop_response: float = 0.0
    delay_s: tuple[float, float] = (0.01, 0.15)
    methods: frozenset[str] | None = None

    def __post_init__(self) -> None:
        rates = (self.drop_request, self.delay, self.http_502, self.drop_response)
        if min(rates) < 0 or sum(rates) > 1 or not 0 <= self.send_drop_response <= 1:
            raise ValueError(f"fault rates must be probabilities summing to at most 1: {self}")


class FaultProxy:
    """The proxy server (a context manager); thread-safe counts in :attr:`counts`."""

    def __init__(self, upstream: str, plan: FaultPlan) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.upstream_path = parts.path or "/"
        self.plan = plan
        self.enabled = True
        self.counts: Counter[tuple[str, str]] = Counter()
        self._rng = random.Random(plan.seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def faults(self, fault: str, method: str | None = None) -> int:
        """How many times ``fault`` was injected (for ``method``, or any method)."""
        with self._lock:
            return sum(n for (f, m), n in self.counts.items()
                       if f == fault and (method is None or m == method))

    def _choose(self, method: str) -> tuple[str, float]:
        """The fault for one request (``"forward"`` for none) and its delay."""
        plan = self.plan
        with self._lock:
            draw, delay = self._rng.random(), self._rng.uniform(*plan.delay_s)
            extra = self._rng.random()
            fault = "forward"
            if self.enabled and (plan.methods is None or method in plan.methods):
                edge = 0.0
                for name in FAULTS:
                    edge += getattr(plan, name)
                    if draw < edge:
                        fault = name
                        break
                if (fault == "forward" and method == "eth_sendRawTransaction"
                        and extra < plan.send_drop_response):
                    fault = "drop_response"
            self.counts[(fault, method)] += 1
        return fault, delay

    def _forward(self, body: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            conn.request("POST", self.upstream_path, body,
                         {"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _method_of(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        return "?"
    if isinstance(payload, list):
        return "batch"
    return str(payload.get("method", "?")) if isinstance(payload, dict) else "?"


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The headers and the body go out in two writes: with Nagle's algorithm the body waited
        # for the client's delayed ACK, ≈ 40 ms a request (12 s of the 30-transfer test).
        disable_nagle_algorithm = True

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            fault, delay = proxy._choose(_method_of(body))
            if fault == "drop_request":
                self.close_connection = True
                return
            if fault == "http_502":
                self._answer(502, b"bad gateway")
                return
            if fault == "delay":
                time.sleep(delay)
            status, payload = proxy._forward(body)
            if fault == "drop_response":
                self.close_connection = True
                return
            self._answer(status, payload)

        def _answer(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # quiet

    return Handler
