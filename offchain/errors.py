"""The package's exception hierarchy: callers can catch :class:`OffchainError` for everything."""

from __future__ import annotations


class OffchainError(Exception):
    """Root of every error this package raises on purpose."""


class DataError(OffchainError):
    """Input data is unusable: a corrupt or unreadable image, a checksum mismatch, an empty holder."""


class ConfigError(OffchainError):
    """A setting is missing or out of range."""


class AllocationError(OffchainError):
    """Payment amounts cannot be formed (negative budget, no eligible holder, bad weights)."""


class StageError(OffchainError):
    """A round stage cannot run: a required input artifact is missing or inconsistent."""


class ChainError(OffchainError):
    """Talking to the chain failed (node not reachable, transaction failed, compile failed)."""
