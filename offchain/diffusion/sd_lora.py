"""The ``sd-lora`` model backend: a local Stable Diffusion 1.x/2.x or SDXL folder fine-tuned
with LoRA.

The operator names a diffusers Stable Diffusion folder on disk (``model_path``: the
``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/`` and ``scheduler/``
that ``StableDiffusionPipeline.save_pretrained`` writes, plus ``text_encoder_2/`` and
``tokenizer_2/`` for ``StableDiffusionXLPipeline``); nothing is fetched from a hub. Each round
adds (or continues) rank-r LoRA adapters (peft) on the UNet's attention projections (defaults as
the paper: rank 4, α 4, ``to_q, to_k, to_v, to_out.0``) and trains only them on the holders'
captioned images: images → VAE latents (the posterior mean × ``scaling_factor``, cached per image
hash in a run-level folder), captions → the frozen CLIP text encoder(s) (SDXL's added
conditioning is computed in :mod:`offchain.diffusion.sd_base`), the ε-prediction DDPM loss in
latent space with caption dropout (classifier-free guidance). The text encoders, the VAE and the
UNet's own weights stay frozen. bfloat16 autocast on CUDA, float32 on the CPU; seeded. Folders
predicting v (SD 2.x 768-v) are refused.

Training is data-parallel under ``accelerate launch`` (:mod:`offchain.rounds.distributed`) and
resumable: every ``checkpoint_every`` steps the training state goes to ``<out_dir>.partial/``,
and a rerun after a kill continues from it (bit-identical to an uninterrupted run on the same
device and thread count).

A checkpoint is a folder holding only the adapter::

    <ckpt_dir>/adapter_model.safetensors   peft's get_peft_model_state_dict of the UNet
    <ckpt_dir>/sd_lora.json                the SDLoraConfig that trained it (with model_path)
    <ckpt_dir>/train_log.json              written last: a complete folder is a finished round

The loaded :class:`DenoisingModel`'s ``unet`` works in latent space (4 × S/8 × S/8 for SD);
:meth:`SDLoraBackend.preprocess` returns pixels in [−1, 1] as the protocol asks, and the model's
``encode_images`` (:func:`encode_latents`) maps them to the latents the stages attribute.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from offchain.diffusion.backend import DenoisingModel
from offchain.diffusion.device import autocast, select_device
from offchain.diffusion.guidance import check_captions, guided_noise
from offchain.diffusion.model import TRAIN_LOG, check_images, preprocess, torch_threads
from offchain.diffusion.sd_base import (
    SDLoraUNet,
    build_model,
    cached_latents,
    encode_latents,
    load_base,
    lora_parameters,
    missing_model_parts,
)
from offchain.errors import ConfigError, StageError
from offchain.faults import fault_point
from offchain.utils import (
    atomic_dir,
    read_json,
    seed_everything,
    sha256_file,
    write_json,
)

__all__ = [
    "ADAPTER_FILE",
    "CONFIG_FILE",
    "SDLoraBackend",
    "SDLoraConfig",
    "SDLoraUNet",
    "encode_latents",
    "load_base",
    "missing_model_parts",
]

logger = logging.getLogger(__name__)

ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "sd_lora.json"
_ADAPTER_SHAPE = ("lora_rank", "lora_alpha", "target_modules")


@dataclass(frozen=True)
class SDLoraConfig:
    """Where the base model is, the LoRA adapters, training and sampling."""

    model_path: str | None = None
    """The local diffusers Stable Diffusion folder (required to train; a checkpoint records
    it)."""
    resolution: int = 256
    """Side S in pixels of training images and samples; divisible by the VAE's downscale (8)."""
    lora_rank: int = 4
    """r of every adapter."""
    lora_alpha: float = 4.0
    """α: the adapter's update is scaled by α / r."""
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    """UNet module names that get adapters (peft's ``target_modules``)."""
    learning_rate: float = 1e-4
    """AdamW learning rate of the adapters (constant)."""
    train_steps: int = 100
    """Optimizer steps per round."""
    batch_size: int = 4
    """Images per training step."""
    caption_dropout: float = 0.1
    """Probability that training replaces a caption by "" (trains ε(x_t, ∅) for guidance)."""
    guidance_scale: float = 7.5
    """w of classifier-free guidance when sampling."""
    num_inference_steps: int = 25
    """Denoising steps when sampling (the folder's scheduler class)."""
    sample_batch_size: int = 4
    """Images per sampling batch (each doubled for guidance)."""
    latent_cache_dir: str | None = None
    """Folder of cached VAE latents (one file per image hash, per VAE and resolution); None:
    ``<out_dir's parent>/.sd-latent-cache``. Give a run-level folder to share it across rounds."""
    num_threads: int | None = None
    """torch intra-op threads while training and sampling; None keeps torch's."""
    device: str = "auto"
    """``auto`` | ``cpu`` | ``cuda`` (:func:`~offchain.diffusion.device.select_device`)."""
    seed: int = 0
    """Seed of the adapters' initialisation, batches, timesteps, noise and caption dropout."""
    checkpoint_every: int = 25
    """Steps between writes of the resumable training state (``<out_dir>.partial``); 0: none."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first out-of-range field."""
        for name in ("resolution", "lora_rank", "batch_size", "num_inference_steps",
                     "sample_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.resolution % 8:
            raise ConfigError(f"resolution must be a multiple of 8, got {self.resolution}")
        if self.train_steps < 0 or not self.lora_alpha > 0 or not self.learning_rate > 0:
            raise ConfigError("train_steps must be >= 0, lora_alpha and learning_rate > 0")
        if not self.target_modules:
            raise ConfigError("target_modules must name at least one module")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ConfigError(f"caption_dropout must lie in [0, 1), got {self.caption_dropout}")
        if not self.guidance_scale >= 0.0:
            raise ConfigError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1 or None, got {self.num_threads}")


def _lora_config(cfg: SDLoraConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                      target_modules=list(cfg.target_modules), init_lora_weights=True)


# --- checkpoints --------------------------------------------------------------------------------


def _missing_checkpoint(ckpt_dir: Path, require_log: bool = True) -> list[str]:
    if not ckpt_dir.is_dir():
        return [f"the folder {ckpt_dir}"]
    needed = [ADAPTER_FILE, CONFIG_FILE, *([TRAIN_LOG] if require_log else [])]
    return [name for name in needed if not (ckpt_dir / name).is_file()]


def checkpoint_hash(ckpt_dir: Path) -> str:
    """Hex SHA-256 of the adapter file (the base model is named by the config, not hashed).

    Raises:
        StageError: no adapter file.
    """
    path = Path(ckpt_dir) / ADAPTER_FILE
    if not path.is_file():
        raise StageError(f"no adapter weights {path}")
    return sha256_file(path)


def save_checkpoint(model: DenoisingModel, cfg: SDLoraConfig, log: dict[str, Any],
                    out_dir: Path) -> Path:
    """Write the adapter, the config and ``log`` (last) into a temporary sibling, then rename
    it to ``out_dir`` (absent, or an empty folder); returns ``out_dir``."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        state = get_peft_model_state_dict(model.unet.unet)
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, tmp / ADAPTER_FILE)
        write_json(tmp / CONFIG_FILE, dataclasses.asdict(cfg))
        write_json(tmp / TRAIN_LOG, log)

    return atomic_dir(out_dir, write)


def load_checkpoint(ckpt_dir: Path, model_path: str | None = None
                    ) -> tuple[DenoisingModel, Any, dict[str, Any]]:
    """``(model with the checkpoint's adapter, eval mode on the CPU; the base pipeline; the
    saved config as a dict)``. ``model_path`` overrides the base folder the checkpoint names.

    Raises:
        StageError: the checkpoint is missing, incomplete or unreadable.
        ConfigError: the base folder is missing a part.
    """
    from safetensors.torch import load_file

    ckpt_dir = Path(ckpt_dir)
    missing = _missing_checkpoint(ckpt_dir, require_log=False)
    if missing:
        raise StageError(f"checkpoint {ckpt_dir} is incomplete: missing {', '.join(missing)}")
    try:
        saved = read_json(ckpt_dir / CONFIG_FILE)
        adapter = load_file(ckpt_dir / ADAPTER_FILE)
        cfg = SDLoraConfig(**{**saved, "target_modules": tuple(saved["target_modules"])})
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
        raise StageError(f"cannot load checkpoint {ckpt_dir}: {exc}") from exc
    base = model_path or cfg.model_path
    if base is None:
        raise StageError(f"checkpoint {ckpt_dir} names no model_path")
    pipe = load_base(Path(base))
    return build_model(pipe, _lora_config(cfg), cfg.seed, adapter), pipe, saved


# --- training -----------------------------------------------------------------------------------

PARTIAL_SUFFIX = ".partial"
"""``<out_dir>.partial``: the folder of an unfinished round's training state (see
:func:`train_lora_round`)."""
_STATE_FILE = "state.pt"
_PARTIAL_IDENTITY = "identity.json"
_EXECUTION_FIELDS = ("num_threads", "device", "latent_cache_dir", "checkpoint_every")
"""SDLoraConfig fields that do not change what is trained (not part of a partial's identity)."""


def _check_compatible(cfg: SDLoraConfig, saved: dict[str, Any], ckpt: Path) -> None:
    """ConfigError when ``cfg``'s adapter shape or resolution differs from the checkpoint's."""
    diff = []
    for name in (*_ADAPTER_SHAPE, "resolution"):
        mine, theirs = getattr(cfg, name), saved.get(name)
        if isinstance(mine, tuple):
            theirs = tuple(theirs) if isinstance(theirs, list) else theirs
        if mine != theirs:
            diff.append(f"{name}: config {mine!r} vs checkpoint {theirs!r}")
    if diff:
        raise ConfigError(f"config does not match checkpoint {ckpt}: {', '.join(diff)}")


def partial_dir(out_dir: Path) -> Path:
    """The training-state folder of an unfinished ``out_dir``: ``<out_dir>.partial``."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}{PARTIAL_SUFFIX}"


def _accelerator(device: torch.device) -> Any:
    """An ``accelerate.Accelerator`` for ``device``: bf16 mixed precision on a CUDA device that
    supports it, fp32 otherwise (gloo processes on the CPU under ``accelerate launch``).

    Outside a launch (one process) the process-wide accelerate state is reset first, so rounds
    trained one after another in one process may use different devices."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if "LOCAL_RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
        AcceleratorState._reset_state(reset_partial_state=True)
    cuda = device.type == "cuda"
    precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    return Accelerator(cpu=not cuda, mixed_precision=precision)


def train_lora_round(
    images: np.ndarray,
    captions: Sequence[str] | None,
    out_dir: Path,
    cfg: SDLoraConfig,
    init_checkpoint: Path | None = None,
    progress: bool = True,
) -> Path:
    """Train the LoRA adapters on ``images`` and their ``captions``; save them to ``out_dir``.

    Continues ``init_checkpoint``'s adapter when given, else starts fresh adapters from
    ``cfg.seed`` on the base folder ``cfg.model_path``. Loss: for each image of the batch,
    c ← "" with probability ``cfg.caption_dropout``, t ~ U{0, …, T−1}, ε ~ N(0, I),
    ‖ε − ε_θ(√ᾱ_t z_0 + √(1−ᾱ_t) ε, t, c)‖² with z_0 the image's cached VAE latent. AdamW over
    the adapters only; batches, noise, timesteps and dropout from a CPU generator seeded
    ``cfg.seed``; the loop runs under ``accelerate`` (bf16 autocast on CUDA, fp32 on the CPU).
    A complete ``out_dir`` is returned untouched.

    Data-parallel: under ``accelerate launch --num_processes N`` every process draws the same
    global batch of ``cfg.batch_size`` (B, divisible by N) and trains on its B/N slice; the
    gradients are averaged across processes (DDP), so each step is the step of one process on
    the global batch (equal up to floating-point summation order). Only the main process
    writes files.

    Resumable: every ``cfg.checkpoint_every`` steps the main process writes the training state
    (the adapter, AdamW's state, the generator's state, the remaining batch order, the step and
    the losses) to ``<out_dir>.partial/step-<k>/`` (atomically, replacing the previous one). A
    rerun after a kill resumes from it — the finished adapter is bit-identical to an
    uninterrupted run's on the same device and thread count — provided it is of the same
    request (the config's training fields, the images' latents, the captions and the initial
    adapter); the folder is removed once ``out_dir`` is complete.

    Args:
        images: uint8 (N, H, W) or (N, H, W, 3), N ≥ 1 (resized to ``cfg.resolution``, RGB).
        captions: N strings ("" trains the empty caption), or None (all "").
        out_dir: the checkpoint folder to create (absent or empty).
        cfg: settings; ``model_path`` is required.
        init_checkpoint: the previous round's checkpoint, or None.
        progress: show a progress bar (main process only).

    Raises:
        DataError: bad images or captions. ConfigError: no ``model_path``, a base folder missing
        a part, an absent device, an adapter unlike ``init_checkpoint``'s, or a batch size not
        divisible by the number of processes. StageError: ``init_checkpoint`` missing or
        incomplete, ``out_dir`` an incomplete checkpoint, or ``<out_dir>.partial`` the state of
        a different request (remove it to start over).
    """
    out_dir = Path(out_dir)
    if not _missing_checkpoint(out_dir):
        logger.info("checkpoint %s is complete; skipping training", out_dir)
        shutil.rmtree(partial_dir(out_dir), ignore_errors=True)  # killed before removing it
        return out_dir
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise StageError(f"{out_dir} exists but is not a complete checkpoint; remove it to "
                         "train this round")
    check_images(images)
    captions = check_captions(captions, len(images))
    cfg.validate()
    if cfg.model_path is None:
        raise ConfigError("sd-lora needs the setting model_path (a local diffusers Stable "
                          "Diffusion folder)")
    accelerator = _accelerator(select_device(cfg.device))
    if cfg.batch_size % accelerator.num_processes:
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the "
                          f"{accelerator.num_processes} processes")
    with torch_threads(cfg.num_threads):
        model, pipe, init_hash = _start_model(cfg, init_checkpoint)
        cache = Path(cfg.latent_cache_dir or out_dir.parent / ".sd-latent-cache")
        with accelerator.main_process_first():  # the main process fills the cache
            latents, hits = cached_latents(pipe.vae, images, cfg.resolution, cache,
                                           accelerator.device)
        ids_all = model.encode_captions(captions)
        run = _TrainRun(accelerator, partial_dir(out_dir),
                        _partial_identity(cfg, latents, ids_all, init_hash))
        log = _train(model, latents, ids_all, cfg, run, f"train {out_dir.name}",
                     progress and accelerator.is_main_process)
    log.update(
        n_images=len(images),
        n_captioned=sum(c.strip() != "" for c in captions),
        latent_cache=str(cache),
        latent_cache_hits=hits,
        trainable_parameters=sum(p.numel() for _, p in lora_parameters(model.unet)),
        init_checkpoint=str(init_checkpoint) if init_checkpoint is not None else None,
        init_checkpoint_hash=init_hash,
        config=dataclasses.asdict(cfg),
    )
    if accelerator.is_main_process:
        save_checkpoint(model, cfg, log, out_dir)
        shutil.rmtree(run.partial, ignore_errors=True)
        logger.info("trained %s: %d LoRA steps on %d images in %.1f s on %s (%d processes)",
                    out_dir, cfg.train_steps, len(images), log["seconds"], log["device"],
                    accelerator.num_processes)
    accelerator.wait_for_everyone()
    return out_dir


