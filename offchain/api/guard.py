"""Request-body guard of the API: every body bounded, JSON nesting checked before any parse, and
operator requests authenticated before their bodies are read.

FastAPI reads and ``json.loads`` a route's body before its dependencies (the bearer-token check
among them) run, and sets no size limit; ``json.loads`` recurses once per nesting level, so a
small body nested tens of thousands deep can exhaust the C stack. :class:`BodyGuardMiddleware`
sits in front of the router and, for every HTTP request:

1. asks ``authenticate(scope)`` (the operator routes' bearer token) and answers its refusal
   (401/503) without reading the body;
2. refuses a ``Content-Length`` over the route's limit (413) without reading the body;
3. either counts a streamed body (multipart uploads: the route parses it as it arrives; past the
   limit the next read raises a 413 ``HTTPException``), or reads the whole body (bounded, 413
   past the limit), refuses JSON nested deeper than :data:`offchain.jsonsafe.MAX_JSON_DEPTH`
   (422, counted without recursion) and hands the body on to the app.

Refusals are JSON ``{"detail": "…"}`` naming the limit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from offchain.jsonsafe import MAX_JSON_DEPTH, UnsafeJSON, check_json

__all__ = ["DEFAULT_BODY_LIMIT", "BodyGuardMiddleware", "BodyRule"]

DEFAULT_BODY_LIMIT = 64 * 1024
"""Largest body, in bytes, of a route without its own rule (our JSON bodies are < 1 KiB)."""


@dataclass(frozen=True)
class BodyRule:
    """How the guard treats one request's body.

    Attributes:
        limit: most bytes accepted.
        what: the limit as named in a 413's detail, e.g. ``"max_total_bytes 65536"``.
        stream: count the body as the route reads it (multipart uploads) instead of reading it
            whole and checking its JSON nesting first.
    """

    limit: int
    what: str
    stream: bool = False


Authenticate = Callable[[Scope], HTTPException | None]
RuleFor = Callable[[Scope], BodyRule]


def _declared_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() else None
    return None


async def _refuse(send: Send, exc: HTTPException) -> None:
    response = JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - a JSONResponse never receives
    return {"type": "http.disconnect"}


def _too_large(rule: BodyRule, received: int | None = None) -> HTTPException:
    if received is None:
        return HTTPException(413, f"request body exceeds {rule.what} (stopped reading)")
    return HTTPException(413, f"request body of {received} bytes exceeds {rule.what}")


class BodyGuardMiddleware:
    """Pure ASGI middleware bounding request bodies (see the module docstring).

    Args:
        app: the wrapped application.
        rule_for: the :class:`BodyRule` of a request (by method and path).
        authenticate: a refusal (an ``HTTPException``) for a request that must be authenticated
            before its body is read and is not, else None.
    """

    def __init__(self, app: ASGIApp, rule_for: RuleFor, authenticate: Authenticate) -> None:
        self.app = app
        self.rule_for = rule_for
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.authenticate(scope)
        rule = self.rule_for(scope)
        declared = _declared_length(scope)
        if refusal is None and declared is not None and declared > rule.limit:
            refusal = _too_large(rule, declared)
        if refusal is not None:
            await _refuse(send, refusal)
            return
        if rule.stream:
            await self.app(scope, _counted(receive, rule), send)
            return
        body = await _read_body(receive, rule)
        if body is None:  # the client went away
            return
        if isinstance(body, HTTPException):
            await _refuse(send, body)
            return
        await self.app(scope, _replay(body, receive), send)


def _counted(receive: Receive, rule: BodyRule) -> Receive:
    """``receive`` that raises a 413 ``HTTPException`` once the body passes ``rule.limit``."""
    received = 0

    async def wrapped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > rule.limit:
                raise _too_large(rule)
        return message

    return wrapped


async def _read_body(receive: Receive, rule: BodyRule) -> bytes | HTTPException | None:
    """The whole body (None if the client disconnected), or the refusal: over the limit (413)
    or JSON nested deeper than :data:`MAX_JSON_DEPTH` (422)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > rule.limit:
            return _too_large(rule)
        if not message.get("more_body", False):
            break
    if body:
        try:
            check_json(
                bytes(body), max_bytes=rule.limit, max_depth=MAX_JSON_DEPTH, what="request body"
            )
        except UnsafeJSON as exc:
            return HTTPException(422, str(exc))
    return bytes(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` that answers ``body`` once, then waits on the real one (disconnects)."""
    sent = False

    async def wrapped() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return wrapped
