"""Wei amounts in JSON: decimal strings, parsed strictly.

The rule for every JSON file the node writes and every API response: **every wei amount and
every uint256 that can exceed 2⁵³ is a decimal string** (``"208873506586492146964"``). JSON
numbers above 2⁵³ lose precision in JavaScript's ``JSON.parse`` (that one becomes
208873506586492141568), so a browser rebuilding a Merkle leaf or an EIP-712 digest from a number
gets it wrong. Small counters that cannot come near 2⁵³ stay numbers: round ids, leaf indices,
chain ids, gas, nonces and Unix times (``finalizes_at``, deadlines outside a signed struct). In
a signed ``RoundAllocation`` every uint256 field is a string, as in the EIP-712 message.

In Python money is an ``int`` end to end: :func:`wei_str` writes it, :func:`parse_wei` reads it.
"""

from __future__ import annotations

import re
from typing import Any

from offchain.errors import AllocationError

__all__ = [
    "JS_SAFE_INT",
    "UINT256_MAX",
    "WEI_PER_TOKEN",
    "WeiFormatError",
    "js_safe",
    "parse_wei",
    "wei_str",
    "wei_str_or_none",
]

UINT256_MAX = 2**256 - 1
"""Largest amount (wei) a uint256 holds: the contracts' upper bound on any amount."""
WEI_PER_TOKEN = 10**18
"""Wei per whole token: the payment token (TestToken, and ETH) has 18 decimals."""
JS_SAFE_INT = 2**53
"""The first integer JavaScript's ``Number`` cannot tell from its neighbour (2⁵³ + 1 → 2⁵³)."""

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,77}")


class WeiFormatError(AllocationError, ValueError):
    """A wei amount (or another uint256) in a JSON file or request is not a canonical decimal
    string of a value in ``[0, 2**256)``."""


def wei_str(value: int, field: str = "amount") -> str:
    """``value`` (an int in ``[0, 2**256)``) as the decimal string written to JSON.

    Raises:
        WeiFormatError: ``value`` is not an int (a bool or float is refused) or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        # numpy integers: accepted through their int value, floats never
        if type(value).__module__ == "numpy" and hasattr(value, "dtype") and value.dtype.kind in "iu":
            value = int(value)
        else:
            raise WeiFormatError(f"{field}: a wei amount must be an int, got {type(value).__name__}")
    if not 0 <= value <= UINT256_MAX:
        raise WeiFormatError(f"{field}: {value} is outside [0, 2**256)")
    return str(value)


def wei_str_or_none(value: int | None, field: str = "amount") -> str | None:
    """:func:`wei_str`, or None for None."""
    return None if value is None else wei_str(value, field)


def parse_wei(value: Any, field: str = "amount", *, legacy_int: bool = True) -> int:
    """The int a JSON wei field holds.

    Accepts a canonical decimal string: ASCII digits only, no sign, no leading zeros (except
    ``"0"``), no decimal point, exponent, spaces or underscores, at most ``2**256 − 1``.

    With ``legacy_int`` (the default) a JSON integer is accepted too: run folders written before
    amounts became strings hold ints, and Python's ``json`` reads those exactly (the precision
    loss is JavaScript's, not ours). Floats and bools are always refused: a float means the
    value was rounded somewhere already.

    Raises:
        WeiFormatError: anything else; the message names ``field``.
    """
    if isinstance(value, str):
        if not _DECIMAL.fullmatch(value):
            raise WeiFormatError(
                f"{field}: {value[:100]!r} is not a decimal string of wei (digits only, no sign, "
                "decimal point, exponent or leading zeros)"
            )
        parsed = int(value)
    elif legacy_int and isinstance(value, int) and not isinstance(value, bool):
        parsed = value
    else:
        expected = "a decimal string" + (" (or a legacy JSON integer)" if legacy_int else "")
        raise WeiFormatError(f"{field}: expected {expected} of wei, got {type(value).__name__} "
                             f"{str(value)[:100]}")
    if not 0 <= parsed <= UINT256_MAX:
        raise WeiFormatError(f"{field}: {parsed} is outside [0, 2**256)")
    return parsed


def js_safe(value: Any) -> Any:
    """``value`` (a JSON-able tree of dicts, lists and scalars) with the rule applied: the int of
    every ``*_wei`` key and every int with ``|n| ≥ 2**53`` becomes a decimal string; everything
    else is returned as it is. For records assembled from Python ints (the CLI's ``--json``
    output) rather than field by field."""
    if isinstance(value, dict):
        return {
            key: str(item)
            if isinstance(key, str) and key.endswith("_wei") and _is_int(item)
            else js_safe(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [js_safe(item) for item in value]
    if _is_int(value) and abs(value) >= JS_SAFE_INT:
        return str(value)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
