"""Seeded image augmentations that make the *known positives* of the copyright calibration.

An augmented copy of a training work is still a copy of it (a reproduction survives cropping,
mirroring, re-encoding, noise and tone changes), so pairs (augment(x_i), x_i) are the positive
class of :func:`offchain.copyright.calibration.fit_calibration`. The transformations follow the
copy-detection benchmarks SSCD was trained and evaluated on (DISC 2021: crops, flips, colour
jitter, JPEG, noise; Pizzi et al., CVPR 2022), with strengths sized for small images:

=========  =============================================================================
``crop``   random square crop keeping 75–90 % of the side at a random position, resized back
           to S × S (bilinear), i.e. a 1.1–1.33× zoom with a shift
``flip``   horizontal mirror image
``noise``  additive Gaussian noise, σ ∈ [0.05, 0.15] in the [−1, 1] scale (2.5–7.5 % of range)
``colour`` brightness shift b ∈ [−0.2, 0.2] and contrast factor c ∈ [0.7, 1.3] about the
           image mean, ``(x − mean) · c + mean + b``; on RGB images also a saturation
           factor s ∈ [0.6, 1.4] about each pixel's luma, ``luma + s · (x − luma)`` (drawn
           after b and c, so grayscale images get the same jitter as before)
``jpeg``   JPEG re-encoding with Pillow at quality ∈ [20, 60] (8 × 8 block artefacts)
=========  =============================================================================

Combinations are written with ``+`` and applied left to right, e.g. ``"crop+colour+jpeg"``.
Every image draws its own parameters from one ``numpy.random.default_rng([seed, k_1, …])``
per call, keyed by the seed and the steps' positions in :data:`BASIC_AUGMENTATIONS`, so the
same images, name and seed always give the same output, and different types draw
independently. Outputs are float32 in [−1, 1].
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from offchain.errors import ConfigError, DataError

__all__ = ["AUGMENTATIONS", "BASIC_AUGMENTATIONS", "augment", "check_augmentation"]

BASIC_AUGMENTATIONS = ("crop", "flip", "noise", "colour", "jpeg")
"""The single transformations."""

AUGMENTATIONS = (*BASIC_AUGMENTATIONS, "crop+colour+jpeg", "flip+noise")
"""The default augmentation types of the calibration: each single one plus two combinations."""

CROP_SIDE = (0.75, 0.9)
NOISE_SIGMA = (0.05, 0.15)
BRIGHTNESS = (-0.2, 0.2)
CONTRAST = (0.7, 1.3)
SATURATION = (0.6, 1.4)
LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights of R, G, B (Pillow's ``convert("L")``)."""
JPEG_QUALITY = (20, 60)


def check_augmentation(name: str) -> tuple[str, ...]:
    """The basic steps of ``name`` (e.g. ``"crop+jpeg"`` → ``("crop", "jpeg")``).

    Raises:
        ConfigError: empty name or an unknown step.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"augmentation must be a non-empty string, got {name!r}")
    steps = tuple(name.split("+"))
    unknown = [s for s in steps if s not in BASIC_AUGMENTATIONS]
    if unknown:
        raise ConfigError(
            f"unknown augmentation step(s) {unknown} in {name!r}; use {list(BASIC_AUGMENTATIONS)}"
            " joined by '+'"
        )
    return steps


def _crop(x: Tensor, rng: np.random.Generator) -> Tensor:
    b = x.shape[0]
    side = rng.uniform(*CROP_SIDE, size=b)
    # Crop centre offset so that the crop stays inside the image: |t| ≤ 1 − side (grid units).
    tx = rng.uniform(-1.0, 1.0, size=b) * (1.0 - side)
    ty = rng.uniform(-1.0, 1.0, size=b) * (1.0 - side)
    theta = torch.zeros(b, 2, 3, dtype=torch.float32)
    theta[:, 0, 0] = torch.from_numpy(side).float()
    theta[:, 1, 1] = torch.from_numpy(side).float()
    theta[:, 0, 2] = torch.from_numpy(tx).float()
    theta[:, 1, 2] = torch.from_numpy(ty).float()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _noise(x: Tensor, rng: np.random.Generator) -> Tensor:
    sigma = torch.from_numpy(rng.uniform(*NOISE_SIGMA, size=x.shape[0])).float()
    eps = torch.from_numpy(rng.standard_normal(size=tuple(x.shape))).float()
    return x + sigma.view(-1, 1, 1, 1) * eps


def _colour(x: Tensor, rng: np.random.Generator) -> Tensor:
    b = x.shape[0]
    bright = torch.from_numpy(rng.uniform(*BRIGHTNESS, size=b)).float().view(-1, 1, 1, 1)
    contrast = torch.from_numpy(rng.uniform(*CONTRAST, size=b)).float().view(-1, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + bright
    if x.shape[1] == 3:
        sat = torch.from_numpy(rng.uniform(*SATURATION, size=b)).float().view(-1, 1, 1, 1)
        luma = (x * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
        x = luma + sat * (x - luma)
    return x


def _jpeg(x: Tensor, rng: np.random.Generator) -> Tensor:
    quality = rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, size=x.shape[0])
    u8 = ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).numpy()  # (B, C, S, S)
    out = np.empty_like(u8)
    for i in range(u8.shape[0]):
        arr = u8[i, 0] if u8.shape[1] == 1 else np.moveaxis(u8[i], 0, -1)
        if arr.ndim == 3 and arr.shape[-1] not in (3,):
            raise DataError(f"JPEG needs 1 or 3 channels, got {u8.shape[1]}")
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality[i]))
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        out[i] = dec[None] if dec.ndim == 2 else np.moveaxis(dec, -1, 0)
    return torch.from_numpy(out).float() / 127.5 - 1.0


_STEPS = {
    "crop": _crop,
    "flip": lambda x, _rng: x.flip(-1),
    "noise": _noise,
    "colour": _colour,
    "jpeg": _jpeg,
}


def augment(images: Tensor, name: str, seed: int = 0) -> Tensor:
    """Apply the augmentation ``name`` (a step or ``+``-joined steps) to every image.

    Args:
        images: float (B, C, S, S) in [−1, 1] (C = 1 or 3 for ``jpeg``).
        name: e.g. ``"crop"``, ``"crop+colour+jpeg"`` (see the module docstring).
        seed: with ``name``, fixes every random parameter: same inputs → same output.

    Returns:
        float32 (B, C, S, S) in [−1, 1] (clamped after every step).

    Raises:
        ConfigError: unknown augmentation.
        DataError: not a 4-D batch, or ``jpeg`` on images with other than 1 or 3 channels.
    """
    steps = check_augmentation(name)
    if images.ndim != 4 or images.shape[0] < 1:
        raise DataError(f"images must be (B ≥ 1, C, S, S), got {tuple(images.shape)}")
    x = images.detach().to("cpu", torch.float32).clamp(-1.0, 1.0)
    # One generator per (seed, augmentation name): independent of the other types' draws.
    key = [int(seed) % 2**32, *(BASIC_AUGMENTATIONS.index(s) + 1 for s in steps)]
    rng = np.random.default_rng(key)
    for step in steps:
        x = _STEPS[step](x, rng).clamp_(-1.0, 1.0)
    return x.contiguous()
