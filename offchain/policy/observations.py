"""What the RL levels observe, computed only from what the oracle has in a real round.

Both the simulator (:mod:`offchain.policy.env`) and the oracle's trained policy
(:mod:`offchain.policy.rl`) build observations with these functions from a
:class:`~offchain.policy.base.CampaignState` and :class:`~offchain.policy.base.HolderFeatures`,
so a policy sees in a real round exactly what it saw in training. Every entry is scale-free
(fractions of the budget, of the holders, of the images), so a policy trained on one budget in
wei applies to any other.

Upper level (Shi et al., arXiv 2410.20180: the upper state is rounds left, budget left, data
size, contribution and the number of participants): :func:`campaign_obs`.

Lower level: the same campaign context and the upper level's round budget (:func:`lower_obs`),
plus per-holder features :func:`holder_features` that
a linear score ``θ · φᵢ`` turns into weights ``wᵢ ∝ nᵢ · exp(θ · φᵢ)`` over participants
(:func:`softmax_weights`; θ = 0 pays per image). The action ``θ`` does not depend on the number of holders, so one
lower policy pays any campaign size.
"""

from __future__ import annotations

import numpy as np

from offchain.errors import ConfigError
from offchain.policy.base import CampaignState, HolderFeatures

__all__ = [
    "CAMPAIGN_OBS_DIM",
    "HOLDER_FEATURE_NAMES",
    "THETA_SCALE",
    "LOWER_OBS_DIM",
    "campaign_obs",
    "lower_obs",
    "holder_features",
    "softmax_weights",
]

CAMPAIGN_OBS_DIM = 8
"""Length of :func:`campaign_obs`."""

LOWER_OBS_DIM = CAMPAIGN_OBS_DIM + 1
"""Length of :func:`lower_obs`."""

HOLDER_FEATURE_NAMES = ("log_images", "log_one_plus_loss", "log_contribution")
"""The per-holder features φᵢ, in order (see :func:`holder_features`)."""

THETA_SCALE = 3.0
"""An action a ∈ [−1, 1]^3 of the lower level maps to θ = 3·a."""

PER_IMAGE = np.array([1.0, 0.0, 0.0])
"""The split at θ = 0: weights ∝ nᵢ (the coefficient 1 on log nᵢ)."""

_CONTRIBUTION_FLOOR = 0.05
"""Contribution share (relative to an equal share) below which log-contribution is floored."""


def campaign_obs(state: CampaignState, features: HolderFeatures) -> np.ndarray:
    """The campaign context both levels see, shape (8,), float32, every entry in [0, 1].

    Entries: round progress ``(t−1)/T``; rounds left ``(T−t+1)/T``; budget left ``remaining/B``;
    participants' share of holders; participants' share of all registered images; the
    participants' mean copyright loss, its maximum and its image-weighted mean (losses in [0, 1]).
    """
    part = np.asarray(features.participating, dtype=bool)
    n_images = np.asarray(features.n_images, dtype=np.float64)
    loss = np.clip(np.asarray(features.copyright_loss, dtype=np.float64), 0.0, 1.0)
    total_images = max(float(n_images.sum()), 1.0)
    part_images = float(n_images[part].sum())
    if part.any():
        mean_loss, max_loss = float(loss[part].mean()), float(loss[part].max())
        weighted_loss = float((n_images[part] * loss[part]).sum() / max(part_images, 1.0))
    else:
        mean_loss = max_loss = weighted_loss = 0.0
    obs = [
        (state.round_id - 1) / state.n_rounds,
        state.rounds_left / state.n_rounds,
        state.remaining_budget_wei / state.total_budget_wei,
        part.sum() / max(len(part), 1),
        part_images / total_images,
        mean_loss,
        max_loss,
        weighted_loss,
    ]
    return np.asarray(obs, dtype=np.float32)


def lower_obs(state: CampaignState, features: HolderFeatures) -> np.ndarray:
    """The lower level's observation, shape (9,), float32, entries in [0, 1].

    :func:`campaign_obs` followed by the round budget the upper level chose relative to the
    Linear pace, ``b_t · rounds_left / remaining / 2`` clipped to [0, 1] (0.5 = Linear).

    Raises:
        ConfigError: ``state.round_budget_wei`` is None (the upper level has not decided).
    """
    if state.round_budget_wei is None:
        raise ConfigError("the lower level needs the round budget (state.round_budget_wei)")
    pace = 0.0
    if state.remaining_budget_wei > 0:
        pace = state.round_budget_wei * state.rounds_left / state.remaining_budget_wei / 2.0
    extra = np.asarray([min(max(pace, 0.0), 1.0)], dtype=np.float32)
    return np.concatenate([campaign_obs(state, features), extra])


def holder_features(features: HolderFeatures) -> np.ndarray:
    """Per-holder features φ, shape (H, 3), float64; rows of non-participants are zero.

    Columns (:data:`HOLDER_FEATURE_NAMES`): ``log(nᵢ / mean n)`` over participants (image
    count); ``log(1 + CLᵢ)`` (copyright loss in [0, 1]); ``log(max(cᵢ·P, 0.05))`` with cᵢ the
    normalized TRAK contribution and P the number of participants (1 = an equal share).
    :func:`softmax_weights` adds 1 to the first coefficient, so θ = (0, 1, 0) gives weights
    ∝ nᵢ·(1 + CLᵢ): pay per image, raised by copyright loss.
    """
    part = np.asarray(features.participating, dtype=bool)
    phi = np.zeros((len(part), len(HOLDER_FEATURE_NAMES)), dtype=np.float64)
    if not part.any():
        return phi
    n_images = np.asarray(features.n_images, dtype=np.float64)[part]
    loss = np.clip(np.asarray(features.copyright_loss, dtype=np.float64)[part], 0.0, 1.0)
    contribution = np.clip(np.asarray(features.contribution, dtype=np.float64)[part], 0.0, None)
    phi[part, 0] = np.log(np.maximum(n_images, 1.0) / max(n_images.mean(), 1.0))
    phi[part, 1] = np.log1p(loss)
    phi[part, 2] = np.log(np.maximum(contribution * part.sum(), _CONTRIBUTION_FLOOR))
    return phi


def softmax_weights(theta: np.ndarray, features: HolderFeatures) -> np.ndarray:
    """Weights ``wᵢ ∝ nᵢ · exp(θ · φᵢ)`` over participants, 0 elsewhere; shape (H,), float64.

    θ = 0 pays per image (pro rata, the way stock-image funds pay contributors); θ moves away
    from it: θ = (0, 1, 0) raises each payment by ``1 + CLᵢ``, θ = (−1, 0, 0) is the equal
    split, θ = (−1, 0, 1) pays by TRAK contribution.

    Args:
        theta: shape (3,), the lower level's coefficients on :data:`HOLDER_FEATURE_NAMES`.
        features: the round's holder features (at least one participant).

    Returns:
        Weights summing to 1 (all zero when nobody participates).
    """
    part = np.asarray(features.participating, dtype=bool)
    scores = holder_features(features) @ (np.asarray(theta, dtype=np.float64) + PER_IMAGE)
    weights = np.zeros(len(part), dtype=np.float64)
    if part.any():
        z = scores[part] - scores[part].max()
        weights[part] = np.exp(z) / np.exp(z).sum()
    return weights
