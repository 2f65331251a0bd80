"""The base of the ``sd-lora`` backend: a local diffusers Stable Diffusion folder, its UNet and
text encoder(s) wrapped as one ε-network with LoRA adapters, and VAE latents (cached per image).

Nothing here knows about rounds or checkpoints (:mod:`offchain.diffusion.sd_lora`): it loads the
folder a user's ``model_path`` names (``local_files_only``: nothing is fetched), builds the
:class:`~offchain.diffusion.backend.DenoisingModel` the stages use (``unet`` an
:class:`SDLoraUNet` over latents, ``encode_captions`` the CLIP tokenizer(s), ``encode_images``
the VAE encoder) and encodes images to latents.

Two folder families, told apart by ``model_index.json``'s ``_class_name``:

- Stable Diffusion 1.x/2.x (``StableDiffusionPipeline``): one CLIP text encoder; the UNet's
  ``encoder_hidden_states`` are its last hidden states.
- SDXL (``StableDiffusionXLPipeline``): ``text_encoder`` (CLIP ViT-L) and ``text_encoder_2``
  (OpenCLIP bigG, with projection), ``tokenizer`` and ``tokenizer_2``. As the SDXL pipeline
  does: ``encoder_hidden_states`` = the two encoders' penultimate hidden states concatenated
  along features; ``added_cond_kwargs`` ``text_embeds`` = ``text_encoder_2``'s pooled
  (projected) output and ``time_ids`` = (original size, crop top-left (0, 0), target size),
  both sizes the image side the latents decode to (no crop, no resize conditioning). The
  caption ids of both tokenizers travel as ONE int64 (B, L₁ + L₂) tensor (the rows
  concatenated), split inside :class:`SDLoraUNet`, so ``encode_captions`` keeps the protocol's
  (B, L) and TRAK maps one (L,) row per example. The null caption is the tokenized "" (the one
  training drops captions to), not SDXL's zeroed negative embedding.

Either way the model's ``scheduler`` is a ``DDPMScheduler`` made from the folder's scheduler
config (as diffusers' training scripts do): training and attribution noise with
``x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε`` whatever sampler the folder names (SDXL's Euler adds noise by σ);
sampling keeps the folder's scheduler class.
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
from offchain.utils import read_json, seed_everything, write_npy

__all__ = [
    "SDXL_PIPELINE",
    "SDLoraUNet",
    "build_model",
    "cached_latents",
    "encode_latents",
    "is_sdxl",
    "load_base",
    "lora_parameters",
    "missing_model_parts",
    "pipeline_class_name",
]

_MODEL_PARTS = (  # (what, files of which one must exist)
    ("model_index.json", ("model_index.json",)),
    ("unet/", ("unet/config.json",)),
    ("vae/", ("vae/config.json",)),
    ("text_encoder/", ("text_encoder/config.json",)),
    ("tokenizer/", ("tokenizer/vocab.json", "tokenizer/tokenizer.json")),
    ("scheduler/", ("scheduler/scheduler_config.json",)),
)
_SDXL_PARTS = (  # what an SDXL folder has besides
    ("text_encoder_2/", ("text_encoder_2/config.json",)),
    ("tokenizer_2/", ("tokenizer_2/vocab.json", "tokenizer_2/tokenizer.json")),
)
SDXL_PIPELINE = "StableDiffusionXLPipeline"
"""``model_index.json``'s ``_class_name`` of an SDXL folder."""


# --- the base model -----------------------------------------------------------------------------


def pipeline_class_name(model_path: Path) -> str | None:
    """``model_index.json``'s ``_class_name`` in ``model_path`` (e.g. ``StableDiffusionPipeline``,
    :data:`SDXL_PIPELINE`), or None when the file is absent or unreadable."""
    try:
        name = read_json(Path(model_path) / "model_index.json").get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def is_sdxl(model_path: Path) -> bool:
    """Whether ``model_path`` is an SDXL folder (``_class_name`` :data:`SDXL_PIPELINE`)."""
    return pipeline_class_name(model_path) == SDXL_PIPELINE


def missing_model_parts(model_path: Path) -> list[str]:
    """The parts of a diffusers Stable Diffusion folder absent from ``model_path`` (empty when
    it looks complete): ``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``,
    ``tokenizer/``, ``scheduler/`` and, for an SDXL folder (:func:`is_sdxl`),
    ``text_encoder_2/`` and ``tokenizer_2/``; or the folder itself."""
    model_path = Path(model_path)
    if not model_path.is_dir():
        return [f"the folder {model_path}"]
    parts = _MODEL_PARTS + (_SDXL_PARTS if is_sdxl(model_path) else ())
    return [what for what, files in parts
            if not any((model_path / f).is_file() for f in files)]


