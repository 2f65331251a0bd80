"""The model backend of a round: a small protocol and a registry of implementations by name.

A :class:`ModelBackend` is everything the round stages ask of the generative model: build,
load and save a checkpoint, train one round continuing from the last checkpoint, sample
(optionally from captions), preprocess holders' uint8 images into the model's inputs, the
checkpoint hash signed as provenance, the trainable parameters, and the loaded model
(:class:`DenoisingModel`) whose output attribution differentiates.

Adding a backend is one new module defining a class that satisfies :class:`ModelBackend`, plus
one line here (``register_backend("<name>", "<module>:<Class>")``) — or, outside the package
(a test, a plug-in), ``@register_backend("<name>")`` on the class. Built-in entries are module
paths resolved on first :func:`get_backend`: this module imports neither torch nor diffusers,
so the CLI starts without them; it is the one place where the backend's heavy imports are
deferred.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from offchain.registry import Registry

__all__ = [
    "DenoisingModel",
    "ModelBackend",
    "backend_names",
    "get_backend",
    "model_inputs",
    "register_backend",
]


@dataclass(frozen=True)
class DenoisingModel:
    """A checkpoint loaded in memory: the noise-prediction network and its noise schedule.

    Attribution differentiates ``unet``'s output with respect to its parameters; the copyright
    loss encodes images with it.
    """

    unet: Any
    """ε_θ, a ``torch.nn.Module``: ``unet(x_t, t).sample`` maps noisy images x_t float32
    (B, C, S, S) and timesteps t int64 (B,) (or a scalar) to the predicted noise (B, C, S, S).
    A conditional backend's ``unet`` also takes ``caption_ids`` int64 (B, L) (from
    :attr:`encode_captions`): ``unet(x_t, t, caption_ids).sample``; without them it predicts
    the noise of the null (empty) caption, so ``unet(x_t, t).sample`` works for every backend."""
    scheduler: Any
    """The noise schedule: ``alphas_cumprod`` float (T,) (ᾱ_t) and
    ``config.num_train_timesteps`` (T), as a diffusers ``DDPMScheduler`` has them."""
    encode_captions: Callable[[Sequence[str]], Any] | None = None
    """A conditional backend's tokenizer: B caption strings → int64 tensor (B, L) of token ids
    on the CPU, the ``caption_ids`` ``unet`` takes ("" → the null caption). None for an
    unconditional backend."""
    encode_images: Callable[[Any], Any] | None = None
    """A latent diffusion model's encoder: images as :meth:`ModelBackend.preprocess` returns
    them, float32 (N, C, S, S) in [−1, 1] on any device → the x_0 that ``unet`` denoises, float32
    (N, C', s, s) on the same device (``sd-lora``: the VAE's scaled latents, 4 × S/8 × S/8).
    None for a pixel-space model, whose x_0 are the preprocessed images themselves. Attribution
    and the ``unet`` copyright encoder apply it (:func:`model_inputs`)."""


def model_inputs(model: DenoisingModel, images: Any) -> Any:
    """The x_0 that ``model.unet`` denoises for preprocessed ``images`` float32 (N, C, S, S) in
    [−1, 1]: ``model.encode_images(images)`` for a latent model, ``images`` otherwise."""
    return images if model.encode_images is None else model.encode_images(images)


@runtime_checkable
class ModelBackend(Protocol):
    """A generative model family the round stages can train, sample and attribute.

    Implementations are built from the round's ML settings with :meth:`from_settings` and are
    stateless between calls: every method reads or writes a checkpoint folder. Same inputs and
    seeds give the same outputs (on the same machine, library builds and thread count).
    """

    name: str
    """The registry name (``"ddpm"``)."""
    conditional: bool
    """True for a text-conditioned backend (it trains on captions and samples from them with
    classifier-free guidance); False for an unconditional one, which refuses captions."""

    @classmethod
    def from_settings(cls, settings: Any) -> ModelBackend:
        """The backend for a run's ML settings (:class:`offchain.rounds.config.MLConfig`;
        each implementation documents the fields it reads)."""
        ...

    def build(self, seed: int) -> DenoisingModel:
        """A fresh, untrained model, initialised from ``seed``."""
        ...

    def load(self, ckpt_dir: Path) -> DenoisingModel:
        """The model saved in ``ckpt_dir``, in eval mode on the CPU.

        Raises:
            StageError: the folder or one of its parts is missing or unreadable.
        """
        ...

    def save(self, model: DenoisingModel, ckpt_dir: Path, log: dict[str, Any]) -> Path:
        """Write ``model`` and the training ``log`` to ``ckpt_dir`` atomically (the folder
        appears complete or not at all); returns ``ckpt_dir``."""
        ...

    def is_complete(self, ckpt_dir: Path) -> bool:
        """True when ``ckpt_dir`` holds a finished round's checkpoint."""
        ...

    def checkpoint_hash(self, ckpt_dir: Path) -> str:
        """Hex SHA-256 (64 characters) of the checkpoint's weights: the round's provenance
        ``checkpoint_hash``. Equal hashes mean equal weights.

        Raises:
            StageError: no weights in ``ckpt_dir``.
        """
        ...

    def preprocess(self, images: np.ndarray) -> Any:
        """Holders' uint8 images, grayscale (N, H, W) or RGB (N, H, W, 3), as the model's inputs
        x_0: a float32 tensor (N, C, S, S) in [−1, 1], C the model's channels (a grayscale
        model takes the luma of RGB images; an RGB model replicates a gray channel).

        Raises:
            DataError: not uint8 (N, H, W) or (N, H, W, 3), or empty.
        """
        ...

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
        """Train on uint8 ``images`` (N, H, W) or (N, H, W, 3), continuing from
        ``init_checkpoint`` (the last round's) or from :meth:`build` ``(seed)``; write the
        checkpoint to ``out_dir`` and return it. A complete ``out_dir`` is returned untouched.

        ``captions``: N strings, one per image ("" = no caption: the image trains the null
        caption); None = all "". An unconditional backend accepts only None or all "".

        Raises:
            DataError: bad images, or captions not N strings. ConfigError: settings that do not
            match ``init_checkpoint``, or captions an unconditional backend cannot use.
            StageError: a missing ``init_checkpoint`` or an incomplete ``out_dir``.
        """
        ...

    def sample(
        self,
        ckpt_dir: Path,
        n_samples: int,
        *,
        seed: int,
        captions: Sequence[str] | None = None,
        guidance_scale: float | None = None,
    ) -> np.ndarray:
        """``n_samples`` = M ≥ 1 images drawn from the checkpoint's model, seeded by ``seed``:
        float32 (M, C, S, S) in [−1, 1].

        ``captions`` (M strings) condition a text-conditioned backend, which samples with
        classifier-free guidance ε̂ = ε(∅) + w · (ε(c) − ε(∅)), w = ``guidance_scale`` (None:
        the backend's configured scale); captions None = the null caption (unconditional
        samples). An unconditional backend refuses captions other than None or all "" and
        ignores ``guidance_scale``.

        Raises:
            ConfigError: ``n_samples`` < 1, ``len(captions) != n_samples``, or captions the
                backend cannot use.
            StageError: a missing or incomplete checkpoint.
        """
        ...

    def trainable_parameters(self, model: DenoisingModel) -> Iterator[tuple[str, Any]]:
        """``(name, tensor)`` of the parameters training updates (and attribution
        differentiates), in ``named_parameters`` order (for a conditional backend, the UNet's
        and the caption encoder's)."""
        ...


_REGISTRY: Registry[ModelBackend] = Registry("model backend")

register_backend = _REGISTRY.register
"""``register_backend(name, "<module>:<Class>")`` (a built-in, imported on first use) or
``@register_backend(name)`` on a class; ConfigError when ``name`` is taken."""


backend_names = _REGISTRY.names
"""``backend_names()``: the registered backend names, sorted."""
get_backend = _REGISTRY.get
"""``get_backend(name)``: the backend class registered as ``name`` (its module imported on first
use); ConfigError naming the choices when there is none."""


register_backend("ddpm", "offchain.diffusion.ddpm:DDPMBackend")
register_backend("text-unet", "offchain.diffusion.text_unet:TextUNetBackend")
register_backend("sd-lora", "offchain.diffusion.sd_lora:SDLoraBackend")
