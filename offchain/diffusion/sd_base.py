"""The base of the ``sd-lora`` backend: a local diffusers Stable Diffusion folder, its UNet and
text encoder wrapped as one ε-network with LoRA adapters, and VAE latents (cached per image).

Nothing here knows about rounds or checkpoints (:mod:`offchain.diffusion.sd_lora`): it loads the
folder a user's ``model_path`` names (``local_files_only``: nothing is fetched), builds the
:class:`~offchain.diffusion.backend.DenoisingModel` the stages use (``unet`` an
:class:`SDLoraUNet` over latents, ``encode_captions`` the CLIP tokenizer, ``encode_images`` the
VAE encoder) and encodes images to latents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from offchain.diffusion.backend import DenoisingModel
from offchain.diffusion.model import preprocess
from offchain.errors import ConfigError, StageError
from offchain.utils import seed_everything, write_npy

__all__ = [
    "SDLoraUNet",
    "build_model",
    "cached_latents",
    "encode_latents",
    "load_base",
    "lora_parameters",
    "missing_model_parts",
]

_MODEL_PARTS = (  # (what, files of which one must exist)
    ("model_index.json", ("model_index.json",)),
    ("unet/", ("unet/config.json",)),
    ("vae/", ("vae/config.json",)),
    ("text_encoder/", ("text_encoder/config.json",)),
    ("tokenizer/", ("tokenizer/vocab.json", "tokenizer/tokenizer.json")),
    ("scheduler/", ("scheduler/scheduler_config.json",)),
)


# --- the base model -----------------------------------------------------------------------------


def missing_model_parts(model_path: Path) -> list[str]:
    """The parts of a diffusers Stable Diffusion folder absent from ``model_path`` (empty when
    it looks complete): ``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``,
    ``tokenizer/``, ``scheduler/``, or the folder itself."""
    model_path = Path(model_path)
    if not model_path.is_dir():
        return [f"the folder {model_path}"]
    return [what for what, files in _MODEL_PARTS
            if not any((model_path / f).is_file() for f in files)]


def load_base(model_path: Path) -> Any:
    """The folder's ``StableDiffusionPipeline`` (float32, CPU, no safety checker), loaded with
    ``local_files_only=True``: components ``unet``, ``vae``, ``text_encoder``, ``tokenizer``,
    ``scheduler``.

    Raises:
        ConfigError: the folder or one of its parts is missing (named), or it cannot be loaded.
    """
    from diffusers import StableDiffusionPipeline

    model_path = Path(model_path)
    missing = missing_model_parts(model_path)
    if missing:
        raise ConfigError(f"model_path {model_path} is not a diffusers Stable Diffusion folder: "
                          f"missing {', '.join(missing)}")
    try:
        return StableDiffusionPipeline.from_pretrained(
            model_path, local_files_only=True, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False, torch_dtype=torch.float32,
        )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot load the Stable Diffusion folder {model_path}: {exc}") from exc


class SDLoraUNet(nn.Module):
    """ε_θ(z_t, t, c): the UNet (with LoRA adapters) and the frozen CLIP text encoder as one
    module (``unet.*`` and ``text_encoder.*`` parameters).

    ``forward(noisy_latents, timesteps, caption_ids=None)``: z_t float32 (B, 4, s, s), t int64
    (B,) or a scalar, caption ids int64 (B, L) from the CLIP tokenizer (None: the empty caption)
    → the UNet's output, ``.sample`` float32 (B, 4, s, s) the predicted noise.
    """

    def __init__(self, unet: nn.Module, text_encoder: nn.Module, null_ids: Tensor) -> None:
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder
        self.register_buffer("null_ids", null_ids.to(torch.int64), persistent=False)

    def forward(self, noisy_latents: Tensor, timesteps: Tensor | int,
                caption_ids: Tensor | None = None):
        if caption_ids is None:
            caption_ids = self.null_ids.expand(noisy_latents.shape[0], -1)
        hidden = self.text_encoder(caption_ids.to(self.null_ids.device))[0]
        return self.unet(noisy_latents, timesteps, encoder_hidden_states=hidden)


class _CaptionIds:
    """The CLIP tokenizer as ``encode_captions``: B strings → int64 (B, L) ids on the CPU,
    padded and truncated to the tokenizer's ``model_max_length`` L."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, captions: Sequence[str]) -> Tensor:
        return self.tokenizer(
            list(captions), padding="max_length", max_length=self.tokenizer.model_max_length,
            truncation=True, return_tensors="pt",
        ).input_ids.to(torch.int64)


