"""The campaign simulator, its gymnasium environments, the observations and the RL policy."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offchain.errors import ConfigError
from offchain.policy import CampaignState, HolderFeatures, make_policy
from offchain.policy.calibrate import QUANTILE_LEVELS, EnvCalibration
from offchain.policy.env import (
    CampaignConfig,
    CampaignSimulator,
    LowerEnv,
    RandomPaceBudget,
    RewardConfig,
    UpperEnv,
    budget_from_action,
    gini,
)
from offchain.policy.evaluate import BASELINES
from offchain.policy.observations import (
    CAMPAIGN_OBS_DIM,
    LOWER_OBS_DIM,
    campaign_obs,
    lower_obs,
    softmax_weights,
)
from offchain.policy.participation import required_payment_wei

B = 1500 * 10**18


def calibration(n_images=(24, 32, 40, 48, 64, 80, 96, 128), **overrides) -> EnvCalibration:
    """A calibration shaped like a measured one (MNIST-like figures)."""
    values = dict(
        dataset="test",
        n_images=tuple(n_images),
        fid_coef=(9.0, -0.6, -0.2),
        fid_residual_std=0.05,
        fid_r2=0.9,
        n_fid_obs=12,
        contribution_exponent=1.0,
        contribution_noise=0.3,
        contribution_r2=0.5,
        contribution_zero_fraction=0.1,
        n_contribution_obs=60,
        copyright_loss_quantiles=tuple(np.linspace(0.0, 0.01, len(QUANTILE_LEVELS))),
        copyright_loss_mean=0.005,
        n_copyright_obs=60,
        rounds=(),
        sources=(),
    )
    values.update(overrides)
    return EnvCalibration(**values)


def test_a_campaign_pays_integer_wei_within_the_budget_and_holders_who_leave_stay_gone():
    sim = CampaignSimulator(calibration())
    policy = make_policy("greedy/contribution")
    sim.reset(3)
    history = []
    while not sim.done:
        before = sim.participating.copy()
        sim.step(policy.decide(sim.state, sim.features))
        history.append((before, sim.participating.copy()))
    metrics = sim.metrics()
    assert all(isinstance(b, int) for b in metrics.budgets_wei)
    assert sum(metrics.payments_wei) == sum(metrics.budgets_wei) <= B
    for before, after in history:
        assert not (after & ~before).any()  # nobody comes back
    assert 0.0 <= metrics.gini <= 1.0 and 0.0 <= metrics.budget_spent <= 1.0


def test_a_holder_stays_exactly_when_paid_its_price_raised_by_its_copyright_loss():
    cal = calibration(n_images=(10, 20, 30), contribution_noise=0.0, contribution_zero_fraction=0.0)
    # A budget small enough that float64 weights of the amounts are exact.
    camp = CampaignConfig(
        n_rounds=3,
        total_budget_wei=3_000_000,
        demand=0.5,
        price_noise=0.0,
        exposed_fraction=1 / 3,
        exposed_loss=0.5,
        noise=False,
    )
    sim = CampaignSimulator(cal, camp)
    sim.reset(0)
    required = [
        required_payment_wei(p, float(c)) for p, c in zip(sim.prices_wei, sim.loss, strict=True)
    ]
    from offchain.policy.base import PolicyDecision

    short = list(required)
    short[0] -= 1  # one wei short
    sim.step(PolicyDecision(sum(short), np.array(short, dtype=np.float64)))
    assert sim.paid_wei == short
    assert sim.participating.tolist() == [False, True, True]
    assert sim.losses[0][sim.exposed].tolist() == [0.5]


def test_the_same_seed_replays_the_same_campaign():
    sim = CampaignSimulator(calibration())
    a = sim.run(make_policy("random/random", seed=1), seed=7)
    b = sim.run(make_policy("random/random", seed=1), seed=7)
    assert a == b


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    round_cap_tokens=st.integers(1, 1500),
    holder_share=st.floats(0.01, 1.0),
    method=st.sampled_from(BASELINES),
    seed=st.integers(0, 10**6),
)
def test_every_policy_respects_the_on_chain_caps_in_every_round(
    round_cap_tokens, holder_share, method, seed
):
    round_cap = round_cap_tokens * 10**18
    holder_cap = max(1, int(round_cap * holder_share))
    camp = CampaignConfig(round_cap_wei=round_cap, holder_cap_wei=holder_cap)
    sim = CampaignSimulator(calibration(), camp)
    policy = make_policy(method, seed=seed)
    sim.reset(seed)
    paid_before = [0] * sim.n_holders
    while not sim.done:
        sim.step(policy.decide(sim.state, sim.features))
        paid_now = [a - b for a, b in zip(sim.paid_wei, paid_before, strict=True)]
        assert sum(paid_now) == sim.budgets_wei[-1] <= round_cap
        assert max(paid_now) <= holder_cap
        paid_before = list(sim.paid_wei)
    assert sum(sim.budgets_wei) <= B


@settings(max_examples=25, deadline=None)
@given(actions=st.lists(st.floats(-1.0, 1.0), min_size=5, max_size=5), seed=st.integers(0, 99))
def test_rl_actions_cannot_break_the_caps_either(actions, seed):
    camp = CampaignConfig(round_cap_wei=200 * 10**18, holder_cap_wei=40 * 10**18)
    env = UpperEnv(CampaignSimulator(calibration(), camp), make_policy("linear/equal").lower)
    env.reset(seed=seed)
    for a in actions:
        budgets = list(env.sim.budgets_wei)
        paid = list(env.sim.paid_wei)
        _, _, done, _, _ = env.step(np.array([a], dtype=np.float32))
        round_paid = [x - y for x, y in zip(env.sim.paid_wei, paid, strict=True)]
        assert env.sim.budgets_wei[len(budgets)] <= 200 * 10**18
        assert max(round_paid) <= 40 * 10**18
        if done:
            break


def test_budget_from_action_spans_nothing_to_twice_the_linear_pace():
    state = CampaignState(2, 5, B, B // 2, n_participants=3, n_holders=3)
    assert budget_from_action(-1.0, state) == 0
    assert budget_from_action(0.0, state) == (B // 2) // 4
    assert budget_from_action(1.0, state) == 2 * (B // 2) // 4
    last = CampaignState(5, 5, B, 10, n_participants=3, n_holders=3)
    assert budget_from_action(1.0, last) == 10  # never more than remains


def _features(participating=(True, True, True, False)):
    return HolderFeatures(
        contribution=np.array([0.2, 0.3, 0.5, 0.0]),
        copyright_loss=np.array([0.0, 0.5, 0.0, 0.9]),
        n_images=np.array([10, 20, 30, 40]),
        participating=np.array(participating),
    )


def test_observations_are_scale_free_and_bounded():
    state = CampaignState(2, 5, B, B // 2, n_participants=3, n_holders=4)
    small = CampaignState(2, 5, 1500, 750, n_participants=3, n_holders=4)
    obs = campaign_obs(state, _features())
    assert obs.shape == (CAMPAIGN_OBS_DIM,) and obs.dtype == np.float32
    assert ((obs >= 0) & (obs <= 1)).all()
    np.testing.assert_allclose(obs, campaign_obs(small, _features()))
    with pytest.raises(ConfigError, match="round budget"):
        lower_obs(state, _features())
    low = lower_obs(replace(state, round_budget_wei=(B // 2) // 4), _features())
    assert low.shape == (LOWER_OBS_DIM,) and low[-1] == pytest.approx(0.5)


def test_softmax_weights_can_pay_per_image_raised_by_copyright_loss():
    weights = softmax_weights(np.array([0.0, 1.0, 0.0]), _features())
    expected = np.array([10 * 1.0, 20 * 1.5, 30 * 1.0, 0.0])
    np.testing.assert_allclose(weights, expected / expected.sum())
    per_image = softmax_weights(np.zeros(3), _features())
    np.testing.assert_allclose(per_image, [10 / 60, 20 / 60, 30 / 60, 0.0])  # θ = 0: pro rata
    np.testing.assert_allclose(
        softmax_weights(np.array([-1.0, 0.0, 0.0]), _features()), [1 / 3, 1 / 3, 1 / 3, 0.0]
    )  # the equal split


def test_gymnasium_checks_pass_for_both_levels():
    from gymnasium.utils.env_checker import check_env

    check_env(
        UpperEnv(CampaignSimulator(calibration()), make_policy("linear/equal").lower),
        skip_render_check=True,
    )
    check_env(
        LowerEnv(CampaignSimulator(calibration()), RandomPaceBudget(seed=1)), skip_render_check=True
    )


def test_reward_and_campaign_configs_load_from_json_and_reject_bad_values(tmp_path):
    path = tmp_path / "reward.json"
    path.write_text('{"quality": 2.0, "budget": 0.0}')
    reward = RewardConfig.model_validate_json(path.read_text())
    assert reward.quality == 2.0 and reward.retention == 1.0
    with pytest.raises(ValueError):
        RewardConfig(quality=-1.0)
    with pytest.raises(ValueError):
        RewardConfig.model_validate_json('{"qualty": 1}')  # typo is an error, not ignored
    with pytest.raises((ConfigError, ValueError), match="holder_cap"):
        CampaignConfig(round_cap_wei=10, holder_cap_wei=11)


def test_gini_of_equal_and_of_winner_take_all_payments():
    assert gini(np.array([5.0, 5.0, 5.0, 5.0])) == 0.0
    assert gini(np.array([0.0, 0.0, 0.0, 8.0])) == pytest.approx(0.75)
    assert gini(np.zeros(3)) == 0.0


def test_the_monotone_quality_model_drops_wrong_sign_slopes_and_keeps_right_ones():
    from offchain.policy.calibrate import fit_fid, fit_fid_monotone
    from offchain.policy.env import quality_coefficients

    rng = np.random.default_rng(0)
    d_t = rng.integers(50, 500, 12).astype(float)
    t = np.tile([1.0, 2.0, 3.0], 4)
    good = np.exp(8.0 - 0.5 * np.log(d_t) - 0.2 * np.log(t) + 0.01 * rng.standard_normal(12))
    np.testing.assert_allclose(fit_fid_monotone(d_t, t, good), fit_fid(d_t, t, good)["coef"])
    bad = np.exp(1.0 + 0.7 * np.log(d_t) - 0.2 * np.log(t) + 0.01 * rng.standard_normal(12))
    a, b, c = fit_fid_monotone(d_t, t, bad)
    assert b == 0.0 and c <= 0.0
    rounds = tuple({"D_t": d, "round_id": r, "fid": f} for d, r, f in zip(d_t, t, bad, strict=True))
    cal = calibration(fid_coef=fit_fid(d_t, t, bad)["coef"], rounds=rounds)
    assert quality_coefficients(cal, "fit")[1] > 0.6
    assert quality_coefficients(cal, "monotone") == (a, b, c)
    # without measured rounds the fitted slopes are clipped at 0
    assert quality_coefficients(calibration(fid_coef=(1.0, 0.5, -0.1)), "monotone") == (
        1.0,
        0.0,
        -0.1,
    )
