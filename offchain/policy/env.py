"""A payment campaign as a simulator and as gymnasium environments, calibrated from measured rounds.

A campaign has T rounds, a total budget B (wei) and N holders with image counts nᵢ. Each round:

1. the participating holders' data trains the model; its reference-classifier FID follows the
   calibrated fit ``log FID_t = a + b·log D_t + c·log t + ε`` (D_t = images trained on in round t;
   :class:`~offchain.policy.calibrate.EnvCalibration`, fitted on rounds the oracle measured;
   by default refitted with b ≤ 0 and c ≤ 0, :func:`quality_coefficients`);
2. each participant's TRAK contribution share is drawn from the calibrated model
   ``shareᵢ ∝ nᵢ^κ · exp(σ z)`` and its copyright loss from the measured loss distribution;
   holders whose works the model reproduces ("exposed" holders, a scenario parameter) suffer the
   loss level measured for memorised works;
3. the policy picks the round budget (upper level) and the holders' weights (lower level); the
   weights become integer wei summing exactly to the budget, within the on-chain caps;
4. a holder stays for the next round only if paid at least its reservation price raised by its
   copyright loss (:func:`offchain.policy.participation.stays_next_round`); one that leaves does
   not come back.

Reservation prices are private to the holders (the policy never sees them): they are drawn per
episode as ``pᵢ = p̄ · nᵢ · exp(σ_p z − σ_p²/2)`` with ``p̄`` set so that keeping everyone for
the whole campaign costs ``demand · B`` in expectation.

The sponsor's reward (weights in :class:`RewardConfig`), per round t and at the end:

- retention: ``Σᵢ vᵢ·stayᵢ / Σᵢ vᵢ / T`` with value ``vᵢ = nᵢ^κ`` (the expected contribution);
- compensation: the share of the round's monetised copyright harm ``Σ pᵢ·CLᵢ`` that payments
  above the reservation price cover (each holder's cover capped at its own harm), ``/ T``;
- quality (end): ``−log(FID_final / FID_full)``, FID_full the noise-free FID with every holder
  in every round;
- budget (end): unspent budget ``/ B`` (it returns to the sponsor).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Literal

import gymnasium as gym
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from offchain.allocation import WEI_PER_TOKEN, PayoutCaps, capped_split
from offchain.errors import AllocationError, ConfigError
from offchain.policy.base import (
    CampaignState,
    HolderFeatures,
    LowerPolicy,
    PolicyDecision,
    UpperPolicy,
)
from offchain.policy.baselines import HierarchicalPolicy
from offchain.policy.calibrate import MIN_FID_ROUNDS, EnvCalibration, fit_fid_monotone
from offchain.policy.observations import (
    CAMPAIGN_OBS_DIM,
    HOLDER_FEATURE_NAMES,
    LOWER_OBS_DIM,
    THETA_SCALE,
    campaign_obs,
    lower_obs,
    softmax_weights,
)
from offchain.policy.participation import stays_next_round

__all__ = [
    "CampaignConfig",
    "CampaignSimulator",
    "EpisodeMetrics",
    "LowerEnv",
    "RandomPaceBudget",
    "RewardConfig",
    "UpperEnv",
    "budget_from_action",
    "gini",
    "quality_coefficients",
]

_PRECISION = 10**9


class RewardConfig(BaseModel):
    """What the sponsor wants, as weights of the reward's four terms (each term is O(1)).

    Load from a JSON file with ``RewardConfig.model_validate_json(path.read_text())``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    quality: float = Field(1.0, ge=0)
    """Weight of final model quality, ``−log(FID_final / FID_full)``."""
    retention: float = Field(1.0, ge=0)
    """Weight of the value-weighted share of holders kept, averaged over rounds."""
    compensation: float = Field(0.5, ge=0)
    """Weight of the share of monetised copyright harm compensated, averaged over rounds."""
    budget: float = Field(0.5, ge=0)
    """Weight of the unspent share of B returned to the sponsor at the end."""


