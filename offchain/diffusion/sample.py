"""Sampling from a round's diffusion model (DDPM ancestral sampling, Ho et al. 2020, Alg. 2)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from offchain.diffusion.device import autocast, select_device
from offchain.diffusion.model import DiffusionConfig, load_checkpoint, torch_threads
from offchain.errors import ConfigError, DataError
from offchain.utils import atomic_write

__all__ = ["generate_samples", "save_sample_grid", "samples_to_uint8"]

logger = logging.getLogger(__name__)


def generate_samples(
    ckpt_dir: Path,
    n_samples: int,
    cfg: DiffusionConfig | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Draw ``n_samples`` images from the checkpoint's model by DDPM sampling.

    Starting from pure noise x_T ~ N(0, I), each of ``cfg.num_inference_steps`` steps predicts
    the noise residual ε_θ(x_t, t) and lets the DDPM scheduler step to x_{t−1} (adding fresh
    noise except at the last step; predicted x_0 clipped to [−1, 1]). Samples are drawn in
    batches of ``cfg.batch_size`` from one ``torch.Generator`` seeded with ``seed``: the same
    checkpoint, ``seed``, ``n_samples`` and batch size give the same samples. The model runs
    on ``cfg.device`` (:func:`~offchain.diffusion.device.select_device`); the noise is drawn on
    the CPU and moved there.

    Args:
        ckpt_dir: checkpoint folder written by :func:`offchain.diffusion.train.train_round`.
        n_samples: number of samples M ≥ 1.
        cfg: supplies ``num_inference_steps``, ``batch_size`` and ``image_size`` (which must
            equal the checkpoint's); None: :class:`DiffusionConfig` defaults.
        seed: seed of the initial noise and of every step's noise.

    Returns:
        float32 array of shape (M, 1, S, S), values in [−1, 1].

    Raises:
        StageError: the checkpoint is missing or incomplete.
        ConfigError: ``n_samples`` < 1, ``cfg.image_size`` differs from the checkpoint's, or
            ``cfg.device`` is absent.
    """
    cfg = cfg if cfg is not None else DiffusionConfig()
    if n_samples < 1:
        raise ConfigError(f"n_samples must be >= 1, got {n_samples}")
    cfg.validate()
    device = select_device(cfg.device)
    unet, scheduler = load_checkpoint(ckpt_dir)
    unet.to(device)
    size = unet.config.sample_size
    if size != cfg.image_size:
        raise ConfigError(
            f"cfg.image_size={cfg.image_size} but checkpoint {ckpt_dir} was trained at {size}"
        )
    scheduler.set_timesteps(cfg.num_inference_steps)
    generator = torch.Generator().manual_seed(seed)

    batches = []
    with torch.no_grad(), torch_threads(cfg.num_threads):
        for start in range(0, n_samples, cfg.batch_size):
            batch = min(cfg.batch_size, n_samples - start)
            # x_T: pure Gaussian noise, (B, 1, S, S).
            shape = (batch, unet.config.in_channels, size, size)
            images = torch.randn(shape, generator=generator).to(device)
            for t in scheduler.timesteps:
                # Predict the noise residual, then step x_t → x_{t−1}.
                with autocast(device):
                    noise_pred = unet(images, t).sample.float()
                # (on CUDA, diffusers draws the step's noise from the CPU generator and moves it)
                images = scheduler.step(noise_pred, t, images, generator=generator).prev_sample
            batches.append(images.cpu())
    samples = torch.cat(batches).clamp_(-1.0, 1.0).numpy().astype(np.float32, copy=False)
    logger.debug("generated %d samples from %s (seed %d)", n_samples, ckpt_dir, seed)
    return samples


def samples_to_uint8(samples: np.ndarray) -> np.ndarray:
    """float (M, 1, S, S) in [−1, 1] → uint8 (M, S, S), 0 = black; (M, 3, S, S) → uint8
    (M, S, S, 3) RGB: ``round((x + 1) · 127.5)``."""
    if samples.ndim != 4 or samples.shape[1] not in (1, 3):
        raise DataError(f"samples must have shape (M, 1 or 3, S, S), got {samples.shape}")
    pixels = np.rint((np.clip(samples, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    return pixels[:, 0] if samples.shape[1] == 1 else np.ascontiguousarray(
        pixels.transpose(0, 2, 3, 1)
    )


def save_sample_grid(samples: np.ndarray, path: Path, ncol: int = 8, scale: int = 4) -> Path:
    """Save samples (M, C, S, S) in [−1, 1], C = 1 (gray) or 3 (RGB), as one PNG grid, ``ncol``
    per row, each pixel enlarged ``scale``× (nearest neighbour), with a 1-pixel gap; written
    atomically."""
    pixels = samples_to_uint8(samples)
    m, s = pixels.shape[:2]
    nrow = -(-m // ncol)
    grid = np.zeros((nrow * (s + 1) + 1, ncol * (s + 1) + 1, *pixels.shape[3:]), dtype=np.uint8)
    grid[:] = 64
    for i, image in enumerate(pixels):
        r, c = divmod(i, ncol)
        grid[1 + r * (s + 1) : 1 + r * (s + 1) + s, 1 + c * (s + 1) : 1 + c * (s + 1) + s] = image
    picture = Image.fromarray(grid).resize(
        (grid.shape[1] * scale, grid.shape[0] * scale), Image.Resampling.NEAREST
    )
    return atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