def _start_model(cfg: SDLoraConfig, init_checkpoint: Path | None
                 ) -> tuple[DenoisingModel, Any, str | None]:
    """``(the model to train, its base pipeline, the initial adapter's hash or None)``:
    ``init_checkpoint``'s adapter (checked compatible with ``cfg``) or fresh adapters."""
    if init_checkpoint is None:
        pipe = load_base(Path(cfg.model_path))
        return build_model(pipe, _lora_config(cfg), cfg.seed), pipe, None
    model, pipe, saved = load_checkpoint(init_checkpoint, cfg.model_path)
    _check_compatible(cfg, saved, Path(init_checkpoint))
    return model, pipe, checkpoint_hash(init_checkpoint)


def _partial_identity(cfg: SDLoraConfig, latents: Tensor, ids_all: Tensor,
                      init_hash: str | None) -> dict[str, Any]:
    """What a training state is of: the config's training fields, SHA-256 of the latents
    float32 (N, 4, s, s) and of the caption ids int64 (N, L), and the initial adapter's hash."""
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _EXECUTION_FIELDS}
    return json.loads(json.dumps({
        "config": fields,
        "latents_sha256": hashlib.sha256(latents.contiguous().numpy().tobytes()).hexdigest(),
        "caption_ids_sha256": hashlib.sha256(ids_all.contiguous().numpy().tobytes()).hexdigest(),
        "init_checkpoint_hash": init_hash,
    }))


