"""The diffusion model of a round: configuration, input preprocessing, UNet, noise scheduler.

A denoising diffusion probabilistic model (DDPM, Ho et al. 2020) on grayscale images: a small
diffusers ``UNet2DModel`` ε_θ(x_t, t) predicts the noise residual ε that the forward diffusion
``x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε`` added to a clean image x_0, with a ``DDPMScheduler``
holding the β schedule. A checkpoint is a folder::

    <ckpt_dir>/unet/        UNet2DModel.save_pretrained  (config.json + *.safetensors)
    <ckpt_dir>/scheduler/   DDPMScheduler.save_pretrained (scheduler_config.json)
    <ckpt_dir>/train_log.json   written last by :func:`offchain.diffusion.train.train_round`
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel

from offchain.errors import ConfigError, DataError, StageError
from offchain.utils import sha256_file

__all__ = [
    "SCHEDULER_SUBDIR",
    "TRAIN_LOG",
    "UNET_SUBDIR",
    "DiffusionConfig",
    "build_scheduler",
    "build_unet",
    "check_images",
    "checkpoint_hash",
    "is_complete_checkpoint",
    "load_checkpoint",
    "luma",
    "preprocess",
    "torch_threads",
]

logger = logging.getLogger(__name__)

UNET_SUBDIR = "unet"
SCHEDULER_SUBDIR = "scheduler"
TRAIN_LOG = "train_log.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")


@dataclass
class DiffusionConfig:
    """Hyperparameters of the per-round diffusion model, its training and its sampling.

    The defaults train one round (300 steps on ~512 MNIST digits at 16×16) in about half a
    minute on two CPU cores; after three rounds of continued training the samples are digits.
    """

    image_size: int = 16
    """Side S in pixels that images are resized to (MNIST 28×28 → 16×16 for CPU speed); S must
    be divisible by 2^(len(block_out_channels) − 1)."""
    block_out_channels: tuple[int, ...] = (32, 64)
    """UNet channels per resolution level; one DownBlock2D/UpBlock2D per level."""
    layers_per_block: int = 1
    """ResNet layers per UNet block."""
    norm_num_groups: int = 8
    """GroupNorm groups; must divide every entry of ``block_out_channels``."""
    add_attention: bool = True
    """Self-attention in the UNet's 8×8 mid block (global shape; ~10 % of the step time)."""
    num_train_timesteps: int = 1000
    """T, the number of forward-diffusion steps of the DDPM β schedule."""
    beta_schedule: str = "linear"
    """β_t schedule of the DDPM scheduler (``linear`` from 1e-4 to 0.02, as in Ho et al.)."""
    train_steps: int = 300
    """Optimizer steps per round (each round continues from the previous round's weights)."""
    batch_size: int = 64
    """Images per training step (and per sampling batch)."""
    learning_rate: float = 2e-3
    """Peak AdamW learning rate."""
    lr_warmup_steps: int = 20
    """Steps of linear learning-rate warm-up at the start of every round."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    num_inference_steps: int = 50
    """Denoising steps when sampling (a subset of the T training timesteps)."""
    num_threads: int | None = None
    """torch intra-op CPU threads while training and sampling (restored afterwards); None keeps
    torch's setting (one per core). On a CPU shared with other busy processes use 1: measured on
    a loaded 2-core machine, 2 threads took 1.9–2.8 s per step against 0.15 s with 1 thread."""
    seed: int = 0
    """Seed of weight initialisation, batch order, timesteps and noise in training; vary it per
    round (``dataclasses.replace(cfg, seed=...)``) so rounds do not repeat the same noise."""
    device: str = "auto"
    """Where training and sampling run (:func:`offchain.diffusion.device.select_device`):
    ``auto`` (CUDA when present, with bfloat16 autocast; else the CPU), ``cpu`` or ``cuda``.
    Random draws come from CPU generators either way, so a seed gives the same noise."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first out-of-range field (run when the config
        is built, and again by the functions that use it, since the class is mutable)."""
        if not self.block_out_channels:
            raise ConfigError("block_out_channels must name at least one level")
        factor = 2 ** (len(self.block_out_channels) - 1)
        if self.image_size < 4 or self.image_size % factor:
            raise ConfigError(
                f"image_size must be >= 4 and divisible by {factor} for "
                f"{len(self.block_out_channels)} levels, got {self.image_size}"
            )
        bad_groups = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad_groups:
            raise ConfigError(
                f"norm_num_groups={self.norm_num_groups} must divide every block_out_channels "
                f"entry, not {bad_groups}"
            )
        for name in (
            "layers_per_block",
            "num_train_timesteps",
            "batch_size",
            "num_inference_steps",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1 or None, got {self.num_threads}")
        if self.train_steps < 0 or self.lr_warmup_steps < 0:
            raise ConfigError("train_steps and lr_warmup_steps must be >= 0")
        if self.num_inference_steps > self.num_train_timesteps:
            raise ConfigError(
                f"num_inference_steps ({self.num_inference_steps}) cannot exceed "
                f"num_train_timesteps ({self.num_train_timesteps})"
            )
        if self.beta_schedule not in _BETA_SCHEDULES:
            raise ConfigError(
                f"beta_schedule must be one of {list(_BETA_SCHEDULES)}, got {self.beta_schedule!r}"
            )
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")


def luma(images: np.ndarray) -> np.ndarray:
    """uint8 RGB images (..., 3) → their uint8 luma (...), ITU-R 601-2 as Pillow's
    ``convert("L")`` computes it, bit for bit: ``(19595·R + 38470·G + 7471·B + 2¹⁵) >> 16``
    (so a holder's color image gives the same gray whether converted on reading or here)."""
    rgb = images.astype(np.uint32)
    y = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return y.astype(np.uint8)


def check_images(images: np.ndarray) -> None:
    """Raise :class:`DataError` unless ``images`` is a non-empty uint8 array of shape (N, H, W)
    (grayscale) or (N, H, W, 3) (RGB)."""
    ok = (
        isinstance(images, np.ndarray)
        and images.dtype == np.uint8
        and (images.ndim == 3 or (images.ndim == 4 and images.shape[3] == 3))
    )
    if not ok:
        raise DataError(
            "images must be a uint8 array of shape (N, H, W) or (N, H, W, 3), got "
            f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
        )
    if 0 in images.shape[:3]:
        raise DataError(f"images must be non-empty, got shape {images.shape}")


def preprocess(images: np.ndarray, image_size: int, channels: int = 1) -> torch.Tensor:
    """Turn uint8 grayscale or RGB images into model inputs x_0 with ``channels`` channels.

    Channels first: for ``channels`` = 1 RGB images become their :func:`luma`; for 3 a
    grayscale image is replicated into R, G and B. Pixels are then scaled from {0, …, 255} to
    [−1, 1] (``x / 127.5 − 1``), resized to S × S with antialiased bilinear interpolation
    (``F.interpolate(mode="bilinear", antialias=True, align_corners=False)``: a triangle filter
    widened by the downscale factor) and clamped back into [−1, 1]. Images already S × S are
    only rescaled.

    Args:
        images: uint8 array of shape (N, H, W) or (N, H, W, 3), N ≥ 1.
        image_size: output side S in pixels.
        channels: C, 1 (grayscale model) or 3 (RGB model).

    Returns:
        float32 tensor of shape (N, C, S, S), values in [−1, 1].

    Raises:
        DataError: not uint8 (N, H, W) or (N, H, W, 3), or empty; ``image_size`` < 1 or
            ``channels`` not 1 or 3.
    """
    check_images(images)
    if image_size < 1:
        raise DataError(f"image_size must be >= 1, got {image_size}")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    if channels == 1 and images.ndim == 4:
        images = luma(images)
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N, 1 or 3, H, W)
    if x.shape[1] != channels:
        x = x.expand(-1, channels, -1, -1)
    x = x / 127.5 - 1.0
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
    return x.clamp_(-1.0, 1.0).contiguous()


