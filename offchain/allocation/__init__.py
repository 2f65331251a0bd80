"""Allocation: integer wei per holder (exact sum) and the Merkle tree of the payouts."""

from offchain.allocation.merkle import PayoutTree
from offchain.allocation.rounding import largest_remainder

__all__ = ["PayoutTree", "largest_remainder"]
