#!/usr/bin/env python3
"""GPU figures of the sd-lora backend on a full-size Stable Diffusion 1.5 architecture (issue 16 §5).

One unattended run (a few minutes on one H200) that:

1. builds a Stable Diffusion 1.5 architecture with random weights in memory (no download):
   ``UNet2DConditionModel`` with SD 1.5's configuration (block_out_channels (320, 640, 1280,
   1280), cross_attention_dim 768, attention_head_dim 8, sample_size 64: 860 M parameters),
   SD's ``AutoencoderKL`` (128, 256, 512, 512), the ViT-L/14 ``CLIPTextModel`` (width 768, 12
   layers, vocabulary 49,408, 77 positions) with a ``CLIPTokenizer`` over the test fixture's
   small vocabulary (the weights are random, so the vocabulary does not matter), and a
   ``PNDMScheduler`` as SD 1.5 ships; saves it with ``StableDiffusionPipeline.save_pretrained``
   and loads that folder through the project's ``model_path`` (``SDLoraBackend``);
2. (a) ``project``: training images/s of ``SDLoraBackend.train_round`` (LoRA rank 4, α 4 on
   ``to_q, to_k, to_v, to_out.0``, 512 px, bf16 autocast) at batch 1, 4 and 8: one round of
   W + S steps per batch size, timed from the end of optimizer step W to the end of step W + S
   (torch's global optimizer step hook, after a device sync), so model loading, latent encoding
   and the warm-up steps are left out;
3. (b) ``reference``: the same step without the project's code: diffusers' UNet and CLIP text
   encoder loaded from the folder, ``unet.add_adapter`` (peft ``LoraConfig``), AdamW over the
   adapters, bf16 autocast, the ε-MSE loss on fixed latents, timed over S steps after W
   warm-up steps; the ratio project / reference says what the project's loop costs;
4. (c) ``featurize``: TRAK featurization examples/s of the project's
   ``GradientFeaturizer`` on the model the attribute stage builds (``attributed_model``: the
   LoRA parameters alone are differentiated; per-example ∇ of the D-TRAK output with each
   example's caption ids, K = the settings' default timesteps, projected) at proj_dim
   4,096 and 32,768, after one warm-up batch. The projector is ``select_projector``'s
   (traker's ``CudaProjector`` when ``fast_jl`` imports, else the project's
   ``MatrixProjector``, which keeps P = grad_dim × proj_dim float32 on the GPU: for SD 1.5's
   797,184 LoRA parameters 13 GB at 4,096 and 104 GB at 32,768). Before drawing P the script
   computes its memory and the activations measured at the smaller proj_dim and halves the
   featurize batch until both fit (or skips the proj_dim, saying why); it also skips a
   MatrixProjector whose CPU drawing time, extrapolated from the first, exceeds
   ``--max-draw-s``;
5. (d) peak GPU memory (``torch.cuda.max_memory_allocated``) of each measurement.

Prints a table and writes every figure as JSON to ``$OUT/gpu_sd.json`` when ``OUT`` is set
(or ``--out``). Run from the project root on a CUDA machine::

    python bench/gpu_sd.py                        # full size on the GPU (a few minutes)
    python bench/gpu_sd.py --parts train,reference --batches 1,4
    python bench/gpu_sd.py --tiny                 # the same code, tiny configs, on the CPU

Without CUDA the script runs ``--tiny`` on the CPU (it is tested that way:
``tests/test_gpu_sd_bench.py``); figures of a tiny run measure nothing about a GPU. On the
project's device image (python3 with torch, transformers, peft and accelerate, without diffusers
and traker) run ``bash bench/gpu_sd.sh`` with the two pure-Python wheels in ``.whl/``.

Checked on the CPU: ``--tiny`` (about 10 s), and the full-size SD 1.5 folder end to end at a
small side, ``python bench/gpu_sd.py --device cpu --resolution 64 --batches 1,2 --warmup 1
--steps 1 --proj-dims 8,16 --featurize-examples 2`` (62–87 s on one thread, peak RSS 5.0 GiB;
grad_dim 797,184 = the adapters; its rates time one step and mean nothing).

Measured on a GPU: nothing yet (no GPU was available where this script was written).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from offchain.cpu import configure_openmp  # noqa: E402

configure_openmp()  # before torch is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sd_fixture import clip_tokenizer  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_post_hook  # noqa: E402

from offchain.attribution.attributed_model import attributed_model, unet_inputs  # noqa: E402
from offchain.attribution.defaults import DEFAULT_TRAK_TIMESTEPS  # noqa: E402
from offchain.attribution.featurize import (  # noqa: E402
    GradientFeaturizer,
    choose_projector_kind,
    select_projector,
)
from offchain.attribution.model_output import DTrakOutput, make_noise  # noqa: E402
from offchain.attribution.trak_attributor import featurize_batch_size  # noqa: E402
from offchain.diffusion.sd_base import lora_parameters  # noqa: E402
from offchain.diffusion.sd_lora import SDLoraBackend, SDLoraConfig  # noqa: E402

TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
LORA_RANK = 4
CAPTIONS = ("a red apple on a table", "a blue whale", "portrait of a cat, oil painting",
            "city at night", "")
_GIB = 2**30


@dataclass(frozen=True)
class Arch:
    """A Stable Diffusion architecture: the component configs, caption length, resolution."""

    name: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    text: dict[str, Any]
    max_tokens: int
    resolution: int
    scheduler: dict[str, Any] = field(default_factory=lambda: {
        "num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "beta_end": 0.012, "skip_prk_steps": True, "steps_offset": 1})


SD15 = Arch(
    name="sd15",
    unet={"sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
          "block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768,
          "attention_head_dim": 8, "norm_num_groups": 32,
          "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
          "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3},
    vae={"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
         "block_out_channels": (128, 256, 512, 512), "norm_num_groups": 32, "sample_size": 512,
         "down_block_types": ("DownEncoderBlock2D",) * 4,
         "up_block_types": ("UpDecoderBlock2D",) * 4},
    text={"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072,
          "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77,
          "hidden_act": "quick_gelu", "projection_dim": 768},
    max_tokens=77,
    resolution=512,
)
TINY = Arch(  # the test fixture's shapes (tests/sd_fixture.py); the VAE keeps the image side
    name="tiny",
    unet={"sample_size": 16, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
          "block_out_channels": (32, 64), "cross_attention_dim": 32, "attention_head_dim": 4,
          "norm_num_groups": 32, "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
          "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D")},
    vae={"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
         "block_out_channels": (32,), "norm_num_groups": 32, "sample_size": 16,
         "down_block_types": ("DownEncoderBlock2D",), "up_block_types": ("UpDecoderBlock2D",)},
    text={"vocab_size": None, "hidden_size": 32, "intermediate_size": 64,
          "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 16},
    max_tokens=16,
    resolution=16,
)


# --- the model folder ---------------------------------------------------------------------------


def build_random_sd(folder: Path, arch: Arch, seed: int = 0) -> Path:
    """Write ``arch`` with random weights (seeded) as a diffusers Stable Diffusion folder."""
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    tokenizer = clip_tokenizer(folder.parent / f".{folder.name}-bpe", arch.max_tokens)
    torch.manual_seed(seed)
    text = {**arch.text, "vocab_size": arch.text["vocab_size"] or len(tokenizer)}
    text_encoder = CLIPTextModel(CLIPTextConfig(
        **text, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    pipeline = StableDiffusionPipeline(
        vae=AutoencoderKL(**arch.vae), text_encoder=text_encoder, tokenizer=tokenizer,
        unet=UNet2DConditionModel(**arch.unet), scheduler=PNDMScheduler(**arch.scheduler),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder)
    return folder


# --- measuring ----------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    """Peak GPU memory allocated since the last reset, GiB; None on the CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / _GIB


