"""TRAK model-output functions for an ε-prediction diffusion UNet (D-TRAK and plain loss).

TRAK (Park et al., "TRAK: Attributing Model Behavior at Scale", ICML 2023) linearises a model
output function f(z; θ) around the trained weights; its features are random projections of the
per-example gradients ∇_θ f(z; θ). For diffusion models D-TRAK (Zheng et al., "Intriguing
Properties of Data Attribution on Diffusion Models", ICLR 2024, arXiv 2311.00500) found that the
squared norm of the predicted noise attributes better than the training loss itself:

    f_dtrak(x; θ) = (1/K) Σ_k  mean_pixels( ε_θ(x_{t_k}, t_k)² )
    f_loss(x; θ)  = (1/K) Σ_k  mean_pixels( (ε_k − ε_θ(x_{t_k}, t_k))² )
    x_{t_k}       = sqrt(ᾱ_{t_k}) · x + sqrt(1 − ᾱ_{t_k}) · ε_k

with K fixed timesteps t_k = k·⌊T/K⌋ (k = 0..K−1, as in the D-TRAK reference code) and fixed,
seeded noise ε_k. The pixel mean (rather than the sum) follows the reference code's
``F.mse_loss(..., reduction="mean")``; it only rescales the gradients by 1/(C·S·S).

The noise is not drawn inside the output function: it travels in the batch, ``batch = (images,
noise)`` with ``images`` float32 (B, C, S, S) and ``noise`` float32 (B, K, C, S, S) made by
:func:`make_noise` from a seed, a stream id and each example's *global* index. This keeps the
output function pure (so ``torch.func.vmap`` can map it over the batch) and makes an example's
features independent of how the data set was batched.

Text-conditioned models: the caption travels in the batch too, ``batch = (images, noise,
caption_ids)`` with ``caption_ids`` int64 (B, L) from the backend's ``encode_captions``, and the
output differentiates the conditional prediction ε_θ(x_t, t, c) — the example's own caption c,
repeated over its K timesteps, passed as ``unet(x_t, t, caption_ids=...)``. ``vmap`` maps the
embedding lookup of the ids like any other index (it has a batching rule); nothing else about
the output function changes. Without ids the call is ``unet(x_t, t)`` exactly as before, so an
unconditional model's features are bit-for-bit those of the earlier pipeline. Inside the vmapped function nothing is
indexed by a tensor: the coefficients sqrt(ᾱ_t), sqrt(1 − ᾱ_t) are gathered once at construction
with ``index_select`` (indexing ``alphas_cumprod[t]`` inside ``vmap`` fails, see
docs/toolchain.md).

Under TRAK's conventions ``get_out_to_loss_grad`` returns the diagonal of Q; D-TRAK uses
Q = I (ones), and so do we for both variants.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from trak.modelout_functions import AbstractModelOutput

from offchain.errors import ConfigError, DataError

__all__ = [
    "OUTPUT_NAMES",
    "DiffusionLossOutput",
    "DiffusionModelOutput",
    "DTrakOutput",
    "OutputName",
    "make_model_output",
    "make_noise",
    "uniform_timesteps",
]

OutputName = Literal["dtrak", "loss"]
OUTPUT_NAMES: tuple[str, ...] = ("dtrak", "loss")

TRAIN_STREAM = 0
"""Noise stream id of training examples (featurize)."""
TARGET_STREAM = 1
"""Noise stream id of targets (score): a different stream from the training examples'."""


