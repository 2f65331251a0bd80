"""Retrying JSON-RPC transport: exponential backoff with jitter on transient faults only.

web3's own :class:`~web3.providers.rpc.utils.ExceptionRetryConfiguration` is switched off in
favour of :class:`RetryingHTTPProvider` because it has no jitter and no bound on total time,
retries every HTTP error (4xx included), misses ``requests.ConnectionError`` (a dropped
connection) in its default error list, and retries ``eth_sendRawTransaction`` blindly. Sending
is made idempotent one level up, in :meth:`offchain.chain.client.ChainClient._broadcast`.

What is transient (retried): connection errors, timeouts, HTTP 429 and 5xx, and JSON-RPC
errors a node or gateway returns for overload (:data:`TRANSIENT_RPC_CODES`, rate-limit
messages). Everything else, reverts and validation errors among them, surfaces at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests
from web3 import Web3
from web3.types import RPCEndpoint, RPCResponse

__all__ = [
    "NOT_RETRIED_METHODS",
    "TRANSIENT_RPC_CODES",
    "RetryPolicy",
    "RetryingHTTPProvider",
    "is_transient_error",
    "is_transient_response",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_RPC_CODES = frozenset({-32005, 429})
"""JSON-RPC error codes meaning "try again later" (limit exceeded, gateway rate limit)."""

_TRANSIENT_MESSAGES = ("rate limit", "too many requests", "temporarily unavailable")

NOT_RETRIED_METHODS = frozenset({"eth_sendRawTransaction", "evm_increaseTime"})
"""Methods the transport never repeats: a lost answer may hide a request that took effect.
Raw sends are retried by :class:`~offchain.chain.client.ChainClient` after checking the
transaction hash; ``evm_increaseTime`` (dev chains) would move the clock twice."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a transient RPC fault.

    The delay before retry ``i`` (0-based) is drawn uniformly from
    ``[0, min(max_delay_s, base_delay_s * 2**i)]`` ("full jitter"), so clients that failed
    together do not retry together.
    """

    attempts: int = 6
    """Tries per request, the first included (1 disables retries)."""
    base_delay_s: float = 0.05
    """Upper bound of the first backoff delay (seconds)."""
    max_delay_s: float = 2.0
    """Cap on any single delay (seconds)."""
    total_s: float = 60.0
    """No new try starts after this many seconds since the first (seconds)."""
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)
    """Jitter source (seed it for reproducible tests)."""

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay_s < 0 or self.max_delay_s < 0 or self.total_s < 0:
            raise ValueError(f"invalid retry policy {self}")

    def delay(self, retry: int) -> float:
        """Seconds to sleep before retry number ``retry`` (0-based)."""
        return self.rng.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2**retry))

    def run(self, what: str, fn: Callable[[], T], transient: Callable[[BaseException], bool]) -> T:
        """Call ``fn`` until it returns, retrying exceptions for which ``transient`` is true.

        Raises:
            The last exception, once attempts or total time are used up, or at once when it is
            not transient.
        """
        started = time.monotonic()
        for i in range(self.attempts):
            try:
                return fn()
            except Exception as exc:
                if not transient(exc) or not self.backoff(i, started, what, exc):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def backoff(self, i: int, started: float, what: str, cause: object) -> bool:
        """Sleep before retry ``i + 1`` of a call that started at ``started`` (``time.monotonic``).

        Returns False, without sleeping, when attempts or total time are used up."""
        if i + 1 >= self.attempts:
            return False
        pause = self.delay(i)
        if time.monotonic() - started + pause > self.total_s:
            return False
        log.debug("%s: transient fault (%s); retry %d in %.3f s", what, cause, i + 1, pause)
        time.sleep(pause)
        return True


def is_transient_error(exc: BaseException) -> bool:
    """True for transport faults worth retrying: connection drops, timeouts, HTTP 429/5xx."""
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else None
        return status is not None and (status == 429 or status >= 500)
    return isinstance(exc, requests.ConnectionError | requests.Timeout | ConnectionError)


def is_transient_response(response: RPCResponse) -> bool:
    """True for a JSON-RPC error answer that means "overloaded, try again"."""
    error = response.get("error")
    if not isinstance(error, dict):
        return False
    message = str(error.get("message", "")).lower()
    return error.get("code") in TRANSIENT_RPC_CODES or any(
        m in message for m in _TRANSIENT_MESSAGES
    )


class _TransientResponse(Exception):
    def __init__(self, response: RPCResponse) -> None:
        super().__init__(str(response.get("error")))
        self.response = response


class RetryingHTTPProvider(Web3.HTTPProvider):
    """An HTTP provider that retries transient faults per :class:`RetryPolicy`.

    Methods in :data:`NOT_RETRIED_METHODS` are tried once.
    """

    def __init__(self, endpoint_uri: str, *, policy: RetryPolicy, **kwargs: Any) -> None:
        super().__init__(endpoint_uri, exception_retry_configuration=None, **kwargs)
        self.policy = policy

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        if method in NOT_RETRIED_METHODS:
            return super().make_request(method, params)

        def once() -> RPCResponse:
            response = super(RetryingHTTPProvider, self).make_request(method, params)
            if is_transient_response(response):
                raise _TransientResponse(response)
            return response

        try:
            return self.policy.run(
                method, once, lambda e: isinstance(e, _TransientResponse) or is_transient_error(e)
            )
        except _TransientResponse as exc:  # out of retries: hand the error answer to web3
            return exc.response
