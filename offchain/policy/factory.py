"""Budget policies by name: the baselines ``<upper>/<lower>`` and trained RL policies ``rl:<folder>``.

The factory sits above both the baselines and the RL policy (which plays against baselines in
its training environment), so neither imports the other back.
"""

from __future__ import annotations

from pathlib import Path

from offchain.errors import ConfigError
from offchain.policy.baselines import (
    LOWER_POLICIES,
    UPPER_POLICIES,
    HierarchicalPolicy,
    RandomBudget,
    RandomSplit,
)

__all__ = ["make_policy"]


def make_policy(name: str, seed: int = 0) -> HierarchicalPolicy:
    """Build a policy from its name.

    - ``"<upper>/<lower>"``: a baseline pair, e.g. ``"linear/weighted"``;
    - ``"rl:<folder>"``: the trained hierarchical RL policy saved in ``<folder>``
      (:func:`offchain.policy.rl.load_policy`; ``policy-train`` writes it).

    Raises:
        ConfigError: unknown upper or lower name, or no trained policy in the folder.
    """
    if name.startswith("rl:"):
        from offchain.policy.rl import load_policy  # deferred: stable-baselines3 imports torch

        return load_policy(Path(name.removeprefix("rl:")))
    try:
        upper_name, lower_name = name.split("/")
        upper_cls, lower_cls = UPPER_POLICIES[upper_name], LOWER_POLICIES[lower_name]
    except (ValueError, KeyError):
        raise ConfigError(
            f"unknown policy {name!r}; use '<upper>/<lower>' with upper in {sorted(UPPER_POLICIES)} "
            f"and lower in {sorted(LOWER_POLICIES)}, or 'rl:<trained policy folder>'"
        ) from None
    upper = upper_cls(seed=seed) if upper_cls is RandomBudget else upper_cls()
    lower = lower_cls(seed=seed) if lower_cls is RandomSplit else lower_cls()
    return HierarchicalPolicy(upper=upper, lower=lower)