def build_model(pipe: Any, lora_config: Any, seed: int,
                adapter: dict[str, Tensor] | None = None) -> DenoisingModel:
    """The base pipeline's parts with fresh adapters of peft's ``lora_config`` (initialised from
    ``seed``: A random, B zero) or ``adapter``'s weights, everything but the adapters frozen,
    eval mode, CPU. The model's ``encode_images`` maps pixels to the UNet's x_0 (the VAE's
    scaled latents, :func:`encode_latents`)."""
    from peft.utils import set_peft_model_state_dict

    pipe.vae.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    pipe.unet.requires_grad_(False)
    seed_everything(seed)
    pipe.unet.add_adapter(lora_config)
    if adapter is not None:
        result = set_peft_model_state_dict(pipe.unet, adapter)
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise StageError(f"the adapter has weights the UNet lacks: {unexpected[:3]}")
    encode = _CaptionIds(pipe.tokenizer)
    model = SDLoraUNet(pipe.unet, pipe.text_encoder, encode([""])[0])
    model.eval()
    return DenoisingModel(model, pipe.scheduler, encode_captions=encode,
                          encode_images=_LatentEncoder(pipe.vae))


def lora_parameters(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """``(name, tensor)`` of the LoRA parameters (names containing ``lora_``), in
    ``named_parameters`` order."""
    return ((n, p) for n, p in model.named_parameters() if "lora_" in n)


# --- latents ------------------------------------------------------------------------------------


def _vae_key(vae: nn.Module, resolution: int) -> str:
    """A short hash of the VAE's weights and the resolution: the latent cache's subfolder."""
    digest = hashlib.sha256(f"{resolution}\n".encode())
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def encode_latents(vae: nn.Module, pixels: Tensor, device: torch.device,
                   batch_size: int = 8) -> Tensor:
    """VAE latents z_0 = mean of q(z | x) × ``vae.config.scaling_factor``: float32 (N, 4, s, s)
    on the CPU, from pixels float32 (N, 3, S, S) in [−1, 1] (s = S / the VAE's downscale)."""
    vae.to(device)
    out = []
    with torch.no_grad():
        for start in range(0, len(pixels), batch_size):
            batch = pixels[start : start + batch_size].to(device)
            out.append(vae.encode(batch).latent_dist.mean.float().cpu())
    vae.to("cpu")
    return torch.cat(out) * float(vae.config.scaling_factor)


class _LatentEncoder:
    """``encode_images`` of an sd-lora model: pixels float32 (N, 3, S, S) in [−1, 1] → the
    scaled VAE latents float32 (N, 4, s, s) (:func:`encode_latents`), computed on the pixels'
    device and returned there."""

    def __init__(self, vae: nn.Module) -> None:
        self.vae = vae

    def __call__(self, pixels: Tensor) -> Tensor:
        device = pixels.device
        return encode_latents(self.vae, pixels, device).to(device)


def cached_latents(vae: nn.Module, images: np.ndarray, resolution: int, cache_dir: Path,
                   device: torch.device) -> tuple[Tensor, int]:
    """Latents float32 (N, 4, s, s) of uint8 ``images`` (N, H, W[, 3]) at ``resolution`` px,
    read from or added to ``cache_dir/<VAE key>/<image sha256>.npy``; also the number of cache
    hits."""
    folder = Path(cache_dir) / _vae_key(vae, resolution)
    folder.mkdir(parents=True, exist_ok=True)
    keys = [hashlib.sha256(repr(img.shape).encode() + img.tobytes()).hexdigest() for img in images]
    todo = [i for i, k in enumerate(keys) if not (folder / f"{k}.npy").is_file()]
    if todo:
        fresh = encode_latents(vae, preprocess(images[todo], resolution, 3), device)
        for i, z in zip(todo, fresh, strict=True):
            write_npy(folder / f"{keys[i]}.npy", z.numpy())
    latents = [torch.from_numpy(np.load(folder / f"{k}.npy")) for k in keys]
    return torch.stack(latents), len(images) - len(todo)