def _rss_gib() -> float:
    """This process's peak resident memory so far, GiB (Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _data(n: int, resolution: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """n random uint8 RGB images (n, S, S, 3) and n captions."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, resolution, resolution, 3), dtype=np.uint8)
    return images, [CAPTIONS[i % len(CAPTIONS)] for i in range(n)]


@contextmanager
def step_times(device: torch.device) -> Iterator[list[float]]:
    """``time.perf_counter()`` after every optimizer step taken inside the block (any
    optimizer: torch's global step post-hook; the device is synchronised first), in order."""
    times: list[float] = []

    def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
        _sync(device)
        times.append(time.perf_counter())

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield times
    finally:
        handle.remove()


def project_training(folder: Path, arch: Arch, batches: Sequence[int], warmup: int, steps: int,
                     device: torch.device, work: Path) -> tuple[list[dict[str, Any]], Path]:
    """(a): images/s of ``SDLoraBackend.train_round`` per batch size: one round of W + S steps,
    timed from the end of step W to the end of step W + S (:func:`step_times`); also the last
    checkpoint."""
    images, captions = _data(2 * max(batches), arch.resolution)
    rows, ckpt = [], work / "none"
    for batch in batches:
        cfg = SDLoraConfig(model_path=str(folder), resolution=arch.resolution,
                           lora_rank=LORA_RANK, lora_alpha=float(LORA_RANK),
                           target_modules=TARGET_MODULES, batch_size=batch,
                           train_steps=warmup + steps, device=device.type,
                           latent_cache_dir=str(work / "latents"))
        ckpt = work / f"train-b{batch}"
        _reset_peak(device)
        with step_times(device) as times:
            SDLoraBackend(cfg).train_round(images, ckpt, seed=0, progress=False,
                                           captions=captions)
        log = json.loads((ckpt / "train_log.json").read_text())
        if not np.isfinite(log["loss"]).all() or len(times) != warmup + steps:
            raise RuntimeError(f"batch {batch}: {len(times)} optimizer steps seen, losses "
                               f"{log['loss']}")
        steady = times[-1] - times[warmup - 1] if warmup else times[-1] - times[0]
        timed = steps if warmup else steps - 1
        rows.append({"batch": batch, "steps_timed": timed, "seconds": steady,
                     "images_per_s": batch * timed / steady,
                     "round_loop_seconds": float(log["seconds"]),
                     "peak_gpu_gib": _peak_gib(device), "peak_rss_gib": _rss_gib()})
    return rows, ckpt


