"""The trained hierarchical policy against a campaign whose optimal plan is known analytically.

Campaign: three holders with 10, 20 and 30 images, T = 3 rounds, budget B. Prices are exactly
``pᵢ = p̄·nᵢ`` with ``p̄ = 0.5·B / (T·Σn)`` (no noise); one holder, drawn per campaign, is
exposed: its copyright loss is 0.5 every round, the others' 0. Contributions are ∝ nᵢ, FID is
flat (quality weight 0). Reward weights: retention 1, compensation 0.5, budget 1.

Optimal plan: pay every holder exactly ``rᵢ = ⌈pᵢ·(1 + CLᵢ)⌉`` every round. Paying less loses
the holder (it leaves); paying more only wastes budget. Dropping holder i saves at most
``rᵢ/B ≤ 0.75·nᵢ/(T·Σn)`` per round but loses ``nᵢ/(T·Σn)`` of retention, so keeping everyone
is optimal, and the optimal return is ``1 + 0.5 + (1 − T·Σ rᵢ / B)`` (retention 1,
compensation 1, the rest of the budget returned). The policy never sees prices: it must learn
the price level, pay per image and raise the exposed holder's payment by its loss.

The default run trains briefly (6 000 rounds per phase instead of 20 000, ≈ 70 s on one core)
and asks for 90 % of the optimum; the full training and the 95 % bar run with ``-m slow``. Both
ask that the exposed holder be paid more per image and that the bar beat every heuristic.
"""

import numpy as np
import pytest

from offchain.policy import make_policy
from offchain.policy.env import CampaignConfig, CampaignSimulator, RewardConfig
from offchain.policy.participation import required_payment_wei
from offchain.policy.rl import PPOConfig, load_policy, train_policy
from tests.test_policy_env import calibration

CAMPAIGN = CampaignConfig(
    n_rounds=3,
    demand=0.5,
    price_noise=0.0,
    exposed_fraction=1 / 3,
    exposed_loss=0.5,
    noise=False,
)
REWARD = RewardConfig(quality=0.0, retention=1.0, compensation=0.5, budget=1.0)
QUICK_PPO = PPOConfig(timesteps=6_000)
"""The default run's training: the default PPO settings with 6 000 rounds per phase."""


def _simulator() -> CampaignSimulator:
    cal = calibration(
        n_images=(10, 20, 30),
        fid_coef=(5.0, 0.0, 0.0),
        fid_residual_std=0.0,
        contribution_exponent=1.0,
        contribution_noise=0.0,
        contribution_zero_fraction=0.0,
        copyright_loss_quantiles=(0.0,) * 11,
    )
    return CampaignSimulator(cal, CAMPAIGN, REWARD)


def optimal_return(sim: CampaignSimulator, seed: int) -> float:
    """The analytic optimum of campaign ``seed`` (see the module docstring)."""
    sim.reset(seed)
    required = sum(
        required_payment_wei(price, float(loss))
        for price, loss in zip(sim.prices_wei, sim.losses[0], strict=True)
    )
    spent = CAMPAIGN.n_rounds * required
    return (
        REWARD.retention
        + REWARD.compensation
        + REWARD.budget * (1 - spent / sim.campaign.total_budget_wei)
    )


def _assert_near_the_optimum(sim: CampaignSimulator, policy, fraction: float) -> None:
    """The policy's mean return over 30 unseen campaigns is at least ``fraction`` of the
    analytic optimum, it pays the exposed holder more per image, and the best heuristic pair
    stays below 85 % of the optimum."""
    seeds = range(100, 130)  # campaigns the training never drew on purpose
    achieved = np.mean([sim.run(policy, seed=s).episode_return for s in seeds])
    optimum = np.mean([optimal_return(sim, s) for s in seeds])
    assert achieved >= fraction * optimum, f"{achieved:.3f} < {fraction:.0%} of {optimum:.3f}"
    # It compensates the exposed holder rather than punishing it: more per image.
    metrics = sim.run(policy, seed=100)
    per_image = np.array(metrics.payments_wei) / np.array(sim.n_images)
    assert per_image[sim.exposed].min() > 1.3 * per_image[~sim.exposed].max()
    # The bar is not trivial: the best heuristic pair spends the whole budget.
    best_baseline = max(
        np.mean([sim.run(make_policy(name), seed=s).episode_return for s in seeds])
        for name in ("linear/equal", "linear/contribution", "greedy/contribution")
    )
    assert best_baseline < 0.85 * optimum


@pytest.mark.slow
def test_the_hierarchical_policy_reaches_95_percent_of_the_analytic_optimum(tmp_path):
    sim = _simulator()
    folder = train_policy(
        sim.calibration, tmp_path / "policy", campaign=CAMPAIGN, reward=REWARD, seed=0
    )
    _assert_near_the_optimum(sim, load_policy(folder), 0.95)


def test_a_briefly_trained_policy_reaches_90_percent_of_the_analytic_optimum(tmp_path):
    sim = _simulator()
    folder = train_policy(
        sim.calibration, tmp_path / "policy", campaign=CAMPAIGN, reward=REWARD, ppo=QUICK_PPO,
        seed=0,
    )
    _assert_near_the_optimum(sim, load_policy(folder), 0.90)
