"""The hierarchical RL budget policy: two PPO agents (stable-baselines3), trained in alternation.

- Upper level (:class:`RLUpper`): observes the campaign context
  (:func:`~offchain.policy.observations.campaign_obs`) and picks this round's spending pace
  relative to Linear, 0 to 2× ``remaining / rounds_left``
  (:func:`~offchain.policy.env.budget_from_action`).
- Lower level (:class:`RLLower`): observes the same context and the round budget, and picks
  coefficients θ on the per-holder features; holders are paid ``wᵢ ∝ nᵢ·exp(θ·φᵢ)`` (a softmax
  head over the simplex, θ = 0 pays per image; it does not depend on the number of holders).

Training (:func:`train_policy`), bottom-up as hierarchical RL usually goes:

1. the lower level, conditioned on the round budget, against an upper level that draws a random
   pace each round (``lower_pace``, 0.3 to 1.2 × Linear), so it learns the best split for any
   budget, tight ones above all (``lower_pace.zip``; with the Linear upper level it is the
   method "Linear upper + RL lower");
2. the upper level against the equal split (``upper_equal.zip``: "RL upper + Linear lower");
3. the upper level against the trained lower level;
4. ``refinements`` times: the lower level again against the RL upper level, then the upper
   level against that lower level (``upper.zip`` + ``lower.zip``: the full hierarchical policy).

Every phase logs to CSV and TensorBoard under ``<out>/logs/<phase>/`` and the run's settings go
to ``<out>/policy.json``. The oracle loads the result with :func:`load_policy` (or
``make_policy("rl:<out>")``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from offchain.errors import ConfigError
from offchain.policy.base import CampaignState, HolderFeatures
from offchain.policy.baselines import EqualSplit, HierarchicalPolicy, LinearBudget
from offchain.policy.calibrate import EnvCalibration
from offchain.policy.env import (
    CampaignConfig,
    CampaignSimulator,
    LowerEnv,
    RandomPaceBudget,
    RewardConfig,
    UpperEnv,
    budget_from_action,
)
from offchain.policy.observations import (
    HOLDER_FEATURE_NAMES,
    THETA_SCALE,
    campaign_obs,
    lower_obs,
    softmax_weights,
)
from offchain.utils import read_json, write_json

__all__ = ["PPOConfig", "RLLower", "RLUpper", "load_policy", "train_policy"]

logger = logging.getLogger(__name__)

POLICY_FORMAT = 1
"""Version of the saved-policy folder layout and observation spec."""


@dataclass(frozen=True)
class PPOConfig:
    """PPO settings of both levels (stable-baselines3 names; one env step = one round)."""

    timesteps: int = 20_000
    """Environment steps (rounds) per training phase."""
    n_steps: int = 500
    """Rounds collected per PPO update (a multiple of T keeps whole campaigns together)."""
    batch_size: int = 100
    """Minibatch size of the PPO epochs."""
    n_epochs: int = 10
    """Passes over each rollout."""
    learning_rate: float = 1e-3
    """Adam step size."""
    gamma: float = 1.0
    """Discount: 1, the campaign is short and the sponsor counts every round alike."""
    gae_lambda: float = 0.95
    """GAE λ."""
    ent_coef: float = 0.0
    """Entropy bonus."""
    lower_log_std_init: float = -1.5
    """Initial log standard deviation of the lower level's Gaussian actions (θ/3)."""
    upper_log_std_init: float = -2.5
    """Initial log standard deviation of the upper level's actions: small, since keeping a
    holder is a cliff (paid one wei short, it leaves) and a noisy pace needs a wide margin."""
    net_arch: tuple[int, ...] = (64, 64)
    """Hidden layers of the actor and of the critic."""
    refinements: int = 2
    """Alternations after the first pass: the lower level trained again against the RL upper
    level, then the upper level against that lower level."""
    lower_pace: tuple[float, float] = (0.3, 1.2)
    """Range of the random pace (× Linear) the lower level trains against: mostly tight
    budgets, where the split decides who stays."""

    def __post_init__(self) -> None:
        for name in ("timesteps", "n_steps", "batch_size", "n_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not self.learning_rate > 0 or not 0 < self.gamma <= 1:
            raise ConfigError("learning_rate must be > 0 and gamma in (0, 1]")
        if not 0 <= self.gae_lambda <= 1 or self.ent_coef < 0 or self.refinements < 0:
            raise ConfigError("gae_lambda must be in [0, 1], ent_coef and refinements ≥ 0")
        if not self.net_arch or min(self.net_arch) < 1:
            raise ConfigError(f"net_arch must list positive layer widths, got {self.net_arch}")
        low, high = self.lower_pace
        if not 0 < low <= high:
            raise ConfigError(f"lower_pace must be 0 < low ≤ high, got {self.lower_pace}")

    def make(self, env, seed: int, log_dir: Path | None, level: str):
        """A fresh PPO agent for ``level`` (``upper``/``lower``) on ``env`` (CPU, MLP policy),
        logging to ``log_dir`` if given."""
        from stable_baselines3 import PPO

        agent = PPO(
            "MlpPolicy",
            env,
            n_steps=self.n_steps,
            batch_size=self.batch_size,
            n_epochs=self.n_epochs,
            learning_rate=self.learning_rate,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            ent_coef=self.ent_coef,
            policy_kwargs={
                "net_arch": list(self.net_arch),
                "log_std_init": self.upper_log_std_init
                if level == "upper"
                else self.lower_log_std_init,
            },
            seed=seed,
            device="cpu",
            verbose=0,
        )
        _set_logger(agent, log_dir)
        return agent


def _set_logger(agent, log_dir: Path | None) -> None:
    from stable_baselines3.common.logger import configure

    if log_dir is not None:
        agent.set_logger(configure(str(log_dir), ["csv", "tensorboard"]))


class RLUpper:
    """Upper level from a trained PPO agent: budget = share of what remains, deterministic.

    Args:
        agent: a stable-baselines3 model with a (1,) action in [−1, 1].
        n_rounds: the campaign length T it was trained for.

    Raises (at decision time):
        ConfigError: the campaign's T differs from the one the agent was trained for.
    """

    name = "rl"

    def __init__(self, agent, n_rounds: int) -> None:
        self.agent, self.n_rounds = agent, n_rounds

    def round_budget(self, state: CampaignState, features: HolderFeatures) -> int:
        _check_rounds(state, self.n_rounds)
        action, _ = self.agent.predict(campaign_obs(state, features), deterministic=True)
        return budget_from_action(float(np.asarray(action).ravel()[0]), state)


class RLLower:
    """Lower level from a trained PPO agent: weights ``∝ exp(θ·φᵢ)``, θ = 3·action."""

    name = "rl"

    def __init__(self, agent, n_rounds: int) -> None:
        self.agent, self.n_rounds = agent, n_rounds

    def theta(self, state: CampaignState, features: HolderFeatures) -> np.ndarray:
        """θ, shape (3,), float64, on :data:`~offchain.policy.observations.HOLDER_FEATURE_NAMES`."""
        _check_rounds(state, self.n_rounds)
        action, _ = self.agent.predict(lower_obs(state, features), deterministic=True)
        return THETA_SCALE * np.clip(np.asarray(action, dtype=np.float64).ravel(), -1.0, 1.0)

    def holder_weights(self, state: CampaignState, features: HolderFeatures) -> np.ndarray:
        return softmax_weights(self.theta(state, features), features)


def _check_rounds(state: CampaignState, n_rounds: int) -> None:
    if state.n_rounds != n_rounds:
        raise ConfigError(
            f"the RL policy was trained for {n_rounds}-round campaigns, this one has "
            f"{state.n_rounds}; train one with `policy-train --rounds {state.n_rounds}`"
        )


def train_policy(
    calibration: EnvCalibration,
    out_dir: Path,
    *,
    campaign: CampaignConfig | None = None,
    reward: RewardConfig | None = None,
    ppo: PPOConfig | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Train the upper and lower levels and save them under ``out_dir`` (skipped if done).

    Outputs: ``upper.zip``, ``lower.zip`` (the hierarchical policy), ``upper_equal.zip`` (RL
    upper level for the equal split), ``lower_pace.zip`` (RL lower level for any budget, used
    with the Linear upper level), ``policy.json`` (settings, seed, timings)
    and ``logs/<phase>/`` (``progress.csv`` and TensorBoard events).

    Returns:
        ``out_dir``.
    """
    import torch
    from stable_baselines3.common.monitor import Monitor

    out_dir = Path(out_dir)
    if (out_dir / "policy.json").exists():
        return out_dir
    campaign, reward, ppo = (
        campaign or CampaignConfig(),
        reward or RewardConfig(),
        ppo or PPOConfig(),
    )
    torch.set_num_threads(1)  # tiny MLPs: threads only add overhead
    out_dir.mkdir(parents=True, exist_ok=True)
    t_max = campaign.n_rounds
    seconds: dict[str, float] = {}

    def env(level: str, other):
        sim = CampaignSimulator(calibration, campaign, reward)
        inner = UpperEnv(sim, other) if level == "upper" else LowerEnv(sim, other)
        return Monitor(inner)

    def learn(agent, phase: str) -> None:
        started = time.perf_counter()
        agent.learn(ppo.timesteps, progress_bar=progress, reset_num_timesteps=False)
        seconds[phase] = round(time.perf_counter() - started, 2)
        logger.info("policy phase %s: %.1f s", phase, seconds[phase])

    lower = ppo.make(
        env("lower", RandomPaceBudget(*ppo.lower_pace, seed=seed)),
        seed,
        out_dir / "logs" / "lower",
        "lower",
    )
    learn(lower, "lower")
    lower.save(out_dir / "lower_pace.zip")

    upper_equal = ppo.make(
        env("upper", EqualSplit()), seed + 1, out_dir / "logs" / "upper_equal", "upper"
    )
    learn(upper_equal, "upper_equal")
    upper_equal.save(out_dir / "upper_equal.zip")

    upper = ppo.make(
        env("upper", RLLower(lower, t_max)), seed + 2, out_dir / "logs" / "upper", "upper"
    )
    learn(upper, "upper")
    for k in range(1, ppo.refinements + 1):
        # Each level again against the other's current policy: the lower level now sees the
        # budgets the RL upper level really sets, the upper level the sharper split.
        lower.set_env(env("lower", RLUpper(upper, t_max)))
        lower.set_random_seed(seed + 10 * k)  # a new env starts unseeded: keep runs reproducible
        _set_logger(lower, out_dir / "logs" / f"lower_{k}")
        learn(lower, f"lower_{k}")
        upper.set_env(env("upper", RLLower(lower, t_max)))
        upper.set_random_seed(seed + 10 * k + 1)
        _set_logger(upper, out_dir / "logs" / f"upper_{k}")
        learn(upper, f"upper_{k}")
    upper.save(out_dir / "upper.zip")
    lower.save(out_dir / "lower.zip")
    write_json(
        out_dir / "policy.json",
        {
            "format": POLICY_FORMAT,
            "dataset": calibration.dataset,
            "seed": seed,
            "n_rounds": t_max,
            "holder_features": list(HOLDER_FEATURE_NAMES),
            "campaign": campaign.model_dump(),
            "reward": reward.model_dump(),
            "ppo": asdict(ppo),
            "seconds": seconds,
        },
    )
    return out_dir


def load_policy(policy_dir: Path, part: str = "full") -> HierarchicalPolicy:
    """Load a trained policy for the oracle or the evaluation.

    Args:
        policy_dir: a folder :func:`train_policy` wrote.
        part: ``full`` (RL upper + RL lower), ``upper`` (RL upper + equal split) or ``lower``
            (Linear upper + RL lower).

    Raises:
        ConfigError: the folder is missing, incomplete or of another format.
    """
    from stable_baselines3 import PPO

    policy_dir = Path(policy_dir)
    meta_path = policy_dir / "policy.json"
    if not meta_path.exists():
        raise ConfigError(
            f"{policy_dir} holds no trained policy (no policy.json); run policy-train"
        )
    meta = read_json(meta_path)
    if meta.get("format") != POLICY_FORMAT:
        raise ConfigError(
            f"{meta_path}: policy format {meta.get('format')}, expected {POLICY_FORMAT}"
        )
    t_max = int(meta["n_rounds"])

    def agent(name: str):
        path = policy_dir / name
        if not path.exists():
            raise ConfigError(f"{path} is missing; the policy folder is incomplete")
        return PPO.load(path, device="cpu")

    if part == "full":
        return HierarchicalPolicy(
            RLUpper(agent("upper.zip"), t_max), RLLower(agent("lower.zip"), t_max)
        )
    if part == "upper":
        return HierarchicalPolicy(RLUpper(agent("upper_equal.zip"), t_max), EqualSplit())
    if part == "lower":
        return HierarchicalPolicy(LinearBudget(), RLLower(agent("lower_pace.zip"), t_max))
    raise ConfigError(f"unknown policy part {part!r}; use full, upper or lower")
