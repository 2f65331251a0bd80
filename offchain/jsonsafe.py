"""JSON from untrusted sources: bounded size and nesting, checked before any recursive parse.

``json.loads`` recurses once per nesting level; a small body nested tens of thousands deep
exhausts the C stack (SIGSEGV) when something has raised the interpreter's recursion limit (as
``py_ecc``, imported through eth-account, does: it sets 100,000). Every parse of remote data
(request bodies, a signing request fetched from another node) goes through :func:`loads_bounded`,
which counts the nesting depth iteratively first, and the package keeps the recursion limit at
its default (:func:`pin_recursion_limit`).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from offchain.errors import OffchainError

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays/objects accepted from a remote party (our payloads need < 10)."""

DEFAULT_RECURSION_LIMIT = 1000
"""CPython's default recursion limit, kept for the whole process (see :func:`pin_recursion_limit`)."""


class UnsafeJSON(OffchainError, ValueError):
    """A remote JSON document too large, too deeply nested, or not JSON at all."""


def json_depth(raw: bytes | str, stop_after: int | None = None) -> int:
    """Deepest ``[``/``{`` nesting in ``raw``, counted without recursion (strings skipped).

    Stops early and returns ``stop_after + 1`` once that depth is passed. Does not validate the
    document: malformed JSON is left to the parser.
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_after is not None and deepest > stop_after:
                    return deepest
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def check_json(raw: bytes | str, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH, what: str = "JSON") -> None:
    """Refuse ``raw`` if it is over ``max_bytes`` or nested deeper than ``max_depth``.

    Raises:
        UnsafeJSON: naming ``what`` and the limit that was exceeded.
    """
    size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise UnsafeJSON(f"{what}: {size} bytes > limit of {max_bytes} bytes")
    if json_depth(raw, stop_after=max_depth) > max_depth:
        raise UnsafeJSON(f"{what}: nested deeper than {max_depth} levels")


def loads_bounded(
    raw: bytes | str, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH, what: str = "JSON"
) -> Any:
    """``json.loads`` for remote data, after :func:`check_json`.

    Raises:
        UnsafeJSON: too large, too deep, or not valid JSON (the message names ``what``).
    """
    check_json(raw, max_bytes=max_bytes, max_depth=max_depth, what=what)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnsafeJSON(f"{what}: not valid JSON ({exc})") from exc


def pin_recursion_limit(limit: int = DEFAULT_RECURSION_LIMIT) -> None:
    """Import the libraries that raise the recursion limit, then set it back to ``limit``.

    ``py_ecc`` (through eth-account/eth-keys) calls ``sys.setrecursionlimit(100000)`` at import;
    with that limit deep recursion overflows the C stack and kills the process instead of raising
    ``RecursionError``. Called once where the process starts (CLI, API app).
    """
    try:
        import py_ecc  # noqa: F401  (its import is what raises the limit)
        import py_ecc.optimized_bn128  # noqa: F401
    except ImportError:  # a minimal install without eth-account
        pass
    if sys.getrecursionlimit() != limit:
        sys.setrecursionlimit(limit)
