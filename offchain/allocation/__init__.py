"""Allocation: integer wei per holder (exact sum, within the on-chain caps) and the Merkle tree."""

from offchain.allocation.caps import PayoutCaps, capped_budget, capped_split
from offchain.allocation.merkle import PayoutTree
from offchain.allocation.rounding import largest_remainder

__all__ = ["PayoutCaps", "PayoutTree", "capped_budget", "capped_split", "largest_remainder"]