def reference_training(folder: Path, arch: Arch, batches: Sequence[int], warmup: int,
                       steps: int, device: torch.device) -> list[dict[str, Any]]:
    """(b): the plain diffusers + peft LoRA step (no project code), images/s per batch size."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    noise_scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, init_lora_weights="gaussian",
                                target_modules=list(TARGET_MODULES)))
    unet.to(device).train()
    text_encoder.to(device)
    noise_scheduler.alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    side = arch.resolution // 2 ** (len(arch.vae["block_out_channels"]) - 1)
    rows = []
    for batch in batches:
        optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-4)
        latents = torch.randn(batch, 4, side, side, device=device) * 0.18215
        ids = tokenizer([CAPTIONS[i % len(CAPTIONS)] for i in range(batch)], padding="max_length",
                        max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(device)
        _reset_peak(device)
        for step in range(warmup + steps):
            if step == warmup:
                _sync(device)
                started = time.perf_counter()
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,),
                                      device=device)
            noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                encoder_hidden_states = text_encoder(ids)[0]
                noise_pred = unet(noisy_latents, timesteps, encoder_hidden_states).sample
            loss = F.mse_loss(noise_pred.float(), noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            float(loss.detach())  # one sync per step, as the project's loop logs its loss
        _sync(device)
        seconds = time.perf_counter() - started
        rows.append({"batch": batch, "steps_timed": steps, "seconds": seconds,
                     "images_per_s": batch * steps / seconds, "peak_gpu_gib": _peak_gib(device)})
        del optimizer
    del unet, text_encoder
    _reset_peak(device)
    return rows


def gpu_room(device: torch.device) -> float | None:
    """Bytes the featurization may still allocate: 92 % of the GPU less what is allocated; None
    on the CPU (no limit is checked there)."""
    if device.type != "cuda":
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    return 0.92 * total - torch.cuda.memory_allocated(device)


def fitting_batch(batch: int, p_bytes: int, measured: tuple[int, int] | None,
                  room: float | None) -> tuple[int, str | None]:
    """The largest featurize batch ≤ ``batch`` (halving) whose projection matrix (``p_bytes``)
    and activations (``measured`` = (bytes, at batch) from an earlier proj_dim, assumed linear
    in the batch) fit in ``room`` bytes (:func:`gpu_room`; None: no limit), and None; or
    (0, why not)."""
    if room is None:
        return batch, None
    free = room - p_bytes
    if free <= 0:
        return 0, f"P needs {p_bytes / _GIB:.1f} GiB; the GPU has {room / _GIB:.1f} GiB left"
    if measured is None:
        return batch, None
    act_bytes, act_batch = measured
    while batch > 1 and act_bytes * batch / act_batch > free:
        batch //= 2
    if act_bytes * batch / act_batch > free:
        return 0, (f"P ({p_bytes / _GIB:.1f} GiB) and one example's activations "
                   f"({act_bytes / act_batch / _GIB:.1f} GiB) exceed the GPU's "
                   f"{room / _GIB:.1f} GiB left")
    return batch, None


def _time_featurizer(fz: GradientFeaturizer, x0: torch.Tensor, noise: torch.Tensor,
                     ids: torch.Tensor, batch: int) -> float:
    """Seconds to featurize every example of ``x0`` in batches of ``batch``, after one
    untimed warm-up batch."""
    device = fz.device
    fz(x0[:batch], noise[:batch], ids[:batch])
    _sync(device)
    started = time.perf_counter()
    for start in range(0, len(x0), batch):
        stop = start + batch
        if not np.isfinite(fz(x0[start:stop], noise[start:stop], ids[start:stop])).all():
            raise RuntimeError("non-finite TRAK features")
    _sync(device)
    return time.perf_counter() - started


def featurization(model: Any, backend: SDLoraBackend, proj_dims: Sequence[int], n_examples: int,
                  device: torch.device, max_draw_s: float,
                  batch: int | None = None) -> list[dict[str, Any]]:
    """(c): examples/s of TRAK featurization over the LoRA parameters per proj_dim, timed over
    ``n_examples`` after one warm-up batch; the projector's drawing time apart. The model is
    made as the attribute stage makes it (``attributed_model``: the frozen base becomes
    buffers, so the featurizer's grad_dim is the adapter size; latents from ``unet_inputs``)."""
    lora_dim = sum(int(p.numel()) for _, p in lora_parameters(model.unet))
    model = attributed_model(backend, model)
    net = model.unet.to(device).eval()
    images, captions = _data(n_examples, backend.config.resolution, seed=1)
    with torch.no_grad():
        x0 = unet_inputs(model, backend.preprocess(images), device)
    ids = model.encode_captions(captions)
    k = DEFAULT_TRAK_TIMESTEPS
    output = DTrakOutput(model.scheduler.alphas_cumprod, k)
    noise = make_noise(range(n_examples), k, tuple(x0.shape[1:]), seed=0, stream=0)
    batch = batch or featurize_batch_size(tuple(x0.shape[1:]), k, 32)
    measured: tuple[int, int] | None = None  # activation bytes beyond P, and at which batch
    draw_rate: float | None = None  # seconds per entry of P drawn
    rows = []
    for proj_dim in proj_dims:
        kind = choose_projector_kind(device, lora_dim, 32)
        p_bytes = 4 * lora_dim * proj_dim if kind == "matrix" else 0
        row: dict[str, Any] = {"proj_dim": proj_dim, "grad_dim": lora_dim, "projector": kind,
                               "projector_gib": p_bytes / _GIB, "timesteps": k}
        rows.append(row)
        fit, why = fitting_batch(min(batch, n_examples), p_bytes, measured, gpu_room(device))
        predicted = None if draw_rate is None else draw_rate * lora_dim * proj_dim
        if fit and kind == "matrix" and predicted is not None and predicted > max_draw_s:
            fit, why = 0, f"drawing P would take ~{predicted:.0f} s > --max-draw-s {max_draw_s}"
        if not fit:
            row["skipped"] = why
            continue
        _reset_peak(device)
        base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        started = time.perf_counter()
        projector = select_projector(lora_dim, proj_dim, 0, device, max_batch_size=32)
        _sync(device)
        row["draw_s"] = time.perf_counter() - started
        if kind == "matrix":
            draw_rate = row["draw_s"] / (lora_dim * proj_dim)
        fz = GradientFeaturizer(net, output, projector)
        if fz.grad_dim != lora_dim:
            raise RuntimeError(f"the featurizer differentiates {fz.grad_dim:,} parameters, "
                               f"not the {lora_dim:,} of the adapters")
        while True:
            try:
                seconds = _time_featurizer(fz, x0, noise, ids, fit)
                break
            except torch.cuda.OutOfMemoryError:
                row.setdefault("out_of_memory_at_batch", []).append(fit)
                if fit == 1:
                    raise
                fit //= 2
                _reset_peak(device)
        row.update(batch=fit, examples=n_examples, seconds=seconds,
                   examples_per_s=n_examples / seconds, peak_gpu_gib=_peak_gib(device),
                   peak_rss_gib=_rss_gib())
        if device.type == "cuda":
            measured = (torch.cuda.max_memory_allocated(device) - base - p_bytes, fit)
        fz.release()
        del fz, projector
        _reset_peak(device)
    net.to("cpu")
    return rows


# --- the run ------------------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true",
                        help="tiny configs on the CPU (automatic without CUDA)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="auto: the full size on CUDA, else --tiny on the CPU; cpu without "
                             "--tiny: the full size on the CPU (a smoke test, with --resolution)")
    parser.add_argument("--resolution", type=int, default=None,
                        help="image side in px (512; tiny 16); lower only for smoke tests")
    parser.add_argument("--parts", default="train,reference,featurize",
                        help="comma-separated subset of train,reference,featurize")
    parser.add_argument("--batches", type=_ints, default=(1, 4, 8))
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (3; tiny 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (10; tiny 2)")
    parser.add_argument("--proj-dims", type=_ints, default=None,
                        help="TRAK proj_dims (4096,32768; tiny 256,2048)")
    parser.add_argument("--featurize-examples", type=int, default=None, help="(16; tiny 4)")
    parser.add_argument("--featurize-batch", type=int, default=None,
                        help="examples per vmapped batch (default: featurize_batch_size)")
    parser.add_argument("--max-draw-s", type=float, default=240.0,
                        help="skip a MatrixProjector predicted to take longer to draw")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="where the random folder is written (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the JSON file (default: $OUT/gpu_sd.json when OUT is set)")
    return parser.parse_args(argv)