class CampaignConfig(BaseModel):
    """The simulated campaign: rounds, budget, caps and the holders' private side.

    Prices and exposure are a scenario, not a measurement: reservation prices are declared by
    holders in a real campaign, and which holders' works get reproduced depends on the data.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_rounds: int = Field(5, ge=1)
    """T, rounds per campaign (the paper's 5)."""
    total_budget_wei: int = Field(1500 * WEI_PER_TOKEN, gt=0)
    """B in wei (the paper's 1500 tokens)."""
    demand: float = Field(0.6, gt=0)
    """Expected cost of keeping every holder every round, as a fraction of B."""
    price_noise: float = Field(0.25, ge=0)
    """σ_p of the lognormal spread of reservation prices around p̄·nᵢ."""
    exposed_fraction: float = Field(0.25, ge=0, le=1)
    """Share of holders whose works the model reproduces."""
    exposed_loss: float = Field(0.6, ge=0, le=1)
    """Copyright loss of an exposed holder: the share of generations copying its works. 0.6 is
    what the memorisation test measured (19.2 expected copies of 32 samples,
    tests/test_copyright_memorization.py)."""
    exposed_loss_noise: float = Field(0.2, ge=0)
    """Lognormal σ of an exposed holder's loss from round to round."""
    round_cap_wei: int | None = Field(None, gt=0)
    """On-chain per-round cap in wei (None: B)."""
    holder_cap_wei: int | None = Field(None, gt=0)
    """On-chain per-holder-per-round cap in wei (None: the round cap)."""
    noise: bool = True
    """False: no randomness at all (FID, contributions, losses at their calibrated centres)."""
    quality_model: Literal["monotone", "fit"] = "monotone"
    """``monotone``: the FID fit refitted with b ≤ 0 and c ≤ 0 (more data and more training never
    worsen the expected FID; :func:`~offchain.policy.calibrate.fit_fid_monotone`); ``fit``: the
    unconstrained fit as measured, whose slopes on 9 noisy rounds can have the wrong sign."""

    @model_validator(mode="after")
    def _caps(self) -> CampaignConfig:
        round_cap = self.round_cap_wei or self.total_budget_wei
        if self.holder_cap_wei is not None and self.holder_cap_wei > round_cap:
            raise ConfigError(
                f"holder_cap_wei {self.holder_cap_wei} exceeds the round cap {round_cap}"
            )
        return self


@dataclass
class EpisodeMetrics:
    """What one simulated campaign did (the evaluation table's columns).

    Attributes:
        fid_final: FID of the last round's model (calibrated reference-classifier FID).
        retained: holders still willing to train after the last round paid.
        budget_spent: Σ round budgets / B, in [0, 1].
        utility_tokens: Σ over holders and rounds they trained in of
            ``payment − price·(1 + CL)``, in tokens (wei / 10¹⁸).
        compensation_ratio: payments above price that cover copyright harm / monetised harm
            ``Σ price·CL``, in [0, 1] (NaN when no holder suffered a loss).
        gini: Gini coefficient of the holders' total payments, in [0, 1].
        spearman: Spearman correlation of holders' total payment and total contribution
            (NaN when either is constant).
        episode_return: the sponsor's reward summed over the campaign.
        budgets_wei: round budgets, length T (0 after the campaign ended early).
        payments_wei: total paid per holder, length N.
        contributions: total contribution share per holder, length N.
    """

    fid_final: float
    retained: int
    budget_spent: float
    utility_tokens: float
    compensation_ratio: float
    gini: float
    spearman: float
    episode_return: float
    budgets_wei: list[int] = field(default_factory=list)
    payments_wei: list[int] = field(default_factory=list)
    contributions: list[float] = field(default_factory=list)


class CampaignSimulator:
    """One campaign at a time, driven by :meth:`step` with the policy's decision.

    Args:
        calibration: the measured dynamics (FID fit, contribution model, loss distribution)
            and the holders' image counts.
        campaign: rounds, budget, caps, prices and exposure scenario.
        reward: the sponsor's reward weights.
    """

    def __init__(
        self,
        calibration: EnvCalibration,
        campaign: CampaignConfig | None = None,
        reward: RewardConfig | None = None,
    ) -> None:
        self.calibration = calibration
        self.campaign = campaign or CampaignConfig()
        self.reward = reward or RewardConfig()
        self.n_images = np.asarray(calibration.n_images, dtype=np.int64)
        if len(self.n_images) < 1 or (self.n_images < 1).any():
            raise ConfigError(f"calibration has invalid image counts {calibration.n_images}")
        self.n_holders = len(self.n_images)
        kappa = float(calibration.contribution_exponent)
        self.value = self.n_images.astype(np.float64) ** kappa
        self.fid_coef = quality_coefficients(calibration, self.campaign.quality_model)
        self.fid_full = self._fid(int(self.n_images.sum()), self.campaign.n_rounds, 0.0)
        self.reset(0)

    # -- episode ------------------------------------------------------------------------------

    def reset(self, seed: int) -> None:
        """Start a new campaign: draw prices, exposure and every round's noise from ``seed``."""
        c, cal = self.campaign, self.calibration
        rng = np.random.default_rng(seed)
        n, t_max = self.n_holders, c.n_rounds
        noise = c.noise
        p_bar = c.demand * c.total_budget_wei / (t_max * float(self.n_images.sum()))
        sigma_p = c.price_noise if noise else 0.0
        spread = np.exp(sigma_p * rng.standard_normal(n) - sigma_p**2 / 2)
        self.prices_wei = [int(p_bar * k * s) for k, s in zip(self.n_images, spread, strict=True)]
        n_exposed = round(c.exposed_fraction * n)
        self.exposed = np.zeros(n, dtype=bool)
        self.exposed[rng.permutation(n)[:n_exposed]] = True
        # Per-round draws, fixed up front so a policy's choices do not change the randomness.
        quantiles = np.asarray(cal.copyright_loss_quantiles, dtype=np.float64)
        levels = np.linspace(0.0, 1.0, len(quantiles))
        u = rng.random((t_max, n)) if noise else np.full((t_max, n), 0.5)
        base_loss = np.interp(u, levels, quantiles)
        sigma_e = c.exposed_loss_noise if noise else 0.0
        exposed_loss = c.exposed_loss * np.exp(sigma_e * rng.standard_normal((t_max, n)))
        self.losses = np.clip(np.where(self.exposed, exposed_loss, base_loss), 0.0, 1.0)
        sigma_c = float(cal.contribution_noise) if noise else 0.0
        self.contribution_noise = np.exp(sigma_c * rng.standard_normal((t_max, n)))
        zero_fraction = float(cal.contribution_zero_fraction) if noise else 0.0
        self.contribution_zero = rng.random((t_max, n)) < zero_fraction
        sigma_f = float(cal.fid_residual_std) if noise else 0.0
        self.fid_noise = sigma_f * rng.standard_normal(t_max)

        self.round_id = 1
        self.remaining_wei = c.total_budget_wei
        self.participating = np.ones(n, dtype=bool)
        self.done = False
        self.episode_return = 0.0
        self.fid_last = float("nan")
        self.budgets_wei: list[int] = []
        self.paid_wei = [0] * n
        self.contribution_total = np.zeros(n)
        self.utility_wei = 0
        self.harm_wei = 0.0
        self.covered_wei = 0.0
        self._start_round()

    def _fid(self, images: int, round_id: int, noise: float) -> float:
        a, b, c = self.fid_coef
        return float(np.exp(a + b * np.log(max(images, 1)) + c * np.log(round_id) + noise))

    def _start_round(self) -> None:
        """Train on the participants (FID) and measure their contribution and loss."""
        t = self.round_id - 1
        part = self.participating
        images = int(self.n_images[part].sum())
        self.fid_last = self._fid(images, self.round_id, float(self.fid_noise[t]))
        kappa = float(self.calibration.contribution_exponent)
        raw = np.where(part, self.n_images.astype(np.float64) ** kappa, 0.0)
        raw *= self.contribution_noise[t]
        raw = np.where(self.contribution_zero[t] & part, 0.0, raw)
        if raw.sum() <= 0:  # every participant drew a zero: fall back to the noise-free shares
            raw = np.where(part, self.n_images.astype(np.float64) ** kappa, 0.0)
        self.contribution = raw / raw.sum()
        self.loss = np.where(part, self.losses[t], 0.0)

    @property
    def caps(self) -> PayoutCaps:
        """This round's on-chain caps: round cap, holder cap and the escrow left (wei)."""
        c = self.campaign
        round_cap = c.round_cap_wei or c.total_budget_wei
        return PayoutCaps(round_cap, c.holder_cap_wei or round_cap, self.remaining_wei)

    @property
    def state(self) -> CampaignState:
        """The upper level's view of the round about to be paid (caps included)."""
        return CampaignState(
            round_id=self.round_id,
            n_rounds=self.campaign.n_rounds,
            total_budget_wei=self.campaign.total_budget_wei,
            remaining_budget_wei=self.remaining_wei,
            n_participants=int(self.participating.sum()),
            n_holders=self.n_holders,
            caps=self.caps,
        )

    @property
    def features(self) -> HolderFeatures:
        """The lower level's view: this round's contributions and losses (shape (N,))."""
        return HolderFeatures(
            contribution=self.contribution.copy(),
            copyright_loss=self.loss.copy(),
            n_images=self.n_images.copy(),
            participating=self.participating.copy(),
        )

    def step(self, decision: PolicyDecision) -> tuple[float, bool]:
        """Pay the round as decided; return (reward, done).

        The amounts are :func:`~offchain.allocation.capped_split` of the budget, as the oracle
        pays them (a decision from :meth:`HierarchicalPolicy.decide
        <offchain.policy.baselines.HierarchicalPolicy.decide>` already fits the caps).

        Raises:
            ConfigError: the episode is over.
            AllocationError: the decision does not fit the caps.
        """
        if self.done:
            raise ConfigError("the campaign is over; call reset()")
        budget = int(decision.budget_wei)
        caps = self.caps
        if budget > min(caps.round_cap_wei, caps.escrow_wei):
            raise AllocationError(f"budget {budget} wei exceeds the caps {caps.to_json()}")
        weights = np.where(self.participating, np.asarray(decision.weights, np.float64), 0.0)
        amounts = (
            capped_split(budget, weights, caps.holder_cap_wei) if budget else [0] * self.n_holders
        )
        part = self.participating
        stays = stays_next_round(part, amounts, self.prices_wei, self.loss)
        w = self.reward
        t_max = self.campaign.n_rounds
        retention = float((self.value * stays).sum() / self.value.sum())
        harm = covered = 0.0
        for i in np.flatnonzero(part):
            price, paid = self.prices_wei[i], amounts[i]
            harm_i = price * float(self.loss[i])
            harm += harm_i
            covered += min(max(paid - price, 0), harm_i)
            self.utility_wei += paid - round(price * (1.0 + float(self.loss[i])))
            self.paid_wei[i] += paid
        compensation = covered / harm if harm > 0 else 1.0
        self.harm_wei += harm
        self.covered_wei += covered
        reward = (w.retention * retention + w.compensation * compensation) / t_max
        self.contribution_total += self.contribution
        self.budgets_wei.append(budget)
        self.remaining_wei -= budget
        self.participating = stays
        if self.round_id == t_max or not stays.any():
            self.done = True
            reward += w.budget * self.remaining_wei / self.campaign.total_budget_wei
            reward -= w.quality * float(np.log(self.fid_last / self.fid_full))
        else:
            self.round_id += 1
            self._start_round()
        self.episode_return += reward
        return reward, self.done

    def metrics(self) -> EpisodeMetrics:
        """The finished campaign's figures (see :class:`EpisodeMetrics`)."""
        from scipy.stats import spearmanr

        paid = np.asarray(self.paid_wei, dtype=np.float64)
        contribution = self.contribution_total
        if np.ptp(paid) > 0 and np.ptp(contribution) > 0:
            rho = float(spearmanr(paid, contribution).statistic)
        else:
            rho = float("nan")
        budgets = self.budgets_wei + [0] * (self.campaign.n_rounds - len(self.budgets_wei))
        return EpisodeMetrics(
            fid_final=self.fid_last,
            retained=int(self.participating.sum()),
            budget_spent=sum(self.budgets_wei) / self.campaign.total_budget_wei,
            utility_tokens=self.utility_wei / WEI_PER_TOKEN,
            compensation_ratio=self.covered_wei / self.harm_wei if self.harm_wei else float("nan"),
            gini=gini(paid),
            spearman=rho,
            episode_return=self.episode_return,
            budgets_wei=budgets,
            payments_wei=list(self.paid_wei),
            contributions=contribution.tolist(),
        )

    def run(self, policy, seed: int) -> EpisodeMetrics:
        """Play one whole campaign with a :class:`~offchain.policy.base.BudgetPolicy`."""
        self.reset(seed)
        while not self.done:
            self.step(policy.decide(self.state, self.features))
        return self.metrics()


def quality_coefficients(calibration: EnvCalibration, model: str) -> tuple[float, float, float]:
    """(a, b, c) of the simulated ``log FID_t = a + b·log D_t + c·log t``.

    ``fit``: the calibration's OLS fit. ``monotone``: refitted on the calibration's measured
    rounds with b ≤ 0 and c ≤ 0; without measured rounds (a hand-made calibration), the fit's
    slopes clipped at 0.
    """
    if model == "fit":
        return tuple(float(x) for x in calibration.fid_coef)
    measured = [r for r in calibration.rounds if r.get("fid") is not None]
    if len(measured) >= MIN_FID_ROUNDS:
        return fit_fid_monotone(
            [r["D_t"] for r in measured],
            [r["round_id"] for r in measured],
            [r["fid"] for r in measured],
        )
    a, b, c = (float(x) for x in calibration.fid_coef)
    return a, min(b, 0.0), min(c, 0.0)


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values, in [0, 1] (0 = equal; 0 when all are zero)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0 or x.sum() <= 0:
        return 0.0
    return float(np.abs(x[:, None] - x[None, :]).sum() / (2 * x.size**2 * x.mean()))


def budget_from_action(action: float, state: CampaignState) -> int:
    """Map an upper-level action a ∈ [−1, 1] to a round budget in wei.

    The action scales the Linear pace ``remaining / rounds_left`` by ``1 + a`` (0 to 2×), capped
    at what remains: a = 0 is the Linear baseline, a = −1 spends nothing. In wei:
    ``min(remaining, floor(remaining · (1 + a) / rounds_left))``.
    """
    pace = round((float(np.clip(action, -1.0, 1.0)) + 1.0) * _PRECISION)
    budget = state.remaining_budget_wei * pace // (_PRECISION * state.rounds_left)
    return min(budget, state.remaining_budget_wei)


# -- gymnasium environments -----------------------------------------------------------------------


@dataclass
class RandomPaceBudget:
    """A training opponent for the lower level: a random pace around Linear each round.

    Budget ``min(remaining, remaining · u / rounds_left)`` with u uniform in [low, high], so
    the lower level learns the best split for tight and loose budgets alike (it observes the
    budget, :func:`~offchain.policy.observations.lower_obs`).
    """

    low: float = 0.3
    high: float = 1.7
    seed: int = 0
    name: str = "random-pace"
    _rng: np.random.Generator | None = field(default=None, repr=False)

    def reseed(self, seed: int) -> None:
        """Restart the pace draws from ``seed`` (the environment calls it on reset)."""
        self._rng = np.random.default_rng([self.seed, seed])

    def round_budget(self, state: CampaignState, features: HolderFeatures | None = None) -> int:
        if self._rng is None:
            self._rng = np.random.default_rng(self.seed)
        return budget_from_action(float(self._rng.uniform(self.low, self.high)) - 1.0, state)


@dataclass
class _FixedUpper:
    """Adapter: an upper level whose budget was already chosen."""

    budget_wei: int
    name: str = "rl"

    def round_budget(self, state: CampaignState, features: HolderFeatures) -> int:
        return self.budget_wei


@dataclass
class _FixedLower:
    """Adapter: a lower level whose weights were already chosen (by an RL action)."""

    weights: np.ndarray
    name: str = "rl"

    def holder_weights(self, state: CampaignState, features: HolderFeatures) -> np.ndarray:
        return self.weights


class _LevelEnv(gym.Env, ABC):
    """Common part: one step per round, the other level a fixed policy; each level defines
    its observation (:meth:`_obs`)."""

    metadata = {"render_modes": []}

    def __init__(self, simulator: CampaignSimulator, obs_dim: int) -> None:
        self.sim = simulator
        self.observation_space = gym.spaces.Box(0.0, 1.0, (obs_dim,), np.float32)

    @abstractmethod
    def _obs(self) -> np.ndarray:
        """This level's observation of the current round, float32 (obs_dim,) in [0, 1]."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.sim.reset(int(self.np_random.integers(2**31 - 1)))
        for other in (getattr(self, "upper", None), getattr(self, "lower", None)):
            if hasattr(other, "reseed"):  # a random opponent replays with the episode
                other.reseed(int(self.np_random.integers(2**31 - 1)))
        return self._obs(), {}

    def _play(self, upper: UpperPolicy, lower: LowerPolicy):
        decision = HierarchicalPolicy(upper, lower).decide(self.sim.state, self.sim.features)
        reward, done = self.sim.step(decision)
        obs = np.zeros(self.observation_space.shape, np.float32) if done else self._obs()
        info = {"metrics": self.sim.metrics()} if done else {}
        return obs, float(reward), done, False, info


class UpperEnv(_LevelEnv):
    """The upper level's MDP: action a ∈ [−1, 1] → round budget, the lower level fixed.

    Observation: :func:`~offchain.policy.observations.campaign_obs`, shape (8,), float32.
    Action: shape (1,), float32, the pace relative to Linear (see :func:`budget_from_action`).
    """

    def __init__(self, simulator: CampaignSimulator, lower: LowerPolicy) -> None:
        super().__init__(simulator, CAMPAIGN_OBS_DIM)
        self.lower = lower
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def _obs(self) -> np.ndarray:
        return campaign_obs(self.sim.state, self.sim.features)

    def step(self, action):
        budget = budget_from_action(float(np.asarray(action).ravel()[0]), self.sim.state)
        return self._play(_FixedUpper(budget), self.lower)


class LowerEnv(_LevelEnv):
    """The lower level's MDP: action a ∈ [−1, 1]^3 → θ = 3a → weights ∝ exp(θ·φᵢ).

    The upper level (fixed) sets the round budget first; the lower level observes it.
    Observation: :func:`~offchain.policy.observations.lower_obs`, shape (9,), float32.
    Action: shape (3,), float32, coefficients on
    :data:`~offchain.policy.observations.HOLDER_FEATURE_NAMES`.
    """

    def __init__(self, simulator: CampaignSimulator, upper: UpperPolicy) -> None:
        super().__init__(simulator, LOWER_OBS_DIM)
        self.upper = upper
        self.action_space = gym.spaces.Box(-1.0, 1.0, (len(HOLDER_FEATURE_NAMES),), np.float32)
        self._budget = 0

    def _obs(self) -> np.ndarray:
        state, features = self.sim.state, self.sim.features
        self._budget = int(self.upper.round_budget(state, features))
        return lower_obs(replace(state, round_budget_wei=self._budget), features)

    def step(self, action):
        theta = THETA_SCALE * np.clip(np.asarray(action, dtype=np.float64).ravel(), -1.0, 1.0)
        weights = softmax_weights(theta, self.sim.features)
        return self._play(_FixedUpper(self._budget), _FixedLower(weights))
