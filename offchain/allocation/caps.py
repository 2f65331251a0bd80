"""The contract's payout caps, mirrored off chain so that every round the oracle signs is payable.

``CompensationPool`` rejects a round whose total exceeds the campaign's ``roundCap`` or its
unallocated escrow (``postRound``: ``RoundCapExceeded``, ``InsufficientUnallocated``), and a
claim that would take one account's payments of a round, summed over its leaves, above
``holderCap`` (``claim``: ``HolderCapExceeded``; the round is accepted, the over-cap holder just
can never be paid in full). The oracle therefore keeps every round inside the caps
by construction, in two steps:

1. :func:`capped_budget` clips the round budget to what the caps allow for the holders that are
   to be paid (the policy decision, :func:`offchain.policy.apply_caps`);
2. :func:`capped_split` splits that budget exactly in proportion to the weights, except that no
   holder gets more than the holder cap: the excess goes to the others (water-filling).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from offchain.allocation.rounding import largest_remainder
from offchain.allocation.wei import parse_wei, wei_str
from offchain.errors import AllocationError

__all__ = ["PayoutCaps", "capped_budget", "capped_split"]


def _check_wei(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise AllocationError(f"{name} must be an int (wei), got {type(value).__name__}")
    if value < 0:
        raise AllocationError(f"{name} must be >= 0, got {value}")
    return int(value)


@dataclass(frozen=True)
class PayoutCaps:
    """What one round may pay, all in wei (token units of the campaign's asset).

    Attributes:
        round_cap_wei: largest round total; the campaign's ``roundCap``, checked by
            ``postRound`` (``RoundCapExceeded``).
        holder_cap_wei: largest total payment to one account in one round (the allocator gives
            each holder one leaf per round); the campaign's ``holderCap``, checked per account
            per round by ``claim`` (``HolderCapExceeded``). At most the round cap.
        escrow_wei: the campaign's unallocated escrow (``unallocated(campaignId)``: funded minus
            every pending or final round's total), checked by ``postRound``
            (``InsufficientUnallocated``).

    Raises:
        AllocationError: a value is not a non-negative int, or the holder cap exceeds the round
            cap.
    """

    round_cap_wei: int
    holder_cap_wei: int
    escrow_wei: int

    def __post_init__(self) -> None:
        for name in ("round_cap_wei", "holder_cap_wei", "escrow_wei"):
            object.__setattr__(self, name, _check_wei(name, getattr(self, name)))
        if self.holder_cap_wei > self.round_cap_wei:
            raise AllocationError(
                f"holder_cap_wei {self.holder_cap_wei} exceeds round_cap_wei {self.round_cap_wei}"
            )

    def to_json(self) -> dict[str, str]:
        """The caps as a JSON object of decimal strings (wei; see :mod:`offchain.allocation.wei`)."""
        return {
            name: wei_str(getattr(self, name), name)
            for name in ("round_cap_wei", "holder_cap_wei", "escrow_wei")
        }

    @classmethod
    def from_json(cls, data: dict[str, str | int]) -> PayoutCaps:
        """Inverse of :meth:`to_json` (strict decimal strings; legacy ints accepted)."""
        return cls(*(parse_wei(data[name], name)
                     for name in ("round_cap_wei", "holder_cap_wei", "escrow_wei")))


def capped_budget(budget_wei: int, n_payable: int, caps: PayoutCaps) -> int:
    """The largest round budget ≤ ``budget_wei`` that the caps let ``n_payable`` holders be paid.

    ``min(budget, round cap, escrow, holder cap × n_payable)``: a budget above the last term
    could not be split without some holder exceeding the holder cap.

    Args:
        budget_wei: the budget the policy wants, in wei (int ≥ 0).
        n_payable: holders that may be paid (positive weight), ≥ 0.
        caps: the campaign's caps and escrow.

    Raises:
        AllocationError: ``budget_wei`` or ``n_payable`` is negative or not an int.
    """
    budget_wei = _check_wei("budget_wei", budget_wei)
    n_payable = _check_wei("n_payable", n_payable)
    return min(budget_wei, caps.round_cap_wei, caps.escrow_wei, caps.holder_cap_wei * n_payable)


def capped_split(
    budget_wei: int, weights: Sequence[float] | np.ndarray, holder_cap_wei: int
) -> list[int]:
    """Split ``budget_wei`` exactly in proportion to ``weights`` with no amount above the cap.

    First :func:`~offchain.allocation.largest_remainder` over all weights; while some holder's
    amount exceeds ``holder_cap_wei``, those holders get exactly the cap and what remains is
    split again (largest remainder) among the positive-weight holders not yet capped
    (water-filling). When no cap binds the result is exactly ``largest_remainder``'s.

    Args:
        budget_wei: the amount to split, in wei (int ≥ 0).
        weights: shape (n,), non-negative finite numbers; only their ratios matter.
        holder_cap_wei: the most any one holder may get, in wei (int ≥ 0).

    Returns:
        ``n`` ints ≥ 0 summing exactly to ``budget_wei``, each ≤ ``holder_cap_wei``, 0 where
        the weight is 0.

    Raises:
        AllocationError: bad budget, cap or weights (as for ``largest_remainder``), or
            ``budget_wei`` > ``holder_cap_wei`` × (number of positive weights): no split fits.

    >>> capped_split(10, [8, 1, 1], 4)
    [4, 3, 3]
    """
    budget_wei = _check_wei("budget_wei", budget_wei)
    cap = _check_wei("holder_cap_wei", holder_cap_wei)
    amounts = largest_remainder(budget_wei, weights)  # validates the weights
    values = list(weights.ravel().tolist() if isinstance(weights, np.ndarray) else weights)
    positive = [i for i, w in enumerate(values) if w > 0]
    if budget_wei > cap * len(positive):
        raise AllocationError(
            f"cannot split {budget_wei} wei among {len(positive)} holders with positive weight "
            f"under a holder cap of {cap} wei (at most {cap * len(positive)} wei)"
        )
    capped: set[int] = set()
    while True:
        over = [i for i in positive if i not in capped and amounts[i] > cap]
        if not over:
            return amounts
        capped.update(over)
        free = [i for i in positive if i not in capped]
        # free is non-empty and the rest positive: the over-cap holders held more than
        # cap each, and budget ≤ cap · len(positive).
        rest = budget_wei - cap * len(capped)
        shares = largest_remainder(rest, [values[i] for i in free])
        amounts = [0] * len(values)
        for i in capped:
            amounts[i] = cap
        for i, share in zip(free, shares, strict=True):
            amounts[i] = share
