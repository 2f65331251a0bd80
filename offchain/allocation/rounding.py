"""Turn real-valued payment weights into integer wei amounts that sum exactly to a budget.

Money is integer wei end to end. The split uses the largest-remainder (Hamilton) method in exact
integer arithmetic: every holder first gets ``floor(budget · wᵢ / Σw)``; the wei left over
(fewer than the number of holders) go one each to the holders with the largest remainders, ties
broken by lower index. Each amount is therefore within 1 wei of its exact quota, no amount is
negative, and the amounts sum to the budget exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from offchain.errors import AllocationError

__all__ = ["largest_remainder"]


def largest_remainder(budget_wei: int, weights: Sequence[float] | np.ndarray) -> list[int]:
    """Split ``budget_wei`` in proportion to ``weights``, exactly.

    Args:
        budget_wei: the amount to split, in wei (a non-negative Python ``int``; no floats).
        weights: shape (n,), non-negative finite numbers (any float or int dtype). Only their
            ratios matter. Floats are converted to exact fractions, so no rounding error
            enters before the split.

    Returns:
        ``n`` non-negative ints (wei) with ``sum == budget_wei``; ``amounts[i]`` is
        ``floor`` or ``ceil`` of ``budget_wei · wᵢ / Σw``, and 0 wherever ``wᵢ == 0``.

    Raises:
        AllocationError: the budget is negative or not an int; a weight is negative, NaN or
            infinite; there are no weights; all weights are zero while the budget is positive.

    >>> largest_remainder(10, [1, 1, 1])
    [4, 3, 3]
    >>> largest_remainder(10**18, [0.5, 0.25, 0.25])
    [500000000000000000, 250000000000000000, 250000000000000000]
    """
    if isinstance(budget_wei, bool) or not isinstance(budget_wei, int | np.integer):
        raise AllocationError(f"budget_wei must be an int (wei), got {type(budget_wei).__name__}")
    budget_wei = int(budget_wei)
    if budget_wei < 0:
        raise AllocationError(f"budget_wei must be >= 0, got {budget_wei}")
    w = np.asarray(weights, dtype=np.float64).ravel() if not _all_ints(weights) else None
    raw = list(weights) if w is None else w.tolist()
    if len(raw) == 0:
        raise AllocationError("no weights: cannot split a budget among zero holders")
    fractions: list[Fraction] = []
    for i, value in enumerate(raw):
        if isinstance(value, float) and not np.isfinite(value):
            raise AllocationError(f"weight {i} is not finite: {value}")
        frac = Fraction(value)
        if frac < 0:
            raise AllocationError(f"weight {i} is negative: {value}")
        fractions.append(frac)
    total = sum(fractions, Fraction(0))
    if total == 0:
        if budget_wei == 0:
            return [0] * len(fractions)
        raise AllocationError(f"all weights are zero; cannot split {budget_wei} wei")
    # Exact quotas q_i = budget * f_i / total as integer floor plus remainder numerators.
    quotas = [budget_wei * f / total for f in fractions]
    amounts = [int(q.numerator // q.denominator) for q in quotas]
    remainders = [q - a for q, a in zip(quotas, amounts, strict=True)]
    leftover = budget_wei - sum(amounts)
    # leftover < n because each remainder < 1 and they sum to an integer.
    order = sorted(range(len(amounts)), key=lambda i: (-remainders[i], i))
    for i in order[:leftover]:
        amounts[i] += 1
    return amounts


def _all_ints(values: Sequence[float] | np.ndarray) -> bool:
    if isinstance(values, np.ndarray):
        return bool(np.issubdtype(values.dtype, np.integer))
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)
