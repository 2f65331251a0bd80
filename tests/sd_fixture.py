"""A tiny Stable Diffusion 1.x folder built from configs, with no download (tests of ``sd-lora``).

:func:`build_tiny_sd` writes, with ``StableDiffusionPipeline.save_pretrained``, the folder a
user's ``--model-path`` names: ``model_index.json``, ``unet/`` (a small
``UNet2DConditionModel``, 8×8 latents), ``vae/`` (a one-level ``AutoencoderKL``: the latents
have the image's side, 4 channels), ``text_encoder/`` (a 2-layer ``CLIPTextModel``, width 32),
``tokenizer/`` (a ``CLIPTokenizer`` over a byte-level BPE vocabulary this module writes) and
``scheduler/`` (``DDPMScheduler``). Weights are random, from a seed.

:func:`build_tiny_sdxl` writes the SDXL counterpart with ``StableDiffusionXLPipeline``: the UNet
takes SDXL's added conditioning (``addition_embed_type="text_time"``), ``text_encoder/`` a
``CLIPTextModel`` and ``text_encoder_2/`` a ``CLIPTextModelWithProjection`` (width 32 each, so
cross-attention width 64), ``tokenizer/`` and ``tokenizer_2/`` two ``CLIPTokenizer`` over the same
vocabulary (the second pads with "!" as SDXL's does), ``scheduler/`` an ``EulerDiscreteScheduler``
(SDXL's sampler).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = [
    "tiny_backend",
    "TINY_SD_RESOLUTION",
    "build_tiny_sd",
    "build_tiny_sdxl",
    "bytes_to_unicode",
    "clip_tokenizer",
]

TINY_SD_RESOLUTION = 8
"""Image side in pixels the tiny folder is meant for (the VAE keeps the side: latents 8×8)."""
_MAX_TOKENS = 16
_MERGES = ("r e", "re d</w>", "a p", "p l", "ap pl", "appl e</w>", "b l", "bl u", "blu e</w>")


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (GPT-2's) map of the 256 byte values to printable unicode characters."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def _write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """``vocab.json`` (the 256 byte symbols, their ``</w>`` forms, the merges' results and the
    two specials) and ``merges.txt``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(m.split()) for m in _MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "\n".join(_MERGES) + "\n", encoding="utf-8")
    return vocab_file, merges_file


def clip_tokenizer(folder: Path, model_max_length: int = _MAX_TOKENS,
                   pad_token: str | None = None):
    """A ``CLIPTokenizer`` over the small byte-level BPE vocabulary written to ``folder`` (about
    520 ids; ``model_max_length`` L ids per caption; ``pad_token`` None: CLIP's
    ``<|endoftext|>``, SDXL's second tokenizer pads with "!")."""
    from transformers import CLIPTokenizer

    vocab_file, merges_file = _write_tokenizer_files(Path(folder))
    extra = {} if pad_token is None else {"pad_token": pad_token}
    return CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=model_max_length,
                         **extra)


def build_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """Write a tiny random Stable Diffusion 1.x pipeline folder to ``folder`` and return it.

    Raises:
        OSError: ``folder`` cannot be written.
    """
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    vocab_file, merges_file = _write_tokenizer_files(folder.parent / f".{folder.name}-bpe")
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=_MAX_TOKENS)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=TINY_SD_RESOLUTION, in_channels=4, out_channels=4,
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=32,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32,),
        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        layers_per_block=1, norm_num_groups=32, sample_size=TINY_SD_RESOLUTION,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=_MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                              beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              steps_offset=1)
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder)
    return folder


def _tiny_vae() -> torch.nn.Module:
    """A one-level ``AutoencoderKL`` (the latents keep the image's side, 4 channels)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32,),
        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        layers_per_block=1, norm_num_groups=32, sample_size=TINY_SD_RESOLUTION,
    )


def _tiny_clip_config(tokenizer, projection_dim: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=_MAX_TOKENS, projection_dim=projection_dim,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_sdxl(folder: Path, seed: int = 0) -> Path:
    """Write a tiny random SDXL pipeline folder to ``folder`` and return it.

    The UNet's cross-attention width is 64 (two 32-wide encoders), its added conditioning
    ``text_embeds`` (32, ``text_encoder_2``'s projection) and ``time_ids`` (6 × 8 sinusoidal):
    ``projection_class_embeddings_input_dim`` = 6 · 8 + 32 = 80.

    Raises:
        OSError: ``folder`` cannot be written.
    """
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(folder)
    bpe = folder.parent / f".{folder.name}-bpe"
    tokenizer, tokenizer_2 = clip_tokenizer(bpe), clip_tokenizer(bpe, pad_token="!")
    torch.manual_seed(seed)
    time_embed_dim, pooled_dim = 8, 32
    unet = UNet2DConditionModel(
        sample_size=TINY_SD_RESOLUTION, in_channels=4, out_channels=4,
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + pooled_dim,
    )
    text_encoder = CLIPTextModel(_tiny_clip_config(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(_tiny_clip_config(tokenizer_2, pooled_dim))
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                                       beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       timestep_spacing="leading")
    pipeline = StableDiffusionXLPipeline(
        vae=_tiny_vae(), text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
        add_watermarker=False,
    )
    pipeline.save_pretrained(folder)
    return folder


def tiny_backend(folder: Path, cache_dir: Path | None = None):  # -> SDLoraBackend
    """The ``sd-lora`` backend of the tests on a tiny folder, built the way a run builds it
    (``from_settings`` with ``model_path``), then made quick: 3 steps of batch 2, 3 sampling
    steps, one thread. ``cache_dir``: the run's cache folder (None: the backend's default)."""
    import dataclasses
    from types import SimpleNamespace

    from offchain.diffusion import get_backend
    from offchain.diffusion.sd_lora import SDLoraBackend

    settings = SimpleNamespace(model_path=str(folder), image_size=TINY_SD_RESOLUTION,
                               train_steps=3, device="cpu", guidance_scale=3.0,
                               cache_dir=cache_dir)
    made = get_backend("sd-lora").from_settings(settings)
    cfg = dataclasses.replace(made.config, batch_size=2, num_inference_steps=3, num_threads=1)
    return SDLoraBackend(cfg)

