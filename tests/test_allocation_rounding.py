"""Largest-remainder split: exact sums, no negative amounts, each within 1 wei of its quota."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offchain.allocation import largest_remainder
from offchain.errors import AllocationError

budgets = st.integers(min_value=0, max_value=10**30)
float_weights = st.lists(
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=40,
).filter(lambda ws: sum(ws) > 0)
int_weights = st.lists(st.integers(min_value=0, max_value=10**24), min_size=1, max_size=40).filter(
    lambda ws: sum(ws) > 0
)


@settings(max_examples=300, deadline=None)
@given(budget=budgets, weights=st.one_of(float_weights, int_weights))
def test_amounts_sum_exactly_to_budget_and_are_never_negative(budget, weights):
    amounts = largest_remainder(budget, weights)
    assert sum(amounts) == budget
    assert all(isinstance(a, int) and a >= 0 for a in amounts)
    assert len(amounts) == len(weights)


@settings(max_examples=300, deadline=None)
@given(budget=budgets, weights=st.one_of(float_weights, int_weights))
def test_each_amount_is_within_one_wei_of_its_exact_quota(budget, weights):
    amounts = largest_remainder(budget, weights)
    total = sum(Fraction(w) for w in weights)
    for amount, w in zip(amounts, weights, strict=True):
        quota = budget * Fraction(w) / total
        assert abs(amount - quota) < 1
        if w == 0:
            assert amount == 0


def test_leftover_wei_go_to_largest_remainders_then_lower_index():
    assert largest_remainder(10, [1, 1, 1]) == [4, 3, 3]
    assert largest_remainder(5, [1, 2]) == [2, 3]
    assert largest_remainder(7, [0, 1, 0]) == [0, 7, 0]


def test_numpy_weights_and_numpy_int_budget_are_accepted():
    assert largest_remainder(np.int64(9), np.array([0.2, 0.3, 0.5])) == [2, 3, 4]  # 1.8, 2.7, 4.5


@pytest.mark.parametrize(
    ("budget", "weights", "message"),
    [
        (-1, [1.0], "budget_wei must be >= 0"),
        (1.5, [1.0], "must be an int"),
        (True, [1.0], "must be an int"),
        (10, [], "no weights"),
        (10, [1.0, -0.1], "weight 1 is negative"),
        (10, [float("nan")], "weight 0 is not finite"),
        (10, [0.0, 0.0], "all weights are zero"),
    ],
)
def test_bad_input_raises_allocation_error_naming_the_problem(budget, weights, message):
    with pytest.raises(AllocationError, match=message):
        largest_remainder(budget, weights)
