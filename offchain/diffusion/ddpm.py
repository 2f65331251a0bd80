"""The ``ddpm`` model backend: the unconditional grayscale DDPM of :mod:`offchain.diffusion.model`.

RGB images are trained on their luma (:func:`~offchain.diffusion.model.luma`); captions are
refused (only the null caption "" is accepted, which is no conditioning).

It wraps :func:`~offchain.diffusion.train.train_round`,
:func:`~offchain.diffusion.sample.generate_samples`,
:func:`~offchain.diffusion.model.load_checkpoint`, :func:`~offchain.diffusion.model.preprocess`
and :func:`~offchain.diffusion.model.checkpoint_hash` behind :class:`~offchain.diffusion.backend.ModelBackend`; their
numbers are unchanged (training seed, sampling seed and hyperparameters pass straight through).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from offchain.diffusion.backend import DenoisingModel
from offchain.diffusion.model import (
    DiffusionConfig,
    build_scheduler,
    build_unet,
    checkpoint_hash,
    is_complete_checkpoint,
    load_checkpoint,
    preprocess,
)
from offchain.diffusion.sample import generate_samples
from offchain.diffusion.train import save_checkpoint, train_round
from offchain.errors import ConfigError
from offchain.utils import seed_everything

__all__ = ["DDPMBackend"]


class DDPMBackend:
    """The DDPM (diffusers ``UNet2DModel`` + ``DDPMScheduler``) as a model backend.

    Args:
        config: the model's, training's and sampling's hyperparameters; its ``seed`` is
            replaced by each call's ``seed``. None: :class:`DiffusionConfig` defaults.
    """

    name = "ddpm"
    conditional = False

    def __init__(self, config: DiffusionConfig | None = None) -> None:
        self.config = config if config is not None else DiffusionConfig()
        self.config.validate()

    @classmethod
    def from_settings(cls, settings: Any) -> DDPMBackend:
        """Reads ``settings.image_size``, ``settings.train_steps``, ``settings.device``
        (``"auto"`` where the settings have none) and ``train_batch_size`` (None or absent: the
        default); the rest are the :class:`DiffusionConfig` defaults."""
        return cls(
            DiffusionConfig(
                image_size=settings.image_size,
                train_steps=settings.train_steps,
                device=getattr(settings, "device", DiffusionConfig.device),
                batch_size=getattr(settings, "train_batch_size", None) or DiffusionConfig.batch_size,
            )
        )

    def build(self, seed: int) -> DenoisingModel:
        """A fresh UNet initialised from ``seed`` (as the first round's training starts)."""
        seed_everything(seed)
        return DenoisingModel(build_unet(self.config), build_scheduler(self.config))

    def load(self, ckpt_dir: Path) -> DenoisingModel:
        """:func:`load_checkpoint` (eval mode, float32, CPU); StageError when incomplete."""
        return DenoisingModel(*load_checkpoint(ckpt_dir))

    def save(self, model: DenoisingModel, ckpt_dir: Path, log: dict[str, Any]) -> Path:
        """``unet/``, ``scheduler/`` and ``train_log.json`` (last), written atomically."""
        save_checkpoint(model.unet, model.scheduler, log, Path(ckpt_dir))
        return Path(ckpt_dir)

    def is_complete(self, ckpt_dir: Path) -> bool:
        return is_complete_checkpoint(ckpt_dir)

    def checkpoint_hash(self, ckpt_dir: Path) -> str:
        """:func:`checkpoint_hash`: SHA-256 over the UNet's weight files."""
        return checkpoint_hash(ckpt_dir)

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """:func:`preprocess` of uint8 (N, H, W) or (N, H, W, 3) (→ luma) to float32
        (N, 1, S, S) in [−1, 1], S = ``config.image_size``."""
        return preprocess(images, self.config.image_size)

    def train_round(
        self,
        images: np.ndarray,
        out_dir: Path,
        *,
        seed: int,
        init_checkpoint: Path | None = None,
        progress: bool = True,
        captions: Sequence[str] | None = None,
    ) -> Path:
        """:func:`train_round` with ``config`` seeded by ``seed``.

        Raises:
            ConfigError: ``captions`` other than None or all "" (this DDPM is unconditional).
        """
        _refuse_captions(captions, "train on")
        cfg = dataclasses.replace(self.config, seed=seed)
        return train_round(images, out_dir, cfg, init_checkpoint=init_checkpoint, progress=progress)

    def sample(
        self,
        ckpt_dir: Path,
        n_samples: int,
        *,
        seed: int,
        captions: Sequence[str] | None = None,
        guidance_scale: float | None = None,
    ) -> np.ndarray:
        """:func:`generate_samples`: float32 (M, 1, S, S) in [−1, 1]; ``guidance_scale`` is
        ignored (no conditioning to guide).

        Raises:
            ConfigError: ``captions`` other than None or all "" (this DDPM is unconditional),
                or as :func:`generate_samples`.
        """
        _refuse_captions(captions, "sample from")
        return generate_samples(ckpt_dir, n_samples, self.config, seed=seed)

    def trainable_parameters(self, model: DenoisingModel) -> Iterator[tuple[str, Any]]:
        """Every UNet parameter (the whole network trains)."""
        return model.unet.named_parameters()


def _refuse_captions(captions: Sequence[str] | None, action: str) -> None:
    """ConfigError unless ``captions`` is None or only null captions ("")."""
    if captions is None:
        return
    if isinstance(captions, str) or any(c != "" for c in captions):
        raise ConfigError(
            f"the ddpm backend is unconditional and cannot {action} captions; "
            "use a text-conditioned backend (e.g. text-unet) or pass captions=None"
        )
