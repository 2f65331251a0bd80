"""The ML settings of a round (:class:`MLConfig`), derived from the run's settings in one place.

:meth:`MLConfig.from_settings` is the one function that turns :class:`offchain.config.Settings`
into the settings the round stages (:mod:`offchain.rounds.stages`) read; the model backend and
the attributor are picked by name from their registries
(:func:`offchain.diffusion.get_backend`, :func:`offchain.attribution.get_attributor`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from offchain.attribution.defaults import (
    DEFAULT_PROJ_DIM,
    DEFAULT_TRAK_ENSEMBLE,
    DEFAULT_TRAK_OUTPUT,
    DEFAULT_TRAK_TIMESTEPS,
)
from offchain.errors import ConfigError

__all__ = ["DEFAULT_ATTRIBUTOR", "DEFAULT_BACKEND", "MLConfig"]

DEFAULT_BACKEND = "ddpm"
"""The model backend of a run unless its settings name another."""
DEFAULT_ATTRIBUTOR = "trak"
"""The attributor of a run unless its settings name another."""


@dataclass(frozen=True)
class MLConfig:
    """The ML settings a round needs (built from :class:`offchain.config.Settings` by
    :meth:`from_settings`)."""

    image_size: int = 16
    """Side in pixels of the model's images."""
    train_steps: int = 300
    """Optimizer steps per round."""
    n_samples: int = 32
    """Generated samples per round (attribution targets, copyright probes)."""
    proj_dim: int = DEFAULT_PROJ_DIM
    """TRAK projection dimension."""
    trak_timesteps: int = DEFAULT_TRAK_TIMESTEPS
    """K timesteps of the TRAK output function (TRAK's ``num_timesteps``)."""
    trak_output: str = DEFAULT_TRAK_OUTPUT
    """TRAK output function: ``dtrak`` (‖ε_θ‖², D-TRAK) or ``loss`` (plain TRAK)."""
    trak_ensemble: int = DEFAULT_TRAK_ENSEMBLE
    """TRAK ensemble size E (independent projection/noise seeds averaged)."""
    copyright_encoder: str = "unet"
    """Semantic encoder of the copyright loss: ``unet`` (the round's own, no weights),
    ``torchscript:<path>`` (e.g. SSCD) or ``hf:<path>`` (CLIP/DINO, needs transformers)."""
    quality_samples: int = 256
    """Samples drawn per round for the quality metric (FID needs M ≥ 128, docs/quality.md)."""
    quality_classifier_epochs: int = 10
    """Epochs of the FID reference classifier."""
    seed: int = 0
    """Base seed; each round offsets it by its id."""
    progress: bool = True
    """Show progress bars."""
    backend: str = DEFAULT_BACKEND
    """Registry name of the model backend (:func:`offchain.diffusion.get_backend`)."""
    attributor: str = DEFAULT_ATTRIBUTOR
    """Registry name of the attributor (:func:`offchain.attribution.get_attributor`)."""

    def __post_init__(self) -> None:
        lows = {"n_samples": 1, "image_size": 8, "train_steps": 1, "proj_dim": 8,
                "trak_timesteps": 1, "trak_ensemble": 1, "quality_samples": 2,
                "quality_classifier_epochs": 1}  # the ranges of the matching Settings fields
        for name, low in lows.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an int ≥ {low}, got {value!r}")

    @classmethod
    def from_settings(cls, settings: Any, progress: bool = True) -> MLConfig:
        """The round's ML settings of a run's ``settings`` (an :class:`offchain.config.Settings`,
        read by attribute name: ``offchain.config`` sits above this module and imports it):
        the one place they are derived (the settings' defaults are this class's)."""
        return cls(
            image_size=settings.image_size,
            train_steps=settings.train_steps,
            n_samples=settings.n_samples,
            proj_dim=settings.proj_dim,
            trak_timesteps=settings.trak_timesteps,
            trak_output=settings.trak_output,
            trak_ensemble=settings.trak_ensemble,
            copyright_encoder=settings.copyright_encoder,
            quality_samples=settings.quality_samples,
            quality_classifier_epochs=settings.quality_classifier_epochs,
            seed=settings.seed,
            progress=progress,
            backend=settings.backend,
            attributor=settings.attributor,
        )