def load_base(model_path: Path) -> Any:
    """The folder's pipeline (float32, CPU), loaded with ``local_files_only=True``: a
    ``StableDiffusionPipeline`` (no safety checker; components ``unet``, ``vae``,
    ``text_encoder``, ``tokenizer``, ``scheduler``) or, for an SDXL folder, a
    ``StableDiffusionXLPipeline`` (no watermarker; also ``text_encoder_2``, ``tokenizer_2``).

    Raises:
        ConfigError: the folder or one of its parts is missing (named), it cannot be loaded, or
            its scheduler's ``prediction_type`` is not ``epsilon`` (the loss sd-lora trains).
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    model_path = Path(model_path)
    missing = missing_model_parts(model_path)
    if missing:
        raise ConfigError(f"model_path {model_path} is not a diffusers Stable Diffusion folder: "
                          f"missing {', '.join(missing)}")
    try:
        if is_sdxl(model_path):
            pipe = StableDiffusionXLPipeline.from_pretrained(
                model_path, local_files_only=True, add_watermarker=False,
                torch_dtype=torch.float32,
            )
        else:
            pipe = StableDiffusionPipeline.from_pretrained(
                model_path, local_files_only=True, safety_checker=None, feature_extractor=None,
                requires_safety_checker=False, torch_dtype=torch.float32,
            )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot load the Stable Diffusion folder {model_path}: {exc}") from exc
    prediction = pipe.scheduler.config.get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise ConfigError(f"the Stable Diffusion folder {model_path} predicts {prediction!r} "
                          "(e.g. SD 2.x 768-v); sd-lora trains, samples and attributes "
                          "ε-prediction models only (SD 1.x, SD 2.x base, SDXL)")
    return pipe


class SDLoraUNet(nn.Module):
    """ε_θ(z_t, t, c): the UNet (with LoRA adapters) and the frozen CLIP text encoder(s) as one
    module (``unet.*``, ``text_encoder.*`` and, for SDXL, ``text_encoder_2.*`` parameters).

    ``forward(noisy_latents, timesteps, caption_ids=None)``: z_t float32 (B, 4, s, s), t int64
    (B,) or a scalar, caption ids int64 (B, L) from ``encode_captions`` (None: the empty
    caption) → the UNet's output, ``.sample`` float32 (B, 4, s, s) the predicted noise.

    SD 1.x/2.x (``text_encoder_2`` None): ``encoder_hidden_states`` = the text encoder's last
    hidden states (B, L, D). SDXL: ``caption_ids`` holds the ``tokenizer`` ids (B, L₁) then the
    ``tokenizer_2`` ids (B, L₂), L₁ = ``split``; ``encoder_hidden_states`` = both encoders'
    penultimate hidden states concatenated (B, L₁, D₁ + D₂) (L₁ = L₂ as in SDXL), and
    ``added_cond_kwargs`` = ``text_embeds`` (B, D_pool), ``text_encoder_2``'s pooled projection,
    and ``time_ids`` (B, 6) = (S, S, 0, 0, S, S) with S = s × ``vae_scale_factor`` the pixel
    side of the latents (the training or sampling resolution).

    Args:
        unet: the ``UNet2DConditionModel`` (SDXL: ``addition_embed_type="text_time"``).
        text_encoder: a ``CLIPTextModel``.
        null_ids: int64 (L,) ids of "" (the null caption), as ``encode_captions`` gives them.
        text_encoder_2: SDXL's ``CLIPTextModelWithProjection``, or None.
        split: L₁, the length of the first tokenizer's ids (SDXL only).
        vae_scale_factor: pixels per latent cell (SDXL's ``time_ids``).

    Raises:
        ConfigError: an SDXL wrapper whose two id rows differ in length (L₁ ≠ L₂).
    """

    def __init__(self, unet: nn.Module, text_encoder: nn.Module, null_ids: Tensor,
                 text_encoder_2: nn.Module | None = None, split: int | None = None,
                 vae_scale_factor: int = 8) -> None:
        super().__init__()
        if text_encoder_2 is not None and (not split or 2 * split != null_ids.shape[-1]):
            raise ConfigError(f"SDXL's two tokenizers must give ids of one length L (their hidden "
                              f"states are concatenated per token): got L1 = {split} of "
                              f"{null_ids.shape[-1]} ids")
        self.unet = unet
        self.text_encoder = text_encoder
        self.text_encoder_2 = text_encoder_2
        self.split = split
        self.vae_scale_factor = int(vae_scale_factor)
        self.register_buffer("null_ids", null_ids.to(torch.int64), persistent=False)

    def forward(self, noisy_latents: Tensor, timesteps: Tensor | int,
                caption_ids: Tensor | None = None):
        if caption_ids is None:
            caption_ids = self.null_ids.expand(noisy_latents.shape[0], -1)
        caption_ids = caption_ids.to(self.null_ids.device)
        if self.text_encoder_2 is None:
            hidden = self.text_encoder(caption_ids)[0]
            return self.unet(noisy_latents, timesteps, encoder_hidden_states=hidden)
        hidden, added = self._sdxl_conditioning(noisy_latents, caption_ids)
        return self.unet(noisy_latents, timesteps, encoder_hidden_states=hidden,
                         added_cond_kwargs=added)

    def _sdxl_conditioning(self, noisy_latents: Tensor, caption_ids: Tensor
                           ) -> tuple[Tensor, dict[str, Tensor]]:
        """SDXL's ``encoder_hidden_states`` (B, L₁, D₁ + D₂) and ``added_cond_kwargs``."""
        ids_1, ids_2 = caption_ids[:, : self.split], caption_ids[:, self.split :]
        out_1 = self.text_encoder(ids_1, output_hidden_states=True)
        out_2 = self.text_encoder_2(ids_2, output_hidden_states=True)
        hidden = torch.cat([out_1.hidden_states[-2], out_2.hidden_states[-2]], dim=-1)
        pooled = out_2.text_embeds  # (B, D_pool)
        side_h, side_w = (int(d) * self.vae_scale_factor for d in noisy_latents.shape[-2:])
        time_ids = torch.tensor([side_h, side_w, 0, 0, side_h, side_w],
                                dtype=pooled.dtype, device=pooled.device)
        return hidden, {"text_embeds": pooled,
                        "time_ids": time_ids.expand(pooled.shape[0], -1)}


class _CaptionIds:
    """The CLIP tokenizer(s) as ``encode_captions``: B strings → int64 (B, L) ids on the CPU,
    each tokenizer's ids padded and truncated to its ``model_max_length`` and concatenated
    along L in order (SDXL: ``tokenizer`` then ``tokenizer_2``)."""

    def __init__(self, *tokenizers: Any) -> None:
        self.tokenizers = tokenizers

    @property
    def lengths(self) -> list[int]:
        """Each tokenizer's L."""
        return [int(tok.model_max_length) for tok in self.tokenizers]

    def __call__(self, captions: Sequence[str]) -> Tensor:
        ids = [tok(list(captions), padding="max_length", max_length=tok.model_max_length,
                   truncation=True, return_tensors="pt").input_ids.to(torch.int64)
               for tok in self.tokenizers]
        return ids[0] if len(ids) == 1 else torch.cat(ids, dim=1)


def build_model(pipe: Any, lora_config: Any, seed: int,
                adapter: dict[str, Tensor] | None = None) -> DenoisingModel:
    """The base pipeline's parts with fresh adapters of peft's ``lora_config`` (initialised from
    ``seed``: A random, B zero) or ``adapter``'s weights, everything but the adapters frozen,
    eval mode, CPU. ``pipe`` is :func:`load_base`'s (SD 1.x/2.x or SDXL). The model's
    ``scheduler`` is a ``DDPMScheduler`` from the folder's scheduler config (the training noise
    schedule); ``encode_images`` maps pixels to the UNet's x_0 (the VAE's scaled latents,
    :func:`encode_latents`).

    Raises:
        StageError: ``adapter`` has weights the UNet lacks.
    """
    from diffusers import DDPMScheduler
    from peft.utils import set_peft_model_state_dict

    text_encoder_2 = getattr(pipe, "text_encoder_2", None)
    for part in (pipe.vae, pipe.text_encoder, text_encoder_2, pipe.unet):
        if part is not None:
            part.requires_grad_(False)
    seed_everything(seed)
    pipe.unet.add_adapter(lora_config)
    if adapter is not None:
        result = set_peft_model_state_dict(pipe.unet, adapter)
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise StageError(f"the adapter has weights the UNet lacks: {unexpected[:3]}")
    if text_encoder_2 is None:
        encode = _CaptionIds(pipe.tokenizer)
        model = SDLoraUNet(pipe.unet, pipe.text_encoder, encode([""])[0])
    else:
        encode = _CaptionIds(pipe.tokenizer, pipe.tokenizer_2)
        model = SDLoraUNet(pipe.unet, pipe.text_encoder, encode([""])[0], text_encoder_2,
                           split=encode.lengths[0], vae_scale_factor=pipe.vae_scale_factor)
    model.eval()
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    return DenoisingModel(model, scheduler, encode_captions=encode,
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
