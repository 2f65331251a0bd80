"""Baseline budget policies (the benchmarks of Shi et al., arXiv 2410.20180; see docs/science).

Upper level (round budget ``b_t``):
- ``linear``: ``remaining / rounds_left`` — B/T per round when every round spends its budget.
- ``greedy``: front-loaded fractions of B (0.5, 0.25, 0.25, 0, …), capped at what remains.
- ``random``: a Dirichlet(1, …, 1) plan over the T rounds drawn once per campaign (seeded).

Lower level (each holder's share; only participants are paid):
- ``equal``: equal split ("Linear" in the paper's code).
- ``random``: Dirichlet(1, …, 1) over participants (seeded, per round).
- ``contribution``: ∝ TRAK contribution.
- ``weighted``: ∝ ``alpha · contribution + (1 − alpha) · copyright-loss share``. Copyright loss
  *raises* a holder's payment: the scheme compensates holders whose works the model reproduces
  rather than punishing them (the paper code's lower reward Σ (0.5 cᵢ − 0.5 CLᵢ) aᵢ did the
  opposite).

The default oracle policy is ``linear/weighted``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from offchain.errors import ConfigError
from offchain.policy.base import (
    CampaignState,
    HolderFeatures,
    LowerPolicy,
    PolicyDecision,
    UpperPolicy,
    apply_caps,
)

__all__ = [
    "ContributionSplit",
    "EqualSplit",
    "GreedyBudget",
    "HierarchicalPolicy",
    "LinearBudget",
    "RandomBudget",
    "RandomSplit",
    "WeightedSplit",
    "LOWER_POLICIES",
    "UPPER_POLICIES",
]


@dataclass
class LinearBudget:
    """Spend what remains evenly over the rounds left: ``floor(remaining / rounds_left)``.

    The last round takes all that remains, so the whole budget B is spent over T rounds.
    """

    name: str = "linear"

    def round_budget(self, state: CampaignState, features: HolderFeatures | None = None) -> int:
        return state.remaining_budget_wei // state.rounds_left


@dataclass
class GreedyBudget:
    """Front-loaded plan: round t gets ``fractions[t-1] · B`` (0 after the listed rounds)."""

    fractions: tuple[float, ...] = (0.5, 0.25, 0.25)
    name: str = "greedy"

    def __post_init__(self) -> None:
        if any(f < 0 for f in self.fractions) or sum(self.fractions) > 1 + 1e-12:
            raise ConfigError(f"greedy fractions must be >= 0 and sum to <= 1: {self.fractions}")

    def round_budget(self, state: CampaignState, features: HolderFeatures | None = None) -> int:
        if state.round_id == state.n_rounds:
            return state.remaining_budget_wei
        idx = state.round_id - 1
        fraction = self.fractions[idx] if idx < len(self.fractions) else 0.0
        planned = (state.total_budget_wei * round(fraction * 10**9)) // 10**9
        return min(planned, state.remaining_budget_wei)


@dataclass
class RandomBudget:
    """A Dirichlet(1, …, 1) plan over the T rounds, drawn once from ``seed``."""

    seed: int = 0
    name: str = "random"
    _plan: np.ndarray | None = field(default=None, repr=False)

    def round_budget(self, state: CampaignState, features: HolderFeatures | None = None) -> int:
        if self._plan is None or len(self._plan) != state.n_rounds:
            self._plan = np.random.default_rng(self.seed).dirichlet(np.ones(state.n_rounds))
        if state.round_id == state.n_rounds:
            return state.remaining_budget_wei
        planned = state.total_budget_wei * round(float(self._plan[state.round_id - 1]) * 10**9)
        return min(planned // 10**9, state.remaining_budget_wei)


def _participants(features: HolderFeatures) -> np.ndarray:
    mask = np.asarray(features.participating, dtype=bool)
    if not mask.any():
        raise ConfigError("no participating holder to pay")
    return mask


@dataclass
class EqualSplit:
    """Equal weights over participants."""

    name: str = "equal"

    def holder_weights(self, state: CampaignState, features: HolderFeatures) -> np.ndarray:
        return _participants(features).astype(np.float64)


@dataclass
class RandomSplit:
    """Dirichlet(1, …, 1) weights over participants, seeded by ``seed`` and the round id."""

    seed: int = 0
    name: str = "random"

    def holder_weights(self, state: CampaignState, features: HolderFeatures) -> np.ndarray:
        mask = _participants(features)
        rng = np.random.default_rng([self.seed, state.round_id])
        weights = np.zeros(len(mask))
        weights[mask] = rng.dirichlet(np.ones(int(mask.sum())))
        return weights


@dataclass
class ContributionSplit:
    """Weights ∝ normalized TRAK contribution; equal split if no participant contributed."""

    name: str = "contribution"

    def holder_weights(self, state: CampaignState, features: HolderFeatures) -> np.ndarray:
        mask = _participants(features)
        weights = np.where(mask, np.clip(features.contribution, 0.0, None), 0.0)
        return weights if weights.sum() > 0 else mask.astype(np.float64)


@dataclass
class WeightedSplit:
    """Weights ∝ ``alpha · contributionᵢ + (1 − alpha) · CLᵢ / Σ CL`` over participants.

    Attributes:
        alpha: weight in [0, 1] of contribution against copyright loss.
    """

    alpha: float = 0.5
    name: str = "weighted"

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}")

    def holder_weights(self, state: CampaignState, features: HolderFeatures) -> np.ndarray:
        mask = _participants(features)
        contribution = np.where(mask, np.clip(features.contribution, 0.0, None), 0.0)
        loss = np.where(mask, np.clip(features.copyright_loss, 0.0, None), 0.0)
        contribution_share = contribution / contribution.sum() if contribution.sum() > 0 else 0.0
        loss_share = loss / loss.sum() if loss.sum() > 0 else 0.0
        weights = self.alpha * contribution_share + (1.0 - self.alpha) * loss_share
        weights = np.broadcast_to(np.asarray(weights, dtype=np.float64), mask.shape).copy()
        return weights if weights.sum() > 0 else mask.astype(np.float64)


@dataclass
class HierarchicalPolicy:
    """An upper and a lower policy composed into one :class:`BudgetPolicy`."""

    upper: UpperPolicy
    lower: LowerPolicy

    @property
    def name(self) -> str:
        return f"{self.upper.name}/{self.lower.name}"

    def decide(self, state: CampaignState, features: HolderFeatures) -> PolicyDecision:
        """The upper level's budget and the lower level's weights (zero for non-participants).

        Weights that are zero for every participant become equal weights over the
        participants. With ``state.caps`` the budget is clipped to what the caps let the
        positive-weight holders be paid (:func:`~offchain.policy.base.apply_caps`).

        Raises:
            ConfigError: the budget is outside ``0..remaining`` or the weights are invalid.
        """
        budget = int(self.upper.round_budget(state, features))
        if not 0 <= budget <= state.remaining_budget_wei:
            raise ConfigError(
                f"{self.upper.name} chose budget {budget} wei outside "
                f"0..{state.remaining_budget_wei}"
            )
        state = replace(state, round_budget_wei=budget)
        weights = np.asarray(self.lower.holder_weights(state, features), dtype=np.float64)
        if weights.shape != features.participating.shape or (weights < 0).any():
            raise ConfigError(f"{self.lower.name} returned invalid weights {weights}")
        participating = np.asarray(features.participating, dtype=bool)
        weights = np.where(participating, weights, 0.0)
        if not weights.any():
            weights = participating.astype(np.float64)
        return apply_caps(PolicyDecision(budget_wei=budget, weights=weights), state)


UPPER_POLICIES: dict[str, type[UpperPolicy]] = {
    "linear": LinearBudget,
    "greedy": GreedyBudget,
    "random": RandomBudget,
}
"""Upper-level baselines by name (the ``<upper>`` of a policy name)."""
LOWER_POLICIES: dict[str, type[LowerPolicy]] = {
    "equal": EqualSplit,
    "random": RandomSplit,
    "contribution": ContributionSplit,
    "weighted": WeightedSplit,
}
"""Lower-level baselines by name (the ``<lower>`` of a policy name)."""
