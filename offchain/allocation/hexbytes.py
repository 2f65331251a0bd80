"""Bytes from the shapes hashes, roots and signatures arrive in: ``bytes`` or (``0x``-)hex text.

One pair of helpers for the Merkle tree, the signed round struct and the chain client; each
caller names the error type its own callers expect (``ValueError``, ``SigningError``,
``ChainError``).
"""

from __future__ import annotations

__all__ = ["to_bytes", "to_bytes32"]


def to_bytes(value: str | bytes, label: str, error: type[Exception] = ValueError) -> bytes:
    """``value`` as bytes: bytes as they are, a string as (optionally ``0x``-prefixed) hex.

    Raises:
        error: not hex, or neither bytes nor a string (the message names ``label``).
    """
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        try:
            return bytes.fromhex(value.removeprefix("0x"))
        except ValueError as exc:
            raise error(f"{label} is not hex: {value!r}") from exc
    raise error(f"{label} must be bytes or 0x-hex, got {type(value).__name__}")


def to_bytes32(value: str | bytes, label: str, error: type[Exception] = ValueError) -> bytes:
    """``value`` as exactly 32 bytes (see :func:`to_bytes`).

    Raises:
        error: not hex, or not 32 bytes long.
    """
    raw = to_bytes(value, label, error)
    if len(raw) != 32:
        raise error(f"{label} must be 32 bytes, got {len(raw)}")
    return raw
