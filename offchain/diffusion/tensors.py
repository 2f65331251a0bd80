"""Checked image batches: arrays or tensors turned into the float32 CPU tensors the ML stages read.

* :func:`image_batch`         float32 (B, C, S, S), finite; any value range (attribution).
* :func:`clamped_image_batch` the same in the model's pixel scale [−1, 1]: values at most
  :data:`PIXEL_RANGE_TOL` outside are clamped, anything further is refused (copyright features,
  whose SSIM and tiled ℓ2 assume that scale).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from offchain.errors import DataError

__all__ = ["PIXEL_RANGE_TOL", "clamped_image_batch", "image_batch"]

PIXEL_RANGE_TOL = 1e-3
"""How far outside [−1, 1] a pixel of :func:`clamped_image_batch` may lie (then clamped)."""


def image_batch(x: object, name: str) -> Tensor:
    """``x`` as a contiguous float32 CPU tensor of shape (B, C, S, S), B ≥ 1, every value finite.

    A float32 CPU tensor, or a float32 array (whose memory the tensor then shares), comes back
    without a copy.

    Args:
        x: a tensor or anything :func:`numpy.asarray` accepts.
        name: the argument's name for error messages.

    Raises:
        DataError: not four dimensions, an empty batch, or a NaN or infinite value.
    """
    t = x if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x))
    t = t.detach().to("cpu", torch.float32).contiguous()
    if t.ndim != 4 or t.shape[0] < 1:
        raise DataError(f"{name} must have shape (B ≥ 1, C, S, S), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise DataError(f"{name} contains non-finite values")
    return t


def clamped_image_batch(x: object, name: str) -> Tensor:
    """:func:`image_batch` ``(x, name)`` in [−1, 1]: values within :data:`PIXEL_RANGE_TOL`
    outside the range are clamped **in place** (so a float32 CPU input is clamped too).

    Raises:
        DataError: as :func:`image_batch`, or a value further than the tolerance outside
            [−1, 1] (naming the range found).
    """
    t = image_batch(x, name)
    lo, hi = float(t.min()), float(t.max())
    if lo < -1 - PIXEL_RANGE_TOL or hi > 1 + PIXEL_RANGE_TOL:
        raise DataError(f"{name} must lie in [-1, 1], got [{lo:.3f}, {hi:.3f}]")
    return t.clamp_(-1.0, 1.0)