def _environment(device: torch.device) -> dict[str, Any]:
    import diffusers
    import peft
    import transformers

    from offchain.attribution.featurize import fast_jl_available

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "diffusers": diffusers.__version__, "peft": peft.__version__,
           "transformers": transformers.__version__, "device": str(device),
           "fast_jl": fast_jl_available(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_total_gib=props.total_memory / _GIB,
                   bf16=torch.cuda.is_bf16_supported())
    return env


def run(args: argparse.Namespace, work: Path,
        save: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every requested measurement; returns the figures (see the module doc). ``save`` gets the
    figures so far after each stage (a run cut short keeps what it measured)."""
    def _timed(results: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        value = fn()
        results.setdefault("stage_seconds", {})[name] = time.perf_counter() - started
        if save is not None:
            save({**results, name: value[0] if name == "project" else value})
        return value

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    tiny = args.tiny or (args.device == "auto" and not torch.cuda.is_available())
    arch = TINY if tiny else SD15
    if args.resolution is not None:
        arch = dataclasses.replace(arch, resolution=args.resolution)
    device = torch.device("cpu" if tiny or args.device == "cpu" else "cuda")
    warmup = args.warmup if args.warmup is not None else (1 if tiny else 3)
    steps = args.steps if args.steps is not None else (2 if tiny else 10)
    proj_dims = args.proj_dims or ((256, 2048) if tiny else (4096, 32768))
    n_feat = args.featurize_examples or (4 if tiny else 16)
    parts = set(args.parts.split(","))
    results: dict[str, Any] = {"arch": arch.name, "resolution": arch.resolution,
                               "lora_rank": LORA_RANK, "target_modules": list(TARGET_MODULES),
                               "warmup": warmup, "steps": steps, "env": _environment(device)}
    folder = args.model_dir or work / f"random-{arch.name}"
    if not (folder / "model_index.json").is_file():
        _timed(results, "build_folder", lambda: build_random_sd(folder, arch))
    backend = SDLoraBackend(SDLoraConfig(model_path=str(folder), resolution=arch.resolution,
                                         lora_rank=LORA_RANK, lora_alpha=float(LORA_RANK),
                                         target_modules=TARGET_MODULES, device=device.type))
    ckpt = None
    if "train" in parts:
        results["project"], ckpt = _timed(results, "project", lambda: project_training(
            folder, arch, args.batches, warmup, steps, device, work))
    if "reference" in parts:
        results["reference"] = _timed(results, "reference", lambda: reference_training(
            folder, arch, args.batches, warmup, steps, device))
    if "train" in parts and "reference" in parts:
        results["ratio_project_over_reference"] = {
            str(p["batch"]): p["images_per_s"] / r["images_per_s"]
            for p, r in zip(results["project"], results["reference"], strict=True)}
    if "featurize" in parts:
        model = backend.load(ckpt) if ckpt is not None else backend.build(seed=0)
        results["unet_parameters"] = sum(int(p.numel()) for n, p in
                                         model.unet.unet.named_parameters() if "lora_" not in n)
        results["featurize"] = _timed(results, "featurize", lambda: featurization(
            model, backend, proj_dims, n_feat, device, args.max_draw_s, args.featurize_batch))
    return results


def format_results(results: dict[str, Any]) -> str:
    """The figures as a few plain-text tables."""
    def gib(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    lines = [f"{results['arch']} at {results['resolution']} px, LoRA rank "
             f"{results['lora_rank']}, {results['env']['device']}"
             + (f" ({results['env']['gpu']})" if "gpu" in results["env"] else "")]
    ratio = results.get("ratio_project_over_reference", {})
    for name in ("project", "reference"):
        for row in results.get(name, []):
            lines.append(f"  train {name:<9} batch {row['batch']:>2}: {row['images_per_s']:8.2f} "
                         f"img/s  peak GPU {gib(row['peak_gpu_gib'])} GiB"
                         + (f" (RSS {gib(row['peak_rss_gib'])} GiB)" if "peak_rss_gib" in row
                            and row["peak_gpu_gib"] is None else "")
                         + (f"  ratio {ratio[str(row['batch'])]:.3f}"
                            if name == "project" and str(row["batch"]) in ratio else ""))
    for row in results.get("featurize", []):
        head = (f"  featurize proj_dim {row['proj_dim']:>6} ({row['projector']}, grad_dim "
                f"{row['grad_dim']:,}, P {row['projector_gib']:.1f} GiB)")
        if "skipped" in row:
            lines.append(f"{head}: skipped, {row['skipped']}")
        else:
            lines.append(f"{head}: {row['examples_per_s']:.2f} ex/s at batch {row['batch']}, "
                         f"P drawn in {row['draw_s']:.1f} s, peak GPU {gib(row['peak_gpu_gib'])}"
                         f" GiB (RSS {gib(row['peak_rss_gib'])} GiB)")
    lines.append("  stage seconds: " + ", ".join(
        f"{k} {v:.1f}" for k, v in results.get("stage_seconds", {}).items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = args.out or (Path(os.environ["OUT"]) / "gpu_sd.json" if os.environ.get("OUT") else None)

    def save(results: dict[str, Any]) -> None:
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=2, default=str) + "\n")

    with tempfile.TemporaryDirectory(prefix="gpu_sd-") as tmp:
        results = run(args, Path(tmp), save)
    save(results)
    print(format_results(results))  # noqa: T201
    if out is not None:
        print(f"figures written to {out}")  # noqa: T201
    return results


if __name__ == "__main__":
    main()
