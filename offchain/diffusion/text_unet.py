"""The ``text-unet`` model backend: a pixel-space RGB diffusion UNet conditioned on captions.

ε_θ(x_t, t, c) is a diffusers UNet plus a small caption encoder trained with it
(:mod:`offchain.diffusion.text_encoder`; a word tokenizer built from the first round's captions,
no pretrained weights). Two ways to condition (``TextUNetConfig.conditioning``):

* ``"time"`` (default): the caption's pooled vector is added to the timestep embedding
  (``UNet2DModel(class_embed_type="identity")``, ``class_labels`` = pooled vector), so every
  ResNet block sees it. Costs the same as the unconditional UNet.
* ``"cross"``: ``UNet2DConditionModel`` with cross-attention from the image to the caption's
  token sequence at the lowest resolution only (down, mid and up blocks there); dearer on the
  CPU (see ``bench/train_step.py``).

Classifier-free guidance (Ho & Salimans 2022): in training each caption is replaced by the null
caption "" with probability ``caption_dropout``; sampling predicts both and extrapolates,
ε̂ = ε(x_t, ∅) + w · (ε(x_t, c) − ε(x_t, ∅)), with w = ``guidance_scale``, in one batch.

A checkpoint is a folder::

    <ckpt_dir>/unet/              the diffusers UNet's save_pretrained (config.json + safetensors)
    <ckpt_dir>/scheduler/         DDPMScheduler.save_pretrained
    <ckpt_dir>/text_encoder/      config.json + model.safetensors of the CaptionEncoder
    <ckpt_dir>/tokenizer.json     the word vocabulary (WordTokenizer.to_json)
    <ckpt_dir>/text_unet.json     the TextUNetConfig that trained it
    <ckpt_dir>/train_log.json     written last: a complete folder is a finished round
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel, UNet2DModel
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from offchain.diffusion.backend import DenoisingModel
from offchain.diffusion.device import autocast, select_device
from offchain.diffusion.guidance import check_captions, guided_noise
from offchain.diffusion.model import (
    SCHEDULER_SUBDIR,
    TRAIN_LOG,
    UNET_SUBDIR,
    check_images,
    preprocess,
    torch_threads,
)
from offchain.diffusion.text_encoder import (
    BOS,
    SPECIAL_TOKENS,
    CaptionEncoder,
    CaptionEncoderConfig,
    WordTokenizer,
)
from offchain.errors import ConfigError, StageError
from offchain.utils import atomic_dir, read_json, seed_everything, sha256_file, write_json

__all__ = [
    "CONFIG_FILE",
    "TEXT_ENCODER_SUBDIR",
    "TOKENIZER_FILE",
    "TextConditionedUNet",
    "TextUNetBackend",
    "TextUNetConfig",
]

logger = logging.getLogger(__name__)

TEXT_ENCODER_SUBDIR = "text_encoder"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "text_unet.json"
_ENCODER_WEIGHTS = "model.safetensors"
_CONDITIONINGS = ("time", "cross")
_SAMPLERS = ("ddim", "ddpm")
_ARCHITECTURE = (  # fields a continued round must share with its checkpoint
    "image_size", "channels", "block_out_channels", "layers_per_block", "norm_num_groups",
    "mid_attention", "conditioning", "attention_heads", "text_dim", "text_heads",
    "text_layers", "max_tokens", "num_train_timesteps", "beta_schedule",
)


@dataclass(frozen=True)
class TextUNetConfig:
    """Hyperparameters of the text-conditioned UNet, its caption encoder, training and sampling.

    The defaults are sized for the CPU (``bench/train_step.py`` measures them): 32×32 RGB,
    caption vector added to the time embedding.
    """

    image_size: int = 32
    """Side S in pixels; divisible by 2^(levels − 1)."""
    channels: int = 3
    """C: 3 (RGB; gray images replicated) or 1 (RGB images as luma)."""
    block_out_channels: tuple[int, ...] = (16, 32, 64)
    """UNet channels per resolution level (32, 16, 8 px at the default size). Per training step
    at batch 32, 2 threads (``bench/train_step.py``, load average 1.6): 0.168 s; (32, 64, 64)
    0.310 s."""
    layers_per_block: int = 1
    """ResNet layers per UNet block."""
    norm_num_groups: int = 8
    """GroupNorm groups; divides every ``block_out_channels`` entry."""
    mid_attention: bool = True
    """Self-attention in the mid block (lowest resolution; ``"time"`` only: ``"cross"`` has
    cross-attention there)."""
    conditioning: str = "time"
    """``"time"`` (pooled caption vector added to the timestep embedding) or ``"cross"``
    (cross-attention at the lowest resolution: 0.226 s per step against 0.168 s, batch 32).
    On the 440 emoji of the 8 holders (nearly one caption per image) one 300-step round of
    either learns little from the caption: the ε-MSE with the image's own caption is below the
    null caption's by 0.5–1 % at t = 100 (time 0.1435 vs 0.1448, cross 0.1453 vs 0.1460)."""
    attention_heads: int = 4
    """Heads of the cross-attention (``"cross"``)."""
    text_dim: int = 64
    """D, the caption encoder's token width (the cross-attention's key/value width)."""
    text_heads: int = 4
    """Heads of the caption encoder's transformer layer."""
    text_layers: int = 1
    """Transformer layers of the caption encoder."""
    max_tokens: int = 16
    """L: ``<bos>`` + up to L − 1 words per caption."""
    max_vocab: int = 4096
    """Most tokens in the vocabulary built from the first round's captions (specials included)."""
    caption_dropout: float = 0.1
    """Probability that training replaces a caption by the null caption (trains ε(x_t, ∅))."""
    guidance_scale: float = 3.0
    """w of classifier-free guidance when sampling (1: plain conditional sampling)."""
    num_train_timesteps: int = 1000
    """T of the DDPM β schedule."""
    beta_schedule: str = "linear"
    """β_t schedule (diffusers name)."""
    sampler: str = "ddpm"
    """``"ddpm"`` (ancestral) or ``"ddim"`` (deterministic given x_T, η = 0). Measured on a
    small model trained a few hundred steps (tests' red squares / blue circles, 16 px): DDPM
    ancestral sampling gave clean shapes at 25 and 50 steps, DDIM left high-frequency noise at
    10, 25 and 50 steps (mean neighbour difference 0.21–0.26 against 0.17–0.18 for DDPM and
    0.09 in the data): an under-trained ε_θ's errors survive DDIM's deterministic update."""
    num_inference_steps: int = 25
    """Denoising steps when sampling (each a guided pair of UNet passes)."""
    train_steps: int = 300
    """Optimizer steps per round."""
    batch_size: int = 32
    """Images per training step: 0.168 s per step, 50 s per 300-step round on 2 quiet threads;
    64 takes 0.294 s (88 s)."""
    sample_batch_size: int = 64
    """Images per sampling batch (each doubled for guidance)."""
    learning_rate: float = 2e-3
    """Peak AdamW learning rate. Measured on the 440 images of the 8 emoji holders, one
    300-step round from scratch: final loss (mean of the last 20 steps) 0.0669 at 2e-3 against
    0.0766 at 1e-3, and a larger gain from the image's own caption over the null caption
    (ε-MSE at t = 100: 0.1435 vs 0.1448, against 0.1513 vs 0.1518)."""
    lr_warmup_steps: int = 20
    """Linear warm-up steps at the start of every round."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    num_threads: int | None = None
    """torch intra-op threads while training and sampling (restored afterwards); None keeps
    torch's (``OMP_NUM_THREADS``, set from the available CPUs by ``offchain.cpu``)."""
    device: str = "auto"
    """``auto`` | ``cpu`` | ``cuda`` (:func:`~offchain.diffusion.device.select_device`)."""
    seed: int = 0
    """Seed of initialisation, batches, timesteps, noise and caption dropout."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first out-of-range field."""
        levels = len(self.block_out_channels)
        if levels < 1 or self.image_size < 4 or self.image_size % 2 ** (levels - 1):
            raise ConfigError(
                f"image_size ({self.image_size}) must be >= 4 and divisible by "
                f"2^(levels - 1) for block_out_channels={self.block_out_channels}"
            )
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ConfigError(f"norm_num_groups={self.norm_num_groups} must divide every "
                              f"block_out_channels entry {self.block_out_channels}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        choices = {"conditioning": _CONDITIONINGS, "sampler": _SAMPLERS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {list(allowed)}, got "
                                  f"{getattr(self, name)!r}")
        for name in ("layers_per_block", "num_train_timesteps", "batch_size", "sample_batch_size",
                     "num_inference_steps", "attention_heads", "text_dim", "text_heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.train_steps < 0 or self.lr_warmup_steps < 0 or self.text_layers < 0:
            raise ConfigError("train_steps, lr_warmup_steps and text_layers must be >= 0")
        if self.max_tokens < 2 or self.max_vocab < len(SPECIAL_TOKENS):
            raise ConfigError(f"max_tokens must be >= 2 and max_vocab >= {len(SPECIAL_TOKENS)}")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ConfigError(f"caption_dropout must lie in [0, 1), got {self.caption_dropout}")
        if not self.guidance_scale >= 0.0 or not self.learning_rate > 0.0:
            raise ConfigError("guidance_scale must be >= 0 and learning_rate > 0")
        if self.num_inference_steps > self.num_train_timesteps:
            raise ConfigError("num_inference_steps cannot exceed num_train_timesteps")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1 or None, got {self.num_threads}")

    @property
    def time_embed_dim(self) -> int:
        """Width of the UNet's timestep embedding (4 × the first level's channels)."""
        return 4 * self.block_out_channels[0]


# --- the model ----------------------------------------------------------------------------------


class TextConditionedUNet(nn.Module):
    """ε_θ(x_t, t, c): the UNet and the caption encoder as one module (``unet.*`` and
    ``text_encoder.*`` parameters).

    ``forward(noisy_images, timesteps, caption_ids=None)``: x_t float32 (B, C, S, S), t int64
    (B,) or a scalar, caption ids int64 (B, L) (None: the null caption for every image) → the
    UNet's output object, ``.sample`` float32 (B, C, S, S) the predicted noise.
    """

    def __init__(self, unet: nn.Module, text_encoder: CaptionEncoder, conditioning: str) -> None:
        super().__init__()
        if conditioning not in _CONDITIONINGS:
            raise ConfigError(f"conditioning must be one of {list(_CONDITIONINGS)}")
        self.unet = unet
        self.text_encoder = text_encoder
        self.conditioning = conditioning
        null = torch.zeros(text_encoder.config.max_tokens, dtype=torch.int64)
        null[0] = SPECIAL_TOKENS.index(BOS)
        self.register_buffer("null_ids", null, persistent=False)

    def forward(self, noisy_images: Tensor, timesteps: Tensor | int, caption_ids: Tensor | None = None):
        if caption_ids is None:
            caption_ids = self.null_ids.expand(noisy_images.shape[0], -1)
        caption_ids = caption_ids.to(self.null_ids.device)
        sequence, pooled = self.text_encoder(caption_ids)
        if self.conditioning == "time":
            return self.unet(noisy_images, timesteps, class_labels=pooled)
        return self.unet(
            noisy_images,
            timesteps,
            encoder_hidden_states=sequence,
            encoder_attention_mask=(caption_ids != 0).to(sequence.dtype),
        )


def build_unet(cfg: TextUNetConfig) -> nn.Module:
    """A fresh diffusers UNet for ``cfg`` (from torch's global generator: seed it first)."""
    n = len(cfg.block_out_channels)
    common = dict(
        sample_size=cfg.image_size,
        in_channels=cfg.channels,
        out_channels=cfg.channels,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups,
    )
    if cfg.conditioning == "time":
        return UNet2DModel(
            down_block_types=("DownBlock2D",) * n,
            up_block_types=("UpBlock2D",) * n,
            add_attention=cfg.mid_attention,
            class_embed_type="identity",
            **common,
        )
    return UNet2DConditionModel(
        down_block_types=("DownBlock2D",) * (n - 1) + ("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=cfg.text_dim,
        attention_head_dim=cfg.attention_heads,  # diffusers' legacy name: the number of heads
        **common,
    )


def build_scheduler(cfg: TextUNetConfig) -> DDPMScheduler:
    """The training noise schedule (ε-prediction, samples clipped to [−1, 1], trailing spacing)."""
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type="epsilon",
        clip_sample=True,
        timestep_spacing="trailing",
    )


def build_model(cfg: TextUNetConfig, tokenizer: WordTokenizer, seed: int) -> TextConditionedUNet:
    """A fresh text-conditioned UNet with a caption encoder over ``tokenizer``'s vocabulary,
    initialised from ``seed`` (in training mode, on the CPU)."""
    seed_everything(seed)
    encoder = CaptionEncoder(
        CaptionEncoderConfig(
            vocab_size=len(tokenizer),
            max_tokens=cfg.max_tokens,
            dim=cfg.text_dim,
            heads=cfg.text_heads,
            layers=cfg.text_layers,
            pooled_dim=cfg.time_embed_dim,
        )
    )
    return TextConditionedUNet(build_unet(cfg), encoder, cfg.conditioning)


# --- checkpoints --------------------------------------------------------------------------------


def _weight_files(ckpt_dir: Path) -> list[Path]:
    """Weight files of the UNet and the caption encoder, sorted by relative path."""
    found = []
    for sub in (UNET_SUBDIR, TEXT_ENCODER_SUBDIR):
        folder = ckpt_dir / sub
        if folder.is_dir():
            found += [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")]
    return sorted(found, key=lambda p: p.relative_to(ckpt_dir).as_posix())


def _missing_parts(ckpt_dir: Path, require_log: bool = True) -> list[str]:
    if not ckpt_dir.is_dir():
        return [f"the folder {ckpt_dir}"]
    needed = [
        f"{UNET_SUBDIR}/config.json",
        f"{SCHEDULER_SUBDIR}/scheduler_config.json",
        f"{TEXT_ENCODER_SUBDIR}/config.json",
        f"{TEXT_ENCODER_SUBDIR}/{_ENCODER_WEIGHTS}",
        TOKENIZER_FILE,
        CONFIG_FILE,
        *([TRAIN_LOG] if require_log else []),
    ]
    missing = [name for name in needed if not (ckpt_dir / name).is_file()]
    if not any(p.parent.name == UNET_SUBDIR for p in _weight_files(ckpt_dir)):
        missing.append(f"{UNET_SUBDIR}/*.safetensors")
    return missing


def checkpoint_hash(ckpt_dir: Path) -> str:
    """Hex SHA-256 over the lines ``"<relative path> <sha256 of file>\\n"`` of every weight file
    of the UNet and the caption encoder, sorted by path (configs, tokenizer and log excluded).

    Raises:
        StageError: no weight file.
    """
    ckpt_dir = Path(ckpt_dir)
    files = _weight_files(ckpt_dir)
    if not files:
        raise StageError(f"no weight file in {ckpt_dir}/{{{UNET_SUBDIR},{TEXT_ENCODER_SUBDIR}}}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(ckpt_dir).as_posix()} {sha256_file(path)}\n".encode())
    return digest.hexdigest()


def save_checkpoint(
    model: TextConditionedUNet,
    scheduler: DDPMScheduler,
    tokenizer: WordTokenizer,
    cfg: TextUNetConfig,
    log: dict[str, Any],
    out_dir: Path,
) -> Path:
    """Write the checkpoint folder (layout in the module docstring) into a temporary sibling,
    ``train_log.json`` last, then rename it to ``out_dir`` (absent, or an empty folder)."""
    def write(tmp: Path) -> None:
        model.unet.save_pretrained(tmp / UNET_SUBDIR)
        scheduler.save_pretrained(tmp / SCHEDULER_SUBDIR)
        encoder_dir = tmp / TEXT_ENCODER_SUBDIR
        encoder_dir.mkdir()
        state = {k: v.detach().cpu().contiguous() for k, v in model.text_encoder.state_dict().items()}
        save_file(state, encoder_dir / _ENCODER_WEIGHTS)
        write_json(encoder_dir / "config.json", model.text_encoder.config_dict())
        (tmp / TOKENIZER_FILE).write_text(tokenizer.to_json(), encoding="utf-8")
        write_json(tmp / CONFIG_FILE, dataclasses.asdict(cfg))
        write_json(tmp / TRAIN_LOG, log)

    return atomic_dir(out_dir, write)


def load_checkpoint(
    ckpt_dir: Path,
) -> tuple[TextConditionedUNet, DDPMScheduler, WordTokenizer, dict[str, Any]]:
    """``(model in eval mode on the CPU, scheduler, tokenizer, the saved config as a dict)``.

    Raises:
        StageError: the folder or one of its parts is missing or unreadable.
    """
    ckpt_dir = Path(ckpt_dir)
    missing = _missing_parts(ckpt_dir, require_log=False)
    if missing:
        raise StageError(f"checkpoint {ckpt_dir} is incomplete: missing {', '.join(missing)}")
    try:
        saved = read_json(ckpt_dir / CONFIG_FILE)
        unet_class = UNet2DModel if saved["conditioning"] == "time" else UNet2DConditionModel
        unet = unet_class.from_pretrained(ckpt_dir / UNET_SUBDIR, low_cpu_mem_usage=False)
        scheduler = DDPMScheduler.from_pretrained(ckpt_dir / SCHEDULER_SUBDIR)
        encoder_dir = ckpt_dir / TEXT_ENCODER_SUBDIR
        encoder = CaptionEncoder(CaptionEncoderConfig(**read_json(encoder_dir / "config.json")))
        encoder.load_state_dict(load_file(encoder_dir / _ENCODER_WEIGHTS))
        tokenizer = WordTokenizer.from_json((ckpt_dir / TOKENIZER_FILE).read_text("utf-8"))
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, ConfigError) as exc:
        raise StageError(f"cannot load checkpoint {ckpt_dir}: {exc}") from exc
    if len(tokenizer) != encoder.config.vocab_size:
        raise StageError(f"checkpoint {ckpt_dir}: tokenizer has {len(tokenizer)} tokens, the "
                         f"caption encoder {encoder.config.vocab_size}")
    model = TextConditionedUNet(unet, encoder, saved["conditioning"])
    model.eval()
    return model, scheduler, tokenizer, saved


def _check_compatible(cfg: TextUNetConfig, saved: dict[str, Any], ckpt: Path) -> None:
    """ConfigError when ``cfg``'s architecture differs from the checkpoint's."""
    diff = []
    for name in _ARCHITECTURE:
        mine, theirs = getattr(cfg, name), saved.get(name)
        if isinstance(mine, tuple):
            theirs = tuple(theirs) if isinstance(theirs, list) else theirs
        if mine != theirs:
            diff.append(f"{name}: config {mine!r} vs checkpoint {theirs!r}")
    if diff:
        raise ConfigError(f"config does not match checkpoint {ckpt}: {', '.join(diff)}")


# --- training -----------------------------------------------------------------------------------



def train_text_round(
    images: np.ndarray,
    captions: Sequence[str] | None,
    out_dir: Path,
    cfg: TextUNetConfig,
    init_checkpoint: Path | None = None,
    progress: bool = True,
) -> Path:
    """Train the text-conditioned UNet on ``images`` and their ``captions``; save to ``out_dir``.

    Continues the model, scheduler and tokenizer of ``init_checkpoint`` when given, else builds
    them: the tokenizer from these captions, the weights from ``cfg.seed``. The loop is the
    ε-prediction DDPM objective with caption dropout: for every image of the batch,
    c ← ∅ with probability ``cfg.caption_dropout``, t ~ U{0, …, T−1}, ε ~ N(0, I),
    loss = ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t, c)‖². AdamW, linear warm-up, then a constant
    rate; batches walk through seeded permutations. Runs on ``cfg.device`` (bfloat16 autocast
    on CUDA); batches, noise and dropout are drawn from a CPU generator seeded ``cfg.seed``.
    A complete ``out_dir`` is returned untouched; otherwise the checkpoint appears atomically.

    Args:
        images: uint8 (N, H, W) or (N, H, W, 3), N ≥ 1.
        captions: N strings ("" = no caption: trains the null caption), or None (all "").
        out_dir: the checkpoint folder to create (absent or empty).
        cfg: hyperparameters.
        init_checkpoint: the previous round's checkpoint, or None.
        progress: show a progress bar.

    Raises:
        DataError: bad images or captions. ConfigError: ``cfg`` out of range, an absent device,
        or an architecture unlike ``init_checkpoint``'s. StageError: ``init_checkpoint``
        missing or incomplete, or ``out_dir`` an incomplete checkpoint.
    """
    out_dir = Path(out_dir)
    if not _missing_parts(out_dir):
        logger.info("checkpoint %s is complete; skipping training", out_dir)
        return out_dir
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise StageError(
            f"{out_dir} exists but is not a complete checkpoint; remove it to train this round"
        )
    check_images(images)
    captions = check_captions(captions, len(images))
    cfg.validate()
    device = select_device(cfg.device)
    x0_all = preprocess(images, cfg.image_size, cfg.channels)
    with torch_threads(cfg.num_threads):
        if init_checkpoint is not None:
            model, scheduler, tokenizer, saved = load_checkpoint(init_checkpoint)
            _check_compatible(cfg, saved, Path(init_checkpoint))
            init_hash: str | None = checkpoint_hash(init_checkpoint)
        else:
            tokenizer = WordTokenizer.build(captions, cfg.max_tokens, cfg.max_vocab)
            model, scheduler = build_model(cfg, tokenizer, cfg.seed), build_scheduler(cfg)
            init_hash = None
        log = _train(model, scheduler, x0_all, tokenizer(captions), cfg, device,
                     f"train {out_dir.name}", progress)
    log.update(
        n_images=len(images),
        n_captioned=sum(c.strip() != "" for c in captions),
        vocab_size=len(tokenizer),
        unknown_word_fraction=tokenizer.unknown_fraction(captions),
        image_shape_in=[int(s) for s in images.shape[1:]],
        init_checkpoint=str(init_checkpoint) if init_checkpoint is not None else None,
        init_checkpoint_hash=init_hash,
        config=dataclasses.asdict(cfg),
        versions={"torch": torch.__version__, "diffusers": diffusers.__version__},
    )
    save_checkpoint(model, scheduler, tokenizer, cfg, log, out_dir)
    logger.info("trained %s: %d steps on %d images in %.1f s on %s, final loss %s", out_dir,
                cfg.train_steps, len(images), log["seconds"], device,
                log["final_loss_mean_last_20"])
    return out_dir


def _train(
    model: TextConditionedUNet,
    scheduler: DDPMScheduler,
    x0_all: Tensor,
    ids_all: Tensor,
    cfg: TextUNetConfig,
    device: torch.device,
    desc: str,
    progress: bool,
) -> dict[str, Any]:
    """The training loop on x_0 float32 (N, C, S, S) and caption ids int64 (N, L); leaves the
    trained ``model`` on the CPU and returns the log (losses, seconds, device)."""
    seed_everything(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model.to(device).train()
    x0_all, ids_all = x0_all.to(device), ids_all.to(device)
    null = model.null_ids
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / (cfg.lr_warmup_steps + 1))
    )
    n, t_max = x0_all.shape[0], scheduler.config.num_train_timesteps
    losses: list[float] = []
    order = torch.empty(0, dtype=torch.long)
    started = time.perf_counter()
    bar = tqdm(range(cfg.train_steps), desc=desc, disable=not progress)
    for _ in bar:
        while len(order) < cfg.batch_size:
            order = torch.cat([order, torch.randperm(n, generator=generator)])
        index, order = order[: cfg.batch_size].to(device), order[cfg.batch_size :]
        clean, ids = x0_all[index], ids_all[index]
        # Caption dropout: these images train the null caption (classifier-free guidance).
        drop = (torch.rand(len(index), generator=generator) < cfg.caption_dropout).to(device)
        ids = torch.where(drop.unsqueeze(1), null, ids)
        noise = torch.randn(clean.shape, generator=generator).to(device)
        timesteps = torch.randint(0, t_max, (len(index),), generator=generator).to(device)
        noisy = scheduler.add_noise(clean, noise, timesteps)  # x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
        with autocast(device):
            noise_pred = model(noisy, timesteps, ids).sample
        loss = F.mse_loss(noise_pred.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_schedule.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    seconds = time.perf_counter() - started
    model.to("cpu").eval()
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.cpu()  # add_noise moved it to `device`
    return {
        "steps": cfg.train_steps,
        "loss": losses,
        "final_loss_mean_last_20": float(np.mean(losses[-20:])) if losses else None,
        "seconds": seconds,
        "seconds_per_step": seconds / cfg.train_steps if cfg.train_steps else None,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


# --- sampling -----------------------------------------------------------------------------------


def sample_text(
    ckpt_dir: Path,
    n_samples: int,
    cfg: TextUNetConfig,
    seed: int,
    captions: Sequence[str] | None = None,
    guidance_scale: float | None = None,
) -> np.ndarray:
    """``n_samples`` images from the checkpoint, conditioned on ``captions`` with classifier-free
    guidance: float32 (M, C, S, S) in [−1, 1].

    x_T ~ N(0, I); each of ``cfg.num_inference_steps`` steps of ``cfg.sampler`` uses
    ε̂ = ε(x_t, ∅) + w · (ε(x_t, c) − ε(x_t, ∅)), the conditional and unconditional passes in one
    batch (one pass where w = 1, w = 0 or every caption of the batch is null). Batches of
    ``cfg.sample_batch_size``; noise from one CPU generator seeded ``seed``; the model on
    ``cfg.device``.

    Args:
        ckpt_dir: a checkpoint of :func:`train_text_round`.
        n_samples: M ≥ 1.
        cfg: ``image_size`` (must be the checkpoint's), sampler, steps, batch size, device,
            threads, and the default guidance scale.
        seed: seed of all noise.
        captions: M strings (words outside the checkpoint's vocabulary are ``<unk>``), or None
            (M null captions: unconditional samples).
        guidance_scale: w ≥ 0; None: ``cfg.guidance_scale``.

    Raises:
        ConfigError: M < 1, ``len(captions) != M``, w < 0, another image size, an absent device.
        DataError: a caption that is not a string.
        StageError: a missing or incomplete checkpoint.
    """
    if n_samples < 1:
        raise ConfigError(f"n_samples must be >= 1, got {n_samples}")
    if captions is not None and not isinstance(captions, str) and len(captions) != n_samples:
        raise ConfigError(f"{len(captions)} captions for {n_samples} samples")
    captions = check_captions(captions, n_samples)
    w = cfg.guidance_scale if guidance_scale is None else float(guidance_scale)
    if not w >= 0.0:
        raise ConfigError(f"guidance_scale must be >= 0, got {guidance_scale}")
    device = select_device(cfg.device)
    model, scheduler, tokenizer, saved = load_checkpoint(ckpt_dir)
    if saved["image_size"] != cfg.image_size:
        raise ConfigError(f"image_size={cfg.image_size} but checkpoint {ckpt_dir} was trained "
                          f"at {saved['image_size']}")
    sampler_class = DDIMScheduler if cfg.sampler == "ddim" else DDPMScheduler
    sampler = sampler_class.from_config(scheduler.config)
    sampler.set_timesteps(cfg.num_inference_steps)
    ids_all = tokenizer(captions)
    generator = torch.Generator().manual_seed(seed)
    shape = (saved["channels"], saved["image_size"], saved["image_size"])
    batches = []
    with torch.no_grad(), torch_threads(cfg.num_threads):
        model.to(device)
        for start in range(0, n_samples, cfg.sample_batch_size):
            ids = ids_all[start : start + cfg.sample_batch_size].to(device)
            x = torch.randn((len(ids), *shape), generator=generator).to(device)
            for t in sampler.timesteps:
                eps = guided_noise(model, x, t, ids, w)
                x = sampler.step(eps, t, x, generator=generator).prev_sample
            batches.append(x.cpu())
    return torch.cat(batches).clamp_(-1.0, 1.0).numpy().astype(np.float32, copy=False)



# --- the backend --------------------------------------------------------------------------------


class TextUNetBackend:
    """The text-conditioned UNet as a :class:`~offchain.diffusion.backend.ModelBackend`.

    Args:
        config: hyperparameters; their ``seed`` is replaced by each call's. None: defaults.
    """

    name = "text-unet"
    conditional = True

    def __init__(self, config: TextUNetConfig | None = None) -> None:
        self.config = config if config is not None else TextUNetConfig()
        self.config.validate()

    @classmethod
    def from_settings(cls, settings: Any) -> TextUNetBackend:
        """Reads ``image_size``, ``train_steps``, ``device``, ``guidance_scale`` and
        ``train_batch_size`` (the last three with :class:`TextUNetConfig`'s defaults where the
        settings lack them or give None)."""
        return cls(
            TextUNetConfig(
                image_size=settings.image_size,
                train_steps=settings.train_steps,
                device=getattr(settings, "device", TextUNetConfig.device),
                guidance_scale=getattr(settings, "guidance_scale", TextUNetConfig.guidance_scale),
                batch_size=getattr(settings, "train_batch_size", None) or TextUNetConfig.batch_size,
            )
        )

    def build(self, seed: int, captions: Sequence[str] = ()) -> DenoisingModel:
        """A fresh model from ``seed``, its tokenizer built from ``captions`` (none: only the
        special tokens), in training mode on the CPU."""
        tokenizer = WordTokenizer.build(captions, self.config.max_tokens, self.config.max_vocab)
        model = build_model(self.config, tokenizer, seed)
        return DenoisingModel(model, build_scheduler(self.config), encode_captions=tokenizer)

    def load(self, ckpt_dir: Path) -> DenoisingModel:
        """The checkpoint's model (eval mode, CPU), scheduler and tokenizer
        (``encode_captions``); StageError when incomplete."""
        model, scheduler, tokenizer, _ = load_checkpoint(ckpt_dir)
        return DenoisingModel(model, scheduler, encode_captions=tokenizer)

    def save(self, model: DenoisingModel, ckpt_dir: Path, log: dict[str, Any]) -> Path:
        """The checkpoint folder, written atomically (``model`` from :meth:`build` or
        :meth:`load`)."""
        if not isinstance(model.encode_captions, WordTokenizer):
            raise ConfigError("a text-unet model carries its WordTokenizer as encode_captions")
        return save_checkpoint(model.unet, model.scheduler, model.encode_captions, self.config,
                               log, Path(ckpt_dir))

    def is_complete(self, ckpt_dir: Path) -> bool:
        return not _missing_parts(Path(ckpt_dir))

    def checkpoint_hash(self, ckpt_dir: Path) -> str:
        """SHA-256 over the UNet's and the caption encoder's weight files."""
        return checkpoint_hash(ckpt_dir)

    def preprocess(self, images: np.ndarray) -> Tensor:
        """float32 (N, C, S, S) in [−1, 1] (gray images replicated into RGB)."""
        return preprocess(images, self.config.image_size, self.config.channels)

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
        """:func:`train_text_round` with the config seeded by ``seed``."""
        cfg = dataclasses.replace(self.config, seed=seed)
        return train_text_round(images, captions, out_dir, cfg, init_checkpoint, progress)

    def sample(
        self,
        ckpt_dir: Path,
        n_samples: int,
        *,
        seed: int,
        captions: Sequence[str] | None = None,
        guidance_scale: float | None = None,
    ) -> np.ndarray:
        """:func:`sample_text`: float32 (M, C, S, S) in [−1, 1]."""
        return sample_text(ckpt_dir, n_samples, self.config, seed, captions, guidance_scale)

    def trainable_parameters(self, model: DenoisingModel) -> Iterator[tuple[str, Any]]:
        """The UNet's (``unet.*``) and the caption encoder's (``text_encoder.*``) parameters."""
        return model.unet.named_parameters()
