"""Settings of the copyright stage: the pair features, the calibration's fit, the loss.

* :class:`FeatureSettings`   how a pair's features are computed (stored with a calibration)
* :class:`CalibrationConfig` how :func:`~offchain.copyright.calibration.fit_calibration` fits
* :class:`CopyrightConfig`   the loss's settings, holding the two above

Each is frozen and validated on construction (:class:`~offchain.errors.ConfigError` naming the
field).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from offchain.copyright.augment import AUGMENTATIONS, check_augmentation
from offchain.errors import ConfigError

__all__ = ["CalibrationConfig", "CopyrightConfig", "FeatureSettings"]


@dataclass(frozen=True)
class FeatureSettings:
    """How the pair features are computed (stored with a calibration and reused for scoring)."""

    ssim_win_size: int = 7
    """SSIM window side (odd, ≥ 3, ≤ S)."""
    tile_size: int = 4
    """Side of the tiled-ℓ2 tiles; must divide S (16 → a 4 × 4 grid of 4 × 4 tiles)."""
    center_embeddings: bool = True
    """Subtract the mean work embedding before the cosine (see ``semantic_similarity``)."""
    flip_invariant: bool = True
    """Take each feature over the work and its mirror image (max similarity, min distance)."""
    distance_eps: float = 0.01
    """ε of ``log_tiled_l2 = ln(tiled ℓ2 + ε)`` (pixel scale [−1, 1]; 0.01 is below 8-bit
    quantization-plus-JPEG noise, and keeps an exact copy finite at ln 0.01 ≈ −4.6)."""
    relative_k: int = 10
    """k of ``log_relative_l2``: the distance is compared with the mean distance of the query's
    k nearest distinct works (Carlini et al. 2023 use the 50 nearest of a large set)."""
    max_pixel_side: int = 64
    """The pixel features (SSIM, tiled ℓ2) compare images area-downsampled to at most this side
    in pixels (the semantic encoder sees them whole): their cost grows with S² per pair, and a
    copy of a work is a copy at 64 px too. Images of 64 px or less (every built-in dataset's
    model) are compared as they are; ``sd-lora`` at 512 px compares 64 px views."""

    def __post_init__(self) -> None:
        if self.relative_k < 1:
            raise ConfigError(f"relative_k must be ≥ 1, got {self.relative_k}")
        if not self.distance_eps > 0:
            raise ConfigError(f"distance_eps must be > 0, got {self.distance_eps}")
        if self.ssim_win_size < 3 or self.ssim_win_size % 2 == 0:
            raise ConfigError(f"ssim_win_size must be odd and ≥ 3, got {self.ssim_win_size}")
        if self.tile_size < 1:
            raise ConfigError(f"tile_size must be ≥ 1, got {self.tile_size}")
        if self.max_pixel_side < self.ssim_win_size:
            raise ConfigError(f"max_pixel_side must be ≥ ssim_win_size ({self.ssim_win_size}), "
                              f"got {self.max_pixel_side}")

    def pixel_view(self, images: Tensor) -> Tensor:
        """``images`` float (B, C, S, S) as the pixel features see them: unchanged when
        S ≤ :attr:`max_pixel_side`, else area-downsampled to that side."""
        if images.shape[-1] <= self.max_pixel_side and images.shape[-2] <= self.max_pixel_side:
            return images
        return F.interpolate(images, size=(self.max_pixel_side, self.max_pixel_side),
                             mode="area")


@dataclass(frozen=True)
class CalibrationConfig:
    """Settings of :func:`~offchain.copyright.calibration.fit_calibration` (validated on
    construction)."""

    n_anchors: int = 96
    """Works whose augmented copies are the positives (split into training and held-out)."""
    augmentations: tuple[str, ...] = AUGMENTATIONS
    """Augmentation types; every anchor gets one copy of each (all are evaluated)."""
    fit_exclude: tuple[str, ...] = ("crop",)
    """Augmentation steps whose positives are evaluated but not fitted (every type containing
    one of them). Default: geometric crops, which the alignment-based weight-free features do
    not detect (docs/copyright.md); with them in the fit every pair looks alike. Use () with a
    crop-robust encoder such as SSCD."""
    prior: float = 0.02
    """Prior probability π that a generation substantially copies the work it is compared
    with; the balanced fit gives the likelihood ratio, and ``logit π`` is added to the
    intercept. Default 0.02: the replication rate Somepalli et al. (CVPR 2023) measured for
    Stable Diffusion 1.4 (1.88 %). 0.5 leaves the even-odds posterior."""
    test_fraction: float = 0.5
    """Share of the anchors (and external images) held out for thresholds and the PR table."""
    random_negatives: int = 1
    """Random unrelated works per augmented query."""
    hard_negatives: bool = True
    """Also pair each query with its nearest other work by each feature."""
    copy_precision: float = 0.95
    """Held-out precision the ``copy`` threshold must reach."""
    replication_recall: float | None = None
    """None: ``replication`` maximizes F1; else the highest threshold with this recall."""
    l2: float = 1e-2
    """Ridge penalty λ/2·‖w‖² on the standardized coefficients (keeps p finite under
    separation)."""
    min_works: int = 8
    """Fewest distinct works a calibration accepts."""
    max_external: int = 512
    """External negative images used at most."""

    def __post_init__(self) -> None:
        if self.n_anchors < 4:
            raise ConfigError(f"n_anchors must be ≥ 4, got {self.n_anchors}")
        if not self.augmentations:
            raise ConfigError("augmentations must name at least one type")
        for name in self.augmentations:
            check_augmentation(name)
        if len(set(self.augmentations)) != len(self.augmentations):
            raise ConfigError(f"duplicate augmentations in {self.augmentations}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.random_negatives < 0 or (self.random_negatives == 0 and not self.hard_negatives):
            raise ConfigError("need random_negatives ≥ 1 or hard_negatives")
        if not 0.0 < self.copy_precision <= 1.0:
            raise ConfigError(f"copy_precision must be in (0, 1], got {self.copy_precision}")
        if self.replication_recall is not None and not 0.0 < self.replication_recall <= 1.0:
            raise ConfigError(
                f"replication_recall must be in (0, 1] or None, got {self.replication_recall}"
            )
        if not self.l2 >= 0.0:
            raise ConfigError(f"l2 must be ≥ 0, got {self.l2}")
        if self.min_works < 4:
            raise ConfigError(f"min_works must be ≥ 4, got {self.min_works}")
        if self.max_external < 0:
            raise ConfigError(f"max_external must be ≥ 0, got {self.max_external}")
        if not 0.0 < self.prior < 1.0:
            raise ConfigError(f"prior must be in (0, 1), got {self.prior}")
        for step in self.fit_exclude:
            check_augmentation(step)
        if all(
            any(st in self.fit_exclude for st in check_augmentation(a)) for a in self.augmentations
        ):
            raise ConfigError("fit_exclude leaves no augmentation type to fit")


@dataclass(frozen=True)
class CopyrightConfig:
    """Settings of the copyright loss and of its per-round calibration (validated)."""

    w_semantic: float = 0.5
    """Weight of the semantic similarity in the uncalibrated similarity s, ≥ 0."""
    w_perceptual: float = 0.5
    """Weight of the perceptual (SSIM) similarity in s, ≥ 0; the two weights sum to 1."""
    semantic_timestep: int = 20
    """Noise level t at which the default UNet encoder reads features (small: ᾱ_20 ≈ 0.998)."""
    center_embeddings: bool = True
    """Subtract the mean training embedding before the cosine (see ``semantic_similarity``)."""
    ssim_win_size: int = 7
    """SSIM window side (odd, ≥ 3, ≤ the image side); scikit-image's default."""
    tile_size: int = 4
    """Tile side of the tiled ℓ2 distance; must divide the image side."""
    flip_invariant: bool = True
    """Compare against each work and its mirror image (a mirrored copy is still a copy)."""
    batch_size: int = 256
    """Images per UNet forward pass of the encoder."""
    seed: int = 0
    """Seed of the encoder's fixed noise field and of the calibration's draws."""
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    """How :func:`~offchain.copyright.calibration.fit_calibration` fits when no calibration is
    passed."""

    def __post_init__(self) -> None:
        for name in ("w_semantic", "w_perceptual"):
            w = getattr(self, name)
            if not (isinstance(w, int | float) and np.isfinite(w) and w >= 0):
                raise ConfigError(f"{name} must be a finite number ≥ 0, got {w!r}")
        if abs(self.w_semantic + self.w_perceptual - 1.0) > 1e-9:
            raise ConfigError(
                f"w_semantic + w_perceptual must be 1 (got {self.w_semantic} + "
                f"{self.w_perceptual}) so that the pair similarity stays in [0, 1]"
            )
        if self.ssim_win_size < 3 or self.ssim_win_size % 2 == 0:
            raise ConfigError(f"ssim_win_size must be odd and ≥ 3, got {self.ssim_win_size}")
        if self.tile_size < 1:
            raise ConfigError(f"tile_size must be ≥ 1, got {self.tile_size}")
        if self.semantic_timestep < 0:
            raise ConfigError(f"semantic_timestep must be ≥ 0, got {self.semantic_timestep}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if not isinstance(self.calibration, CalibrationConfig):
            raise ConfigError("calibration must be a CalibrationConfig")

    def feature_settings(self) -> FeatureSettings:
        """The :class:`FeatureSettings` of this config."""
        return FeatureSettings(
            ssim_win_size=self.ssim_win_size,
            tile_size=self.tile_size,
            center_embeddings=self.center_embeddings,
            flip_invariant=self.flip_invariant,
        )
