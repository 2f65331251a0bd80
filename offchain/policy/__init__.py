"""Budget policies: upper level picks the round budget, lower level each holder's share."""

from offchain.policy.base import (
    BudgetPolicy,
    CampaignState,
    HolderFeatures,
    LowerPolicy,
    PolicyDecision,
    UpperPolicy,
    apply_caps,
)
from offchain.policy.baselines import HierarchicalPolicy
from offchain.policy.factory import make_policy

__all__ = [
    "BudgetPolicy",
    "CampaignState",
    "HierarchicalPolicy",
    "HolderFeatures",
    "LowerPolicy",
    "PolicyDecision",
    "UpperPolicy",
    "apply_caps",
    "make_policy",
]
