"""One round of DDPM training: continue the previous round's UNet on this round's images.

The loop is the ε-prediction objective of Ho et al. (2020), Algorithm 1, written out:

    x_0 ~ data,  t ~ Uniform{0, …, T−1},  ε ~ N(0, I)
    x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε                  (forward diffusion)
    loss = ‖ε − ε_θ(x_t, t)‖²                          (predict the noise residual)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import diffusers
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from tqdm.auto import tqdm

from offchain.diffusion.device import autocast, select_device
from offchain.diffusion.model import (
    SCHEDULER_SUBDIR,
    TRAIN_LOG,
    UNET_SUBDIR,
    DiffusionConfig,
    build_scheduler,
    build_unet,
    checkpoint_hash,
    is_complete_checkpoint,
    load_checkpoint,
    preprocess,
    torch_threads,
)
from offchain.errors import ConfigError, StageError
from offchain.utils import atomic_dir, read_json, seed_everything, write_json

__all__ = ["read_train_log", "save_checkpoint", "train_round"]

logger = logging.getLogger(__name__)


def train_round(
    images: np.ndarray,
    out_dir: Path,
    cfg: DiffusionConfig | None = None,
    init_checkpoint: Path | None = None,
    progress: bool = True,
) -> Path:
    """Train the round's diffusion model on ``images`` and save it to ``out_dir``.

    Starts from the weights in ``init_checkpoint`` (the previous round's checkpoint) when given,
    else from a fresh UNet seeded with ``cfg.seed``. The optimizer (AdamW, linear warm-up over
    ``cfg.lr_warmup_steps`` then constant learning rate) starts fresh each round. Batches walk
    through seeded random permutations of the images, one epoch after the other, so every image
    is seen equally often; with fewer images than ``cfg.batch_size`` a batch repeats images.

    The result is written to a temporary sibling folder and renamed to ``out_dir`` when
    complete (see :mod:`offchain.diffusion.model` for the layout); ``train_log.json`` records the
    loss per step, the wall time and the inputs. If ``out_dir`` already holds a complete
    checkpoint, nothing is trained and ``out_dir`` is returned. Same inputs and ``cfg.seed`` →
    the same weights (on the same machine, torch build and thread count).

    Training runs on ``cfg.device`` (:func:`~offchain.diffusion.device.select_device`; on CUDA
    the forward pass under bfloat16 autocast); batches, timesteps and noise are drawn from a CPU
    generator and moved there, and the weights are saved from the CPU.

    Args:
        images: uint8 array of shape (N, H, W) or (N, H, W, 3) (RGB, trained on its luma),
            N ≥ 1; resized by :func:`preprocess`.
        out_dir: checkpoint folder to create (must not exist, or be empty).
        cfg: hyperparameters; None: :class:`DiffusionConfig` defaults.
        init_checkpoint: previous round's checkpoint folder, or None to start from scratch.
        progress: show a tqdm progress bar.

    Returns:
        ``out_dir``.

    Raises:
        DataError: ``images`` is empty or not uint8 (N, H, W) or (N, H, W, 3).
        ConfigError: ``cfg`` is out of range (or names an absent device) or does not match
            ``init_checkpoint``'s model.
        StageError: ``init_checkpoint`` is missing or incomplete, or ``out_dir`` holds an
            incomplete checkpoint (not overwritten: remove it to retrain).
    """
    cfg = cfg if cfg is not None else DiffusionConfig()
    out_dir = Path(out_dir)
    if is_complete_checkpoint(out_dir):
        logger.info("checkpoint %s is complete; skipping training", out_dir)
        return out_dir
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise StageError(
            f"{out_dir} exists but is not a complete checkpoint; remove it to train this round"
        )
    cfg.validate()
    device = select_device(cfg.device)
    x0_all = preprocess(images, cfg.image_size)  # (N, 1, S, S) float32 in [-1, 1]
    with torch_threads(cfg.num_threads):
        unet, scheduler, log = _train(x0_all, cfg, init_checkpoint, out_dir.name, progress,
                                      device)
    log["image_shape_in"] = [int(s) for s in images.shape[1:]]
    save_checkpoint(unet, scheduler, log, out_dir)
    logger.info(
        "trained %s: %d steps on %d images in %.1f s, final loss %s",
        out_dir,
        cfg.train_steps,
        log["n_images"],
        log["seconds"],
        log["final_loss_mean_last_20"],
    )
    return out_dir


def _train(
    x0_all: torch.Tensor,
    cfg: DiffusionConfig,
    init_checkpoint: Path | None,
    name: str,
    progress: bool,
    device: torch.device,
) -> tuple[UNet2DModel, DDPMScheduler, dict]:
    """The training loop on preprocessed images x0_all (N, 1, S, S) on ``device``; returns the
    trained UNet (back on the CPU), its scheduler and the log."""
    n_images = x0_all.shape[0]

    seed_everything(cfg.seed)  # fixes the fresh UNet's initial weights
    if init_checkpoint is not None:
        unet, scheduler = load_checkpoint(init_checkpoint)
        _check_compatible(cfg, unet.config, scheduler.config, init_checkpoint)
        init_hash: str | None = checkpoint_hash(init_checkpoint)
    else:
        unet, scheduler = build_unet(cfg), build_scheduler(cfg)
        init_hash = None
    unet.to(device).train()
    x0_all = x0_all.to(device)

    generator = torch.Generator().manual_seed(cfg.seed)  # batches, timesteps and noise
    optimizer = torch.optim.AdamW(
        unet.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / (cfg.lr_warmup_steps + 1))
    )
    num_train_timesteps = scheduler.config.num_train_timesteps

    losses: list[float] = []
    order = torch.empty(0, dtype=torch.long)
    started = time.perf_counter()
    bar = tqdm(range(cfg.train_steps), desc=f"train {name}", disable=not progress)
    for _ in bar:
        # Next batch of clean images x_0: (B, 1, S, S), from a stream of seeded permutations.
        while len(order) < cfg.batch_size:
            order = torch.cat([order, torch.randperm(n_images, generator=generator)])
        batch_index, order = order[: cfg.batch_size], order[cfg.batch_size :]
        clean_images = x0_all[batch_index.to(device)]

        # Sample noise ε ~ N(0, I) and a timestep t ~ U{0, …, T−1} for every image.
        noise = torch.randn(clean_images.shape, generator=generator).to(device)
        timesteps = torch.randint(
            0, num_train_timesteps, (clean_images.shape[0],), generator=generator
        ).to(device)

        # Forward diffusion: x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε.
        noisy_images = scheduler.add_noise(clean_images, noise, timesteps)

        # Predict the noise residual ε_θ(x_t, t) and regress it onto the true noise ε.
        with autocast(device):
            noise_pred = unet(noisy_images, timesteps).sample
        loss = F.mse_loss(noise_pred.float(), noise)

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_schedule.step()

        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    seconds = time.perf_counter() - started
    unet.to("cpu")
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.cpu()  # add_noise moved it to `device`

    log = {
        "steps": cfg.train_steps,
        "loss": losses,
        "final_loss_mean_last_20": float(np.mean(losses[-20:])) if losses else None,
        "seconds": seconds,
        "n_images": n_images,
        "device": str(device),
        "init_checkpoint": str(init_checkpoint) if init_checkpoint is not None else None,
        "init_checkpoint_hash": init_hash,
        "config": dataclasses.asdict(cfg),
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
    }
    return unet, scheduler, log


def read_train_log(ckpt_dir: Path) -> dict:
    """The ``train_log.json`` of a checkpoint written by :func:`train_round`."""
    path = Path(ckpt_dir) / TRAIN_LOG
    if not path.is_file():
        raise StageError(f"{path} is missing")
    return read_json(path)


def save_checkpoint(unet: UNet2DModel, scheduler: DDPMScheduler, log: dict, out_dir: Path) -> None:
    """Write ``unet/``, ``scheduler/`` and ``train_log.json`` (last) into a temporary sibling
    folder, then rename it to ``out_dir`` (which must not exist, or be empty)."""
    def write(tmp: Path) -> None:
        unet.save_pretrained(tmp / UNET_SUBDIR)
        scheduler.save_pretrained(tmp / SCHEDULER_SUBDIR)
        write_json(tmp / TRAIN_LOG, log)

    atomic_dir(out_dir, write)  # out_dir empty or absent (checked by the caller)


def _check_compatible(cfg: DiffusionConfig, unet_config, scheduler_config, ckpt: Path) -> None:
    """ConfigError when ``cfg`` describes a different model than the checkpoint holds."""
    expected = {
        "sample_size": cfg.image_size,
        "block_out_channels": tuple(cfg.block_out_channels),
        "layers_per_block": cfg.layers_per_block,
        "norm_num_groups": cfg.norm_num_groups,
        "add_attention": cfg.add_attention,
        "num_train_timesteps": cfg.num_train_timesteps,
        "beta_schedule": cfg.beta_schedule,
    }
    found = {
        "sample_size": unet_config.sample_size,
        "block_out_channels": tuple(unet_config.block_out_channels),
        "layers_per_block": unet_config.layers_per_block,
        "norm_num_groups": unet_config.norm_num_groups,
        "add_attention": unet_config.add_attention,
        "num_train_timesteps": scheduler_config.num_train_timesteps,
        "beta_schedule": scheduler_config.beta_schedule,
    }
    diff = {k: (expected[k], found[k]) for k in expected if expected[k] != found[k]}
    if diff:
        detail = ", ".join(f"{k}: config {a!r} vs checkpoint {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"config does not match checkpoint {ckpt}: {detail}")
