"""The per-round diffusion model behind the :class:`ModelBackend` protocol and its registry.

The first backend, ``ddpm``, is a small unconditional grayscale DDPM (diffusers ``UNet2DModel`` +
``DDPMScheduler``): ``train_round`` continues the previous round's checkpoint on this round's
images; ``generate_samples`` draws the samples that attribution and the copyright loss look at.
``text-unet`` (:mod:`offchain.diffusion.text_unet`) is an RGB UNet conditioned on captions
through a small caption encoder trained with it, sampled with classifier-free guidance.

Importing this package does not import torch: the protocol and the registry
(:mod:`offchain.diffusion.backend`) are loaded at once, the torch-backed names below on first
access (PEP 562 ``__getattr__``), so the CLI starts fast. This is the package's one place of
deferred imports.
"""

from __future__ import annotations

from offchain.diffusion.backend import (
    DenoisingModel,
    ModelBackend,
    backend_names,
    get_backend,
    model_inputs,
    register_backend,
)
from offchain.registry import lazy_attributes

_LAZY = {
    "DDPMBackend": "offchain.diffusion.ddpm",
    "TextUNetBackend": "offchain.diffusion.text_unet",
    "TextUNetConfig": "offchain.diffusion.text_unet",
    "WordTokenizer": "offchain.diffusion.text_encoder",
    "DiffusionConfig": "offchain.diffusion.model",
    "build_scheduler": "offchain.diffusion.model",
    "build_unet": "offchain.diffusion.model",
    "checkpoint_hash": "offchain.diffusion.model",
    "is_complete_checkpoint": "offchain.diffusion.model",
    "load_checkpoint": "offchain.diffusion.model",
    "luma": "offchain.diffusion.model",
    "preprocess": "offchain.diffusion.model",
    "autocast": "offchain.diffusion.device",
    "select_device": "offchain.diffusion.device",
    "torch_generator": "offchain.diffusion.device",
    "generate_samples": "offchain.diffusion.sample",
    "samples_to_uint8": "offchain.diffusion.sample",
    "save_sample_grid": "offchain.diffusion.sample",
    "read_train_log": "offchain.diffusion.train",
    "save_checkpoint": "offchain.diffusion.train",
    "train_round": "offchain.diffusion.train",
}

__all__ = [
    "DenoisingModel",
    "ModelBackend",
    "backend_names",
    "get_backend",
    "model_inputs",
    "register_backend",
    *_LAZY,
]


__getattr__ = lazy_attributes(__name__, _LAZY)
