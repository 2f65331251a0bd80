"""The ML settings of a round (:class:`MLConfig`), derived from the run's settings in one place.

:meth:`MLConfig.from_settings` is the one function that turns :class:`offchain.config.Settings`
into the settings the round stages (:mod:`offchain.rounds.stages`) read; the model backend and
the attributor are picked by name from their registries
(:func:`offchain.diffusion.get_backend`, :func:`offchain.attribution.get_attributor`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offchain.attribution.defaults import (
    DEFAULT_PROJ_DIM,
    DEFAULT_TRAK_ENSEMBLE,
    DEFAULT_TRAK_OUTPUT,
    DEFAULT_TRAK_TIMESTEPS,
)
from offchain.errors import ConfigError

__all__ = ["DEFAULT_ATTRIBUTOR", "DEFAULT_BACKEND", "DEVICES", "EXECUTION_FIELDS", "MLConfig"]

DEFAULT_BACKEND = "ddpm"
"""The model backend of a run unless its settings name another."""
DEFAULT_ATTRIBUTOR = "trak"
"""The attributor of a run unless its settings name another."""
DEVICES = ("auto", "cpu", "cuda")
"""Device preferences (:func:`offchain.diffusion.device.select_device`): ``auto`` is CUDA when
available, else the CPU."""


EXECUTION_FIELDS = ("progress", "cache_dir", "num_processes", "accelerate_config")
"""MLConfig fields that say how a round runs, not what it computes: results do not depend on
them (a sweep's recorded design leaves them out)."""


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
    device: str = "auto"
    """Where the ML stages run: ``auto`` (CUDA when available, else the CPU), ``cpu`` or
    ``cuda`` (a ConfigError where no CUDA device is available)."""
    guidance_scale: float = 3.0
    """Classifier-free guidance scale w of a conditional backend's sampling (0: unconditional,
    1: conditional without guidance); unconditional backends ignore it."""
    copyright_probes: int = 8
    """Works per participating holder whose captions a conditional backend's copyright stage
    generates from (docs/copyright.md); unconditional backends ignore it."""
    model_path: str | None = None
    """Local diffusers Stable Diffusion folder the ``sd-lora`` backend fine-tunes (nothing is
    downloaded); other backends ignore it."""
    train_batch_size: int | None = None
    """Images per training step; None: the backend's own (``ddpm`` 64, ``text-unet`` 32,
    ``sd-lora`` 4). Under a data-parallel launch it is the global batch: it must divide by
    ``num_processes``."""
    lora_rank: int = 4
    """r of the ``sd-lora`` backend's LoRA adapters (the paper's 4); other backends ignore it."""
    lora_alpha: float = 4.0
    """α of the LoRA adapters: their update is scaled by α / r."""
    lora_target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    """UNet modules that get LoRA adapters (peft's ``target_modules``; the paper's attention
    projections)."""
    cache_dir: str | None = None
    """Run-level folder where a backend caches what it derives from holders' images and reuses
    across rounds (``sd-lora``: VAE latents per image hash); set by the run to
    ``<run_dir>/cache``. None: each backend's own default."""
    num_processes: int = 1
    """Processes of the distributed stages (training of a data-parallel backend, TRAK
    featurization): 1 runs them in the node's process; N > 1 launches them with
    ``accelerate launch`` (one process per GPU, or gloo processes on the CPU)."""
    accelerate_config: str | None = None
    """An ``accelerate config`` YAML file for the distributed stages (multi-GPU, several
    machines); None: accelerate's defaults with ``num_processes``."""

    def __post_init__(self) -> None:
        lows = {"n_samples": 1, "image_size": 8, "train_steps": 1, "proj_dim": 8,
                "trak_timesteps": 1, "trak_ensemble": 1, "quality_samples": 2,
                "quality_classifier_epochs": 1,
                "copyright_probes": 1, "num_processes": 1, "lora_rank": 1}  # the ranges of the matching Settings fields
        for name, low in lows.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an int ≥ {low}, got {value!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.train_batch_size is not None and (
            isinstance(self.train_batch_size, bool) or not isinstance(self.train_batch_size, int)
            or self.train_batch_size < 1
        ):
            raise ConfigError(f"train_batch_size must be an int ≥ 1 or None, got "
                              f"{self.train_batch_size!r}")
        scale = self.guidance_scale
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not (
            math.isfinite(scale) and scale >= 0
        ):
            raise ConfigError(f"guidance_scale must be a finite number ≥ 0, got {scale!r}")

    @classmethod
    def from_settings(cls, settings: Any, progress: bool = True) -> MLConfig:
        """The round's ML settings of a run's ``settings`` (an :class:`offchain.config.Settings`,
        read by attribute name: ``offchain.config`` sits above this module and imports it):
        the one place they are derived (the settings' defaults are this class's).
        ``cache_dir`` is ``<settings.run_dir>/cache``."""
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
            device=settings.device,
            guidance_scale=float(settings.guidance_scale),
            copyright_probes=settings.copyright_probes,
            model_path=None if settings.model_path is None else str(settings.model_path),
            train_batch_size=settings.train_batch_size,
            lora_rank=settings.lora_rank,
            lora_alpha=float(settings.lora_alpha),
            lora_target_modules=tuple(settings.lora_target_modules),
            cache_dir=str(Path(settings.run_dir) / "cache"),
            num_processes=settings.num_processes,
            accelerate_config=(None if settings.accelerate_config is None
                               else str(settings.accelerate_config)),
        )