def build_unet(cfg: DiffusionConfig) -> UNet2DModel:
    """A fresh noise-prediction UNet ε_θ: (B, 1, S, S) float32 noisy images, timesteps (B,) →
    (B, 1, S, S) predicted noise. Initialised from torch's global generator (seed it first)."""
    cfg.validate()
    n_levels = len(cfg.block_out_channels)
    return UNet2DModel(
        sample_size=cfg.image_size,
        in_channels=1,
        out_channels=1,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=("DownBlock2D",) * n_levels,
        up_block_types=("UpBlock2D",) * n_levels,
        norm_num_groups=cfg.norm_num_groups,
        add_attention=cfg.add_attention,
    )


def build_scheduler(cfg: DiffusionConfig) -> DDPMScheduler:
    """The DDPM noise scheduler: T = ``num_train_timesteps`` steps, ε-prediction, samples clipped
    to [−1, 1], ``trailing`` timestep spacing (sampling starts at t = T − 1)."""
    cfg.validate()
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type="epsilon",
        clip_sample=True,
        timestep_spacing="trailing",
    )


def is_complete_checkpoint(ckpt_dir: Path) -> bool:
    """True when ``ckpt_dir`` holds the UNet config and weights, the scheduler config and the
    training log (the log is written last, so a complete folder is a finished round)."""
    ckpt_dir = Path(ckpt_dir)
    return not _missing_parts(ckpt_dir)