def _flat(identity: dict[str, Any]) -> dict[str, Any]:
    """An identity with its ``config`` fields lifted to the top level (for error messages)."""
    return {**{k: v for k, v in identity.items() if k != "config"},
            **identity.get("config", {})}


@dataclass
class _TrainRun:
    """The accelerator of a training run, its partial-state folder and the request's identity."""

    accelerator: Any
    partial: Path
    identity: dict[str, Any]

    def latest(self) -> Path | None:
        """The newest complete ``step-<k>`` folder of the partial state, or None.

        Raises:
            StageError: the state is of a different request."""
        steps = sorted(p for p in self.partial.glob("step-*") if p.is_dir()) \
            if self.partial.is_dir() else []
        if not steps:
            return None
        saved = read_json(steps[-1] / _PARTIAL_IDENTITY)
        if saved != self.identity:
            flat = [_flat(saved), _flat(self.identity)]
            differs = sorted(k for k in set(flat[0]) | set(flat[1])
                             if flat[0].get(k) != flat[1].get(k))
            raise StageError(f"training state {self.partial} is of a different request "
                             f"(differs in {differs}); remove it to train from the start")
        return steps[-1]

    def save(self, net: SDLoraUNet, optimizer: Any, state: dict[str, Any]) -> None:
        """Main process: write ``step-<k>`` atomically and drop the older ones; all wait."""
        from safetensors.torch import save_file

        if self.accelerator.is_main_process:
            step_dir = self.partial / f"step-{state['step']:08d}"

            def write(tmp: Path) -> None:
                save_file({n: p.detach().cpu().contiguous() for n, p in lora_parameters(net)},
                          tmp / ADAPTER_FILE)
                torch.save({**state, "optimizer": optimizer.state_dict()}, tmp / _STATE_FILE)
                write_json(tmp / _PARTIAL_IDENTITY, self.identity)

            atomic_dir(step_dir, write)
            for old in self.partial.glob("step-*"):
                if old != step_dir:
                    shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def restore(self, net: SDLoraUNet, optimizer: Any) -> dict[str, Any] | None:
        """Load the newest state into ``net``'s adapters and ``optimizer``; its ``step``,
        ``order``, ``generator`` and ``loss`` (None: no state, start from step 0)."""
        from safetensors.torch import load_file

        step_dir = self.latest()
        if step_dir is None:
            return None
        adapter = load_file(step_dir / ADAPTER_FILE)
        with torch.no_grad():
            for name, param in lora_parameters(net):
                param.copy_(adapter[name])
        state = torch.load(step_dir / _STATE_FILE, weights_only=True)
        optimizer.load_state_dict(state.pop("optimizer"))
        logger.info("resuming training from %s (step %d)", step_dir, state["step"])
        return state