def uniform_timesteps(num_train_timesteps: int, k: int) -> Tensor:
    """The K fixed timesteps t_k = k·⌊T/K⌋, k = 0..K−1, as int64 (K,) in [0, T).

    Raises:
        ConfigError: ``k`` < 1 or ``k`` > ``num_train_timesteps``.
    """
    if k < 1 or k > num_train_timesteps:
        raise ConfigError(f"num_timesteps must be in [1, {num_train_timesteps}], got {k}")
    return torch.arange(k, dtype=torch.int64) * (num_train_timesteps // k)


def make_noise(
    indices: Sequence[int] | np.ndarray,
    num_timesteps: int,
    sample_shape: tuple[int, int, int],
    seed: int,
    stream: int,
) -> Tensor:
    """Fixed Gaussian noise ε for each example and timestep, float32 (B, K, C, S, S).

    Example ``i``'s noise depends only on (``seed``, ``stream``, ``i``): it is drawn from NumPy's
    PCG64 seeded with that triple, so it is the same whatever batch the example is in and on
    every platform. Use different ``stream`` ids for training examples and targets.

    Args:
        indices: global indices (B,) of the examples, ints ≥ 0.
        num_timesteps: K.
        sample_shape: (C, S, S) of one image.
        seed: base seed ≥ 0.
        stream: stream id ≥ 0 (e.g. :data:`TRAIN_STREAM`, :data:`TARGET_STREAM`).
    """
    if seed < 0 or stream < 0:
        raise ConfigError(f"seed and stream must be ≥ 0, got seed={seed}, stream={stream}")
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if np.any(idx < 0):
        raise DataError("example indices must be ≥ 0")
    shape = (num_timesteps, *sample_shape)
    out = np.empty((len(idx), *shape), dtype=np.float32)
    for row, i in enumerate(idx):
        rng = np.random.default_rng([int(seed), int(stream), int(i)])
        out[row] = rng.standard_normal(shape, dtype=np.float32)
    return torch.from_numpy(out)


class DiffusionModelOutput(AbstractModelOutput):
    """Shared machinery: fixed timesteps, their ᾱ coefficients, the functional UNet call.

    Subclasses define :meth:`_reduce` (the per-example scalar from ε and ε_θ).

    Args:
        alphas_cumprod: the scheduler's ᾱ, float (T,).
        num_timesteps: K ≥ 1 fixed timesteps (see :func:`uniform_timesteps`).
    """

    name: str = "abstract"

    def __init__(self, alphas_cumprod: Tensor, num_timesteps: int) -> None:
        super().__init__()
        acp = torch.as_tensor(alphas_cumprod, dtype=torch.float32).detach().cpu().reshape(-1)
        self.num_timesteps = int(num_timesteps)
        self.timesteps = uniform_timesteps(acp.numel(), self.num_timesteps)
        # Gathered here, outside vmap, with index_select (never acp[t] inside the mapped code).
        a_t = acp.index_select(0, self.timesteps)
        self.sqrt_alpha = a_t.sqrt().view(-1, 1, 1, 1)  # (K, 1, 1, 1)
        self.sqrt_one_minus_alpha = (1.0 - a_t).sqrt().view(-1, 1, 1, 1)  # (K, 1, 1, 1)

    @abstractmethod
    def _reduce(self, eps: Tensor, eps_pred: Tensor) -> Tensor:
        """Per-example scalar from the true noise ε and the predicted ε_θ, both (K, C, S, S)."""

    def get_output(
        self,
        model: torch.nn.Module,
        weights: dict[str, Tensor],
        buffers: dict[str, Tensor],
        image: Tensor,
        noise: Tensor,
        caption_ids: Tensor | None = None,
    ) -> Tensor:
        """f(x; θ) for ONE example (TRAK vmaps this over the batch).

        Args:
            model: the ε-network (a ``diffusers.UNet2DModel``, or a conditional backend's
                module taking ``caption_ids``); only its structure is used.
            weights, buffers: the functional parameters θ (``dict(model.named_parameters())``).
            image: x, float32 (C, S, S) in [-1, 1].
            noise: ε, float32 (K, C, S, S).
            caption_ids: the example's caption c as token ids, int64 (L,), or None (an
                unconditional call, ``model(x_t, t)``). Given, the prediction is
                ε_θ(x_t, t, c) with c repeated over the K timesteps.

        Returns:
            A 0-d float32 tensor.
        """
        device = image.device
        sqrt_a = self.sqrt_alpha.to(device)
        sqrt_1ma = self.sqrt_one_minus_alpha.to(device)
        x_t = sqrt_a * image.unsqueeze(0) + sqrt_1ma * noise  # (K, C, S, S): forward diffusion
        kwargs = {}
        if caption_ids is not None:  # (L,) → (K, L): the same caption at every timestep
            kwargs["caption_ids"] = caption_ids.unsqueeze(0).expand(self.num_timesteps, -1)
        eps_pred = torch.func.functional_call(
            model, (weights, buffers), args=(x_t, self.timesteps.to(device)), kwargs=kwargs
        ).sample  # (K, C, S, S): predicted noise residual ε_θ(x_t, t[, c])
        return self._reduce(noise, eps_pred)

    def get_out_to_loss_grad(
        self,
        model: torch.nn.Module,
        weights: dict[str, Tensor],
        buffers: dict[str, Tensor],
        batch: Iterable[Tensor],
    ) -> Tensor:
        """Q = I: ones, float32 (B, 1)."""
        images = next(iter(batch))
        return torch.ones(images.shape[0], 1, dtype=torch.float32, device=images.device)


class DTrakOutput(DiffusionModelOutput):
    """D-TRAK's output: mean over K timesteps of mean_pixels(ε_θ(x_t, t)²)."""

    name = "dtrak"

    def _reduce(self, eps: Tensor, eps_pred: Tensor) -> Tensor:
        return eps_pred.pow(2).mean()


class DiffusionLossOutput(DiffusionModelOutput):
    """The plain denoising loss: mean over K timesteps of mean_pixels((ε − ε_θ(x_t, t))²)."""

    name = "loss"

    def _reduce(self, eps: Tensor, eps_pred: Tensor) -> Tensor:
        return (eps - eps_pred).pow(2).mean()


def make_model_output(
    name: str, alphas_cumprod: Tensor, num_timesteps: int
) -> DiffusionModelOutput:
    """The output function called ``name`` (``"dtrak"`` or ``"loss"``).

    Raises:
        ConfigError: unknown ``name``.
    """
    if name == "dtrak":
        return DTrakOutput(alphas_cumprod, num_timesteps)
    if name == "loss":
        return DiffusionLossOutput(alphas_cumprod, num_timesteps)
    raise ConfigError(f"unknown TRAK output {name!r}; choose one of {OUTPUT_NAMES}")