def load_checkpoint(ckpt_dir: Path) -> tuple[UNet2DModel, DDPMScheduler]:
    """Load the UNet (in eval mode, float32, CPU) and the scheduler saved in ``ckpt_dir``.

    Raises:
        StageError: the folder or one of its parts is missing, or diffusers cannot load it.
    """
    ckpt_dir = Path(ckpt_dir)
    missing = _missing_parts(ckpt_dir, require_log=False)
    if missing:
        raise StageError(f"checkpoint {ckpt_dir} is incomplete: missing {', '.join(missing)}")
    try:
        # low_cpu_mem_usage=False: the small model loads directly (no `accelerate` needed).
        unet = UNet2DModel.from_pretrained(ckpt_dir / UNET_SUBDIR, low_cpu_mem_usage=False)
        scheduler = DDPMScheduler.from_pretrained(ckpt_dir / SCHEDULER_SUBDIR)
    except (OSError, ValueError, RuntimeError) as exc:
        raise StageError(f"cannot load checkpoint {ckpt_dir}: {exc}") from exc
    unet.eval()
    return unet, scheduler


def checkpoint_hash(ckpt_dir: Path) -> str:
    """Hex SHA-256 identifying the UNet weights in ``ckpt_dir``.

    ``sha256`` over the lines ``"<file name> <sha256 of file>\\n"`` of every weight file
    (``*.safetensors`` / ``*.bin``) in ``ckpt_dir/unet``, sorted by name. The configs and the
    training log are not included: equal hashes mean equal weights.

    Raises:
        StageError: no weight file.
    """
    unet_dir = Path(ckpt_dir) / UNET_SUBDIR
    files = _weight_files(unet_dir)
    if not files:
        raise StageError(f"no weight file (*.safetensors, *.bin) in {unet_dir}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name} {sha256_file(path)}\n".encode())
    return digest.hexdigest()


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(num_threads)``, then restore the previous
    count; None changes nothing."""
    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _weight_files(unet_dir: Path) -> list[Path]:
    if not unet_dir.is_dir():
        return []
    return sorted(p for p in unet_dir.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file())


def _missing_parts(ckpt_dir: Path, require_log: bool = True) -> list[str]:
    """Relative names of the parts ``ckpt_dir`` lacks (empty when complete)."""
    if not ckpt_dir.is_dir():
        return [f"the folder {ckpt_dir}"]
    missing = []
    if not (ckpt_dir / UNET_SUBDIR / "config.json").is_file():
        missing.append(f"{UNET_SUBDIR}/config.json")
    if not _weight_files(ckpt_dir / UNET_SUBDIR):
        missing.append(f"{UNET_SUBDIR}/*.safetensors")
    if not (ckpt_dir / SCHEDULER_SUBDIR / "scheduler_config.json").is_file():
        missing.append(f"{SCHEDULER_SUBDIR}/scheduler_config.json")
    if require_log and not (ckpt_dir / TRAIN_LOG).is_file():
        missing.append(TRAIN_LOG)
    return missing