def _train(model: DenoisingModel, latents: Tensor, ids_all: Tensor, cfg: SDLoraConfig,
           run: _TrainRun, desc: str, progress: bool) -> dict[str, Any]:
    """The loop on latents float32 (N, 4, s, s) and caption ids int64 (N, L), this process's
    slice of each global batch on ``run.accelerator.device``; leaves the model on the CPU in
    eval mode and returns the log (losses of the global batch, seconds, device)."""
    accelerator = run.accelerator
    rank, world = accelerator.process_index, accelerator.num_processes
    seed_everything(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    net, scheduler = model.unet, model.scheduler
    net.train()
    optimizer = torch.optim.AdamW([p for _, p in lora_parameters(net)], lr=cfg.learning_rate)
    losses: list[float] = []
    order = torch.empty(0, dtype=torch.long)
    start_step = 0
    state = run.restore(net, optimizer)
    if state is not None:
        generator.set_state(state["generator"])
        order, losses, start_step = state["order"], list(state["loss"]), int(state["step"])
    ddp_net, ddp_optimizer = accelerator.prepare(net, optimizer)
    device = accelerator.device
    latents, ids_all = latents.to(device), ids_all.to(device)
    n, t_max = latents.shape[0], scheduler.config.num_train_timesteps
    share = slice(rank * cfg.batch_size // world, (rank + 1) * cfg.batch_size // world)
    started = time.perf_counter()
    bar = tqdm(range(start_step, cfg.train_steps), desc=desc, disable=not progress,
               initial=start_step, total=cfg.train_steps)
    for step in bar:
        while len(order) < cfg.batch_size:
            order = torch.cat([order, torch.randperm(n, generator=generator)])
        index, order = order[: cfg.batch_size], order[cfg.batch_size :]
        drop = torch.rand(len(index), generator=generator) < cfg.caption_dropout
        noise = torch.randn((len(index), *latents.shape[1:]), generator=generator)
        timesteps = torch.randint(0, t_max, (len(index),), generator=generator)
        index, drop = index[share].to(device), drop[share].to(device)
        noise, timesteps = noise[share].to(device), timesteps[share].to(device)
        clean = latents[index]
        ids = torch.where(drop.unsqueeze(1), net.null_ids, ids_all[index])
        noisy = scheduler.add_noise(clean, noise, timesteps)
        with accelerator.autocast():
            noise_pred = ddp_net(noisy, timesteps, ids).sample
        loss = F.mse_loss(noise_pred.float(), noise)
        ddp_optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        ddp_optimizer.step()
        losses.append(float(accelerator.reduce(loss.detach(), reduction="mean")))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        done = step + 1
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.train_steps:
            run.save(net, optimizer, {"step": done, "order": order,
                                      "generator": generator.get_state(), "loss": losses})
        fault_point(f"sd-lora:step:{done}")
    seconds = time.perf_counter() - started
    accelerator.free_memory()
    net.to("cpu").eval()
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.cpu()
    return {
        "steps": cfg.train_steps,
        "loss": losses,
        "final_loss_mean_last_20": float(np.mean(losses[-20:])) if losses else None,
        "seconds": seconds,
        "resumed_from_step": start_step,
        "device": str(device),
        "num_processes": world,
        "threads": torch.get_num_threads(),
    }


# --- sampling -----------------------------------------------------------------------------------


def sample_lora(ckpt_dir: Path, n_samples: int, cfg: SDLoraConfig, seed: int,
                captions: Sequence[str] | None = None,
                guidance_scale: float | None = None) -> np.ndarray:
    """``n_samples`` images from the base model with the checkpoint's adapter, conditioned on
    ``captions`` with classifier-free guidance: float32 (M, 3, S, S) in [−1, 1], S the
    checkpoint's resolution.

    z_T ~ N(0, σ_init² I) in latent space; ``cfg.num_inference_steps`` steps of the folder's
    scheduler class with ε̂ = ε(z_t, ∅) + w · (ε(z_t, c) − ε(z_t, ∅)) (one batch for both);
    then the VAE decodes z_0 / ``scaling_factor``. Noise from one CPU generator seeded ``seed``.

    Raises:
        ConfigError: M < 1, ``len(captions) != M``, w < 0, a base folder missing a part.
        DataError: a caption that is not a string. StageError: a missing or incomplete
        checkpoint.
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
    with torch.no_grad(), torch_threads(cfg.num_threads):
        model, pipe, saved = load_checkpoint(ckpt_dir, cfg.model_path)
        sampler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        side = saved["resolution"] // pipe.vae_scale_factor
        shape = (pipe.unet.config.in_channels, side, side)
        ids_all = model.encode_captions(captions)
        generator = torch.Generator().manual_seed(seed)
        net = model.unet.to(device)
        pipe.vae.to(device)
        batches = []
        for start in range(0, n_samples, cfg.sample_batch_size):
            ids = ids_all[start : start + cfg.sample_batch_size].to(device)
            sampler.set_timesteps(cfg.num_inference_steps)
            z = torch.randn((len(ids), *shape), generator=generator) * sampler.init_noise_sigma
            z = z.to(device)
            for t in sampler.timesteps:
                eps = guided_noise(net, sampler.scale_model_input(z, t), t, ids, w)
                z = sampler.step(eps, t, z, generator=generator).prev_sample
            with autocast(device):
                x = pipe.vae.decode(z / float(pipe.vae.config.scaling_factor)).sample
            batches.append(x.float().cpu())
    return torch.cat(batches).clamp_(-1.0, 1.0).numpy().astype(np.float32, copy=False)



# --- the backend --------------------------------------------------------------------------------


class SDLoraBackend:
    """Stable Diffusion with LoRA as a :class:`~offchain.diffusion.backend.ModelBackend`.

    Args:
        config: settings; their ``seed`` is replaced by each call's. ``model_path`` is required
            to build or train (a checkpoint records its own).
    """

    name = "sd-lora"
    conditional = True
    data_parallel = True
    """:meth:`train_round` runs data-parallel under ``accelerate launch`` (each process a slice
    of every global batch, only the main process writing)."""

    def __init__(self, config: SDLoraConfig | None = None) -> None:
        self.config = config if config is not None else SDLoraConfig()
        self.config.validate()

    @classmethod
    def from_settings(cls, settings: Any) -> SDLoraBackend:
        """Reads ``model_path`` (required: ConfigError naming it when absent or None, or naming
        the parts its folder lacks), ``image_size`` (the resolution), ``train_steps``,
        ``device``, ``guidance_scale``, ``train_batch_size``, ``lora_rank``, ``lora_alpha``,
        ``lora_target_modules`` and ``cache_dir`` (latents go to ``<cache_dir>/sd-latents``;
        the others with :class:`SDLoraConfig`'s defaults where absent or None). ConfigError
        when ``num_processes`` (the data-parallel processes) does not divide the batch."""
        model_path = getattr(settings, "model_path", None)
        if model_path is None:
            raise ConfigError("the sd-lora backend needs the setting model_path (a local "
                              "diffusers Stable Diffusion folder)")
        missing = missing_model_parts(Path(model_path))
        if missing:
            raise ConfigError(f"model_path {model_path} is not a diffusers Stable Diffusion "
                              f"folder: missing {', '.join(missing)}")
        batch_size = getattr(settings, "train_batch_size", None) or SDLoraConfig.batch_size
        processes = getattr(settings, "num_processes", 1)
        if batch_size % processes:
            raise ConfigError(f"the training batch ({batch_size} images, train_batch_size) must "
                              f"divide by num_processes ({processes}): each process trains on "
                              "an equal slice of it")
        return cls(SDLoraConfig(
            model_path=str(model_path),
            resolution=getattr(settings, "image_size", SDLoraConfig.resolution),
            train_steps=getattr(settings, "train_steps", SDLoraConfig.train_steps),
            device=getattr(settings, "device", SDLoraConfig.device),
            guidance_scale=getattr(settings, "guidance_scale", SDLoraConfig.guidance_scale),
            batch_size=batch_size,
            lora_rank=getattr(settings, "lora_rank", SDLoraConfig.lora_rank),
            lora_alpha=getattr(settings, "lora_alpha", SDLoraConfig.lora_alpha),
            target_modules=tuple(getattr(settings, "lora_target_modules",
                                         SDLoraConfig.target_modules)),
            latent_cache_dir=(None if getattr(settings, "cache_dir", None) is None
                              else str(Path(settings.cache_dir) / "sd-latents")),
        ))

    def _base_path(self) -> Path:
        if self.config.model_path is None:
            raise ConfigError("the sd-lora backend needs the setting model_path")
        return Path(self.config.model_path)

    def build(self, seed: int) -> DenoisingModel:
        """The base model with fresh adapters from ``seed`` (eval mode, CPU)."""
        return build_model(load_base(self._base_path()), _lora_config(self.config), seed)

    def load(self, ckpt_dir: Path) -> DenoisingModel:
        """The base model with the checkpoint's adapter (eval mode, CPU); ``unet`` is a
        :class:`SDLoraUNet` over latents, ``encode_captions`` the CLIP tokenizer(s). StageError when
        the checkpoint is incomplete, ConfigError when the base folder is."""
        return load_checkpoint(ckpt_dir, self.config.model_path)[0]

    def save(self, model: DenoisingModel, ckpt_dir: Path, log: dict[str, Any]) -> Path:
        """The adapter, the config and ``log``, written atomically (``model`` from :meth:`build`
        or :meth:`load`)."""
        if not isinstance(model.unet, SDLoraUNet):
            raise ConfigError("an sd-lora model's unet is an SDLoraUNet")
        return save_checkpoint(model, self.config, log, Path(ckpt_dir))

    def is_complete(self, ckpt_dir: Path) -> bool:
        return not _missing_checkpoint(Path(ckpt_dir))

    def checkpoint_hash(self, ckpt_dir: Path) -> str:
        """SHA-256 of the adapter file."""
        return checkpoint_hash(ckpt_dir)

    def preprocess(self, images: np.ndarray) -> Tensor:
        """Pixels float32 (N, 3, S, S) in [−1, 1], S the resolution (gray replicated); the
        model's x_0 are their VAE latents (:func:`encode_latents`)."""
        return preprocess(images, self.config.resolution, 3)

    def train_round(self, images: np.ndarray, out_dir: Path, *, seed: int,
                    init_checkpoint: Path | None = None, progress: bool = True,
                    captions: Sequence[str] | None = None) -> Path:
        """:func:`train_lora_round` with the config seeded by ``seed``."""
        cfg = dataclasses.replace(self.config, seed=seed)
        return train_lora_round(images, captions, out_dir, cfg, init_checkpoint, progress)

    def sample(self, ckpt_dir: Path, n_samples: int, *, seed: int,
               captions: Sequence[str] | None = None,
               guidance_scale: float | None = None) -> np.ndarray:
        """:func:`sample_lora`: float32 (M, 3, S, S) in [−1, 1]."""
        return sample_lora(ckpt_dir, n_samples, self.config, seed, captions, guidance_scale)

    def trainable_parameters(self, model: DenoisingModel) -> Iterator[tuple[str, Any]]:
        """The LoRA parameters only (names containing ``lora_``)."""
        return lora_parameters(model.unet)
