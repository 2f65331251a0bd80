"""Allocation: integer wei per holder (exact sum, within the on-chain caps) and the Merkle tree."""

from offchain.allocation.caps import PayoutCaps, capped_budget, capped_split
from offchain.allocation.merkle import PayoutTree
from offchain.allocation.round import (
    ROUND_ALLOCATION_FIELDS,
    ROUND_ALLOCATION_TYPE,
    RoundAllocation,
    SigningError,
)
from offchain.allocation.rounding import largest_remainder
from offchain.allocation.wei import (
    UINT256_MAX,
    WEI_PER_TOKEN,
    WeiFormatError,
    js_safe,
    parse_wei,
    wei_str,
    wei_str_or_none,
)

__all__ = [
    "ROUND_ALLOCATION_FIELDS",
    "ROUND_ALLOCATION_TYPE",
    "PayoutCaps",
    "PayoutTree",
    "RoundAllocation",
    "SigningError",
    "UINT256_MAX",
    "WEI_PER_TOKEN",
    "WeiFormatError",
    "capped_budget",
    "capped_split",
    "js_safe",
    "largest_remainder",
    "parse_wei",
    "wei_str",
    "wei_str_or_none",
]
