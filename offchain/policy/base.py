"""The budget-policy interface shared by the baselines and the hierarchical RL policy.

A campaign runs ``n_rounds`` rounds with a total budget ``B`` (wei). Each round the policy makes
two decisions (Shi et al., arXiv 2410.20180, the hierarchical scheme):

- upper level: the round budget ``b_t`` (wei), given the campaign state;
- lower level: each holder's share of ``b_t``, given per-holder features (contribution from
  TRAK, copyright loss, image count, participation).

The policy returns real-valued weights; :func:`offchain.allocation.capped_split` turns them
into integer wei that sum exactly to ``b_t`` with no holder above the on-chain holder cap. When
the state carries the campaign's caps (:class:`~offchain.allocation.PayoutCaps`), a decision's
budget is clipped to what the caps allow (:func:`apply_caps`), so every round the oracle signs
is accepted on chain and every leaf is claimable. The RL issue implements the same two protocols.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from offchain.allocation.caps import PayoutCaps, capped_budget
from offchain.errors import ConfigError

__all__ = [
    "BudgetPolicy",
    "CampaignState",
    "HolderFeatures",
    "LowerPolicy",
    "PolicyDecision",
    "UpperPolicy",
    "apply_caps",
]


@dataclass(frozen=True)
class CampaignState:
    """What the upper level sees at the start of a round's payment decision.

    Attributes:
        round_id: 1-based index of the round being paid (1 … n_rounds).
        n_rounds: total rounds T of the campaign.
        total_budget_wei: the campaign's budget B in wei.
        remaining_budget_wei: budget not yet allocated to earlier rounds, in wei.
        n_participants: holders whose data trained this round.
        n_holders: holders registered with the campaign.
        caps: the campaign's on-chain round cap, holder cap and unallocated escrow (wei), or
            None (no caps: the tests' and simulations' default). Policies need not read it:
            :func:`apply_caps` clips any decision to it.
        round_budget_wei: the budget the upper level chose for this round (wei), filled in by
            :meth:`HierarchicalPolicy.decide <offchain.policy.baselines.HierarchicalPolicy.decide>`
            before it asks the lower level (the lower level is conditioned on the upper's
            decision); None when the upper level has not decided yet.
    """

    round_id: int
    n_rounds: int
    total_budget_wei: int
    remaining_budget_wei: int
    n_participants: int
    n_holders: int
    caps: PayoutCaps | None = None
    round_budget_wei: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.round_id <= self.n_rounds:
            raise ConfigError(f"round_id {self.round_id} outside 1..{self.n_rounds}")
        if not 0 <= self.remaining_budget_wei <= self.total_budget_wei:
            raise ConfigError(
                f"remaining_budget_wei {self.remaining_budget_wei} outside "
                f"0..{self.total_budget_wei}"
            )
        if self.caps is not None and not isinstance(self.caps, PayoutCaps):
            raise ConfigError(f"caps must be PayoutCaps or None, got {type(self.caps).__name__}")

    @property
    def rounds_left(self) -> int:
        """Rounds still to pay, this one included (≥ 1)."""
        return self.n_rounds - self.round_id + 1


@dataclass(frozen=True)
class HolderFeatures:
    """What the lower level sees about each of the ``H`` registered holders.

    Attributes:
        contribution: shape (H,), float64, TRAK contribution normalized to [0, 1] summing to 1
            over participants (0 for non-participants).
        copyright_loss: shape (H,), float64 in [0, 1]: how closely this round's generations
            reproduce the holder's works.
        n_images: shape (H,), int64, images the holder registered.
        participating: shape (H,), bool, whether the holder's data trained this round. Only
            participants may be paid.
    """

    contribution: np.ndarray
    copyright_loss: np.ndarray
    n_images: np.ndarray
    participating: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.participating)
        for name in ("contribution", "copyright_loss", "n_images"):
            value = getattr(self, name)
            if np.shape(value) != (n,):
                raise ConfigError(f"{name} has shape {np.shape(value)}, expected ({n},)")
            if not np.all(np.isfinite(value)):
                raise ConfigError(f"{name} has non-finite entries")


@dataclass(frozen=True)
class PolicyDecision:
    """A round's payment decision: budget in wei and non-negative weights of shape (H,)."""

    budget_wei: int
    weights: np.ndarray


def apply_caps(decision: PolicyDecision, state: CampaignState) -> PolicyDecision:
    """The decision with its budget clipped to what ``state.caps`` lets its payees be paid.

    The budget becomes ``min(budget, round cap, escrow, holder cap × payees)``
    (:func:`offchain.allocation.capped_budget`), payees being the holders with a positive
    weight; the weights are unchanged. Without caps the decision is returned as it is. Together
    with :func:`offchain.allocation.capped_split` this makes every round fit the contract's
    ``roundCap``, ``holderCap`` and unallocated escrow, whatever the policy chose.
    """
    if state.caps is None:
        return decision
    weights = np.asarray(decision.weights, dtype=np.float64)
    n_payable = int(np.count_nonzero(weights > 0))
    budget = capped_budget(int(decision.budget_wei), n_payable, state.caps)
    return PolicyDecision(budget_wei=budget, weights=decision.weights)


@runtime_checkable
class UpperPolicy(Protocol):
    """Upper level: picks the round budget."""

    name: str

    def round_budget(self, state: CampaignState, features: HolderFeatures) -> int:
        """Return the round budget in wei, 0 ≤ b_t ≤ ``state.remaining_budget_wei``.

        ``features`` are the round's holder features: the upper state of Shi et al. includes
        aggregates of them (data size, contribution, participants); heuristics may ignore them.
        """
        ...


@runtime_checkable
class LowerPolicy(Protocol):
    """Lower level: splits the round budget among holders."""

    name: str

    def holder_weights(self, state: CampaignState, features: HolderFeatures) -> np.ndarray:
        """Return shape (H,) non-negative float64 weights, zero for non-participants."""
        ...


class BudgetPolicy(Protocol):
    """Both levels at once; :class:`offchain.policy.baselines.HierarchicalPolicy` composes them."""

    name: str

    def decide(self, state: CampaignState, features: HolderFeatures) -> PolicyDecision:
        """Return the round budget (wei) and the holder weights."""
        ...
