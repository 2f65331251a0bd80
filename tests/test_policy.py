"""Baseline budget policies and the participation rule."""

import numpy as np
import pytest

from offchain.allocation import largest_remainder
from offchain.errors import ConfigError
from offchain.policy import CampaignState, HolderFeatures, make_policy
from offchain.policy.participation import required_payment_wei, stays_next_round

B = 1500 * 10**18


def _state(round_id, remaining=B, n_rounds=3):
    return CampaignState(round_id, n_rounds, B, remaining, n_participants=3, n_holders=4)


def _features(participating=(True, True, True, False)):
    return HolderFeatures(
        contribution=np.array([0.6, 0.4, 0.0, 0.0]),
        copyright_loss=np.array([0.1, 0.1, 0.8, 0.9]),
        n_images=np.array([10, 20, 30, 40]),
        participating=np.array(participating),
    )


def test_linear_budget_spends_everything_over_the_rounds():
    policy = make_policy("linear/equal")
    remaining = B
    for r in range(1, 4):
        budget = policy.decide(_state(r, remaining), _features()).budget_wei
        remaining -= budget
    assert remaining == 0


def test_greedy_budget_front_loads_and_never_exceeds_remaining():
    policy = make_policy("greedy/equal")
    budgets = []
    remaining = B
    for r in range(1, 4):
        budgets.append(policy.decide(_state(r, remaining), _features()).budget_wei)
        remaining -= budgets[-1]
    assert budgets == [B // 2, B // 4, B // 4]
    assert policy.decide(_state(2, remaining=10), _features()).budget_wei == 10


def test_random_budget_is_seeded_and_spends_the_budget():
    def plan(seed):
        policy, remaining, out = make_policy("random/equal", seed=seed), B, []
        for r in range(1, 4):
            out.append(policy.decide(_state(r, remaining), _features()).budget_wei)
            remaining -= out[-1]
        return out

    assert plan(1) == plan(1) and sum(plan(1)) == B and plan(1) != plan(2)


def test_non_participants_are_never_paid():
    for lower in ("equal", "random", "contribution", "weighted"):
        weights = make_policy(f"linear/{lower}").decide(_state(1), _features()).weights
        assert weights[3] == 0 and weights.sum() > 0 and (weights >= 0).all(), lower


def test_weighted_split_compensates_copyright_loss_instead_of_punishing_it():
    weights = make_policy("linear/weighted").decide(_state(1), _features()).weights
    # holder 2 contributed nothing measurable but its works are reproduced: it is paid.
    assert weights[2] > 0
    contribution_only = make_policy("linear/contribution").decide(_state(1), _features()).weights
    assert contribution_only[2] == 0


def test_policy_weights_turn_into_wei_that_sum_to_the_round_budget():
    decision = make_policy("linear/weighted").decide(_state(1), _features())
    amounts = largest_remainder(decision.budget_wei, decision.weights)
    assert sum(amounts) == decision.budget_wei == B // 3


def test_unknown_policy_name_is_rejected_with_the_choices():
    with pytest.raises(ConfigError, match="upper in"):
        make_policy("fancy/equal")


def test_no_participant_is_an_error():
    with pytest.raises(ConfigError, match="no participating holder"):
        make_policy("linear/equal").decide(_state(1), _features((False,) * 4))


def test_required_payment_rises_with_copyright_loss():
    assert required_payment_wei(100, 0.0) == 100
    assert required_payment_wei(100, 0.5) == 150
    assert required_payment_wei(3, 0.1) == 4  # ceil(3.3)
    with pytest.raises(ConfigError):
        required_payment_wei(100, 1.5)


def test_holders_paid_below_their_raised_price_leave_and_do_not_return():
    stays = stays_next_round(
        participating=[True, True, False],
        payments_wei=[150, 149, 10**30],
        reservation_prices_wei=[100, 100, 1],
        copyright_losses=[0.5, 0.5, 0.0],
    )
    assert stays.tolist() == [True, False, False]
