"""The per-round diffusion model: a small DDPM (diffusers ``UNet2DModel`` + ``DDPMScheduler``).

``train_round`` continues the previous round's checkpoint on this round's images;
``generate_samples`` draws the samples that attribution and the copyright loss look at.
"""

from offchain.diffusion.model import (
    DiffusionConfig,
    build_scheduler,
    build_unet,
    checkpoint_hash,
    is_complete_checkpoint,
    load_checkpoint,
    preprocess,
)
from offchain.diffusion.sample import generate_samples, samples_to_uint8, save_sample_grid
from offchain.diffusion.train import read_train_log, train_round

__all__ = [
    "DiffusionConfig",
    "build_scheduler",
    "build_unet",
    "checkpoint_hash",
    "generate_samples",
    "is_complete_checkpoint",
    "load_checkpoint",
    "preprocess",
    "read_train_log",
    "samples_to_uint8",
    "save_sample_grid",
    "train_round",
]
