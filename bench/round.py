"""Wall time and peak memory of every stage of a campaign's rounds, for either dataset and any
model backend.

Runs the run's set-up (holders, the FID reference classifier) and ``--rounds`` rounds of the
off-chain stages of :data:`offchain.rounds.pipeline.PIPELINE` (prepare → train → generate →
attribute → copyright → quality → policy → allocate) exactly as the campaign does (holders
leave by :func:`offchain.policy.participation.stays_next_round`), with the settings of
``--profile`` and ``--dataset`` (plus ``--set KEY=VALUE`` overrides of any setting). The chain
stages (sign, submit, finalize, claim) are left out: they are transactions on a local node,
not compute. For each stage it prints:

- ``seconds``: wall time;
- ``peak RSS``: the largest resident set of this process while the stage ran (VmRSS sampled
  every 10 ms from ``/proc/self/status``, and the stage's end);
- ``max RSS``: ``getrusage(RUSAGE_SELF).ru_maxrss``, the process's peak so far;
- ``GPU peak``: ``torch.cuda.max_memory_allocated`` during the stage (CUDA runs only).

``--backend sd-lora`` fine-tunes a Stable Diffusion folder with LoRA: ``--model-path`` names a
local diffusers folder; without one the script builds a random one into a temporary folder,
``--sd-size tiny`` (the tests' folder, ``tests/sd_fixture.py``: 8 px images, 8×8 latents) or
``small`` (:func:`build_small_sd`: the SD 1.x architecture at a fifth of its width, VAE
downsampling by 8, 77-token CLIP text encoder; 64 px images by default, 8×8 latents).

``python -m offchain`` chooses the CPU threads before torch loads (:mod:`offchain.cpu`); this
script does the same. Stages skip finished work, so use a fresh ``--out`` (the default is
emptied) to measure.

    .venv/bin/python bench/round.py --dataset emoji [--rounds 1] [--profile demo] \
        [--device auto] [--set train_steps=300] [--json out.json]
    .venv/bin/python bench/round.py --dataset emoji --profile tiny --backend sd-lora \
        [--model-path /path/to/sd-folder | --sd-size small] [--set image_size=64]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))  # sd_fixture: the random SD folders

from offchain.cpu import configure_openmp  # noqa: E402

configure_openmp()  # before torch is imported (by the stages)

import numpy as np  # noqa: E402

from offchain.allocation import parse_wei  # noqa: E402
from offchain.config import Settings  # noqa: E402
from offchain.layout import RoundPaths  # noqa: E402
from offchain.oracle.run_folder import load_run_inputs  # noqa: E402
from offchain.policy.participation import stays_next_round  # noqa: E402
from offchain.rounds import stages  # noqa: E402
from offchain.rounds.pipeline import bind_stages, stages_through  # noqa: E402
from offchain.utils import read_json  # noqa: E402

MIB = 1024 * 1024


def _rss_bytes() -> int:
    """This process's resident set now (``VmRSS``), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class _PeakRSS:
    """Samples VmRSS every ``interval_s`` in a thread while the ``with`` body runs."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s, self.peak = interval_s, 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> _PeakRSS:
        self.peak = _rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _cuda():  # -> the torch.cuda module when a CUDA device is in use, else None
    if "torch" not in sys.modules:
        return None
    import torch

    return torch.cuda if torch.cuda.is_available() and torch.cuda.is_initialized() else None


def measure(name: str, work: Callable[[], object], rows: list[dict]) -> None:
    """Run ``work``, append its row (stage, seconds, memory) to ``rows`` and print it."""
    cuda = _cuda()
    if cuda is not None:
        cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with _PeakRSS() as rss:
        work()
    seconds = time.perf_counter() - started
    cuda = _cuda()  # a stage may have initialised CUDA
    row = {
        "stage": name,
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(rss.peak / MIB, 1),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "gpu_peak_mib": round(cuda.max_memory_allocated() / MIB, 1) if cuda else None,
    }
    rows.append(row)
    gpu = f"{row['gpu_peak_mib']:>9.1f}" if row["gpu_peak_mib"] is not None else f"{'—':>9}"
    print(f"{name:<27}{seconds:>9.2f}{row['peak_rss_mib']:>11.1f}{row['max_rss_mib']:>10.1f}{gpu}",
          flush=True)


SMALL_SD_RESOLUTION = 64
"""Image side the ``small`` folder is meant for (its VAE downsamples by 8: 8×8 latents)."""


def build_small_sd(folder: Path, seed: int = 0) -> Path:
    """Write a random Stable Diffusion 1.x folder, small but of SD's shape, to ``folder``.

    SD 1.x at a fifth of its width: a ``UNet2DConditionModel`` with three levels (64, 128, 256
    channels; cross-attention in the first two, two ResNet layers per level, 8 heads) and
    cross-attention width 256; an ``AutoencoderKL`` with four levels (32, 64, 128, 128), so
    latents are 4 × S/8 × S/8 as in SD; a 4-layer ``CLIPTextModel`` (width 256, 77 positions)
    with the tests' byte-level BPE tokenizer (``tests/sd_fixture.py``) at 77 tokens; SD's
    ``DDPMScheduler``. Weights are random (seeded): figures of compute, not of quality.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from sd_fixture import build_tiny_sd
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    tiny = build_tiny_sd(folder.parent / f".{folder.name}-tiny", seed)
    tokenizer = CLIPTokenizer.from_pretrained(tiny / "tokenizer", local_files_only=True)
    tokenizer.model_max_length = 77
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=SMALL_SD_RESOLUTION // 8, in_channels=4, out_channels=4,
        block_out_channels=(64, 128, 256), layers_per_block=2, norm_num_groups=32,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=256, attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 128, 128),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=32, sample_size=SMALL_SD_RESOLUTION,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=1024,
        num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                              beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              steps_offset=1)
    StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(folder)
    shutil.rmtree(tiny)
    return folder


def _sd_folder(args: argparse.Namespace, scratch: Path) -> tuple[Path, dict[str, object]]:
    """The SD folder of an sd-lora run (``--model-path``, else a random ``--sd-size`` one built
    in ``scratch``) and the settings it implies (``image_size`` of a built folder)."""
    if args.model_path is not None:
        return args.model_path, {}
    if args.sd_size == "tiny":
        from sd_fixture import TINY_SD_RESOLUTION, build_tiny_sd

        return build_tiny_sd(scratch / "tiny-sd"), {"image_size": TINY_SD_RESOLUTION}
    return build_small_sd(scratch / "small-sd"), {"image_size": SMALL_SD_RESOLUTION}


def _override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("mnist", "emoji"), default="mnist")
    parser.add_argument("--profile", choices=("demo", "tiny"), default="demo")
    parser.add_argument("--rounds", type=int, default=1, help="Rounds to run (≥ 1).")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    parser.add_argument("--out", type=Path, default=None,
                        help="Run folder (emptied first); default runs/bench-<dataset>.")
    parser.add_argument("--set", type=_override, action="append", default=[],
                        metavar="KEY=VALUE", help="Any setting, e.g. --set train_steps=100.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the rows as JSON.")
    parser.add_argument("--backend", default=None,
                        help="Model backend (default: the dataset's), e.g. sd-lora.")
    parser.add_argument("--model-path", type=Path, default=None,
                        help="sd-lora: a local diffusers Stable Diffusion folder.")
    parser.add_argument("--sd-size", choices=("tiny", "small"), default="tiny",
                        help="sd-lora without --model-path: the random folder to build.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sd-") as scratch:
        run(args, Path(scratch))


def run(args: argparse.Namespace, scratch: Path) -> None:
    """Set the run up, measure every stage of ``args.rounds`` rounds, print (and save) them."""
    out = args.out or ROOT / "runs" / f"bench-{args.dataset}"
    shutil.rmtree(out, ignore_errors=True)
    model: dict[str, object] = {}
    if args.backend == "sd-lora":
        model_path, implied = _sd_folder(args, scratch)
        model = {"model_path": model_path, **implied}
    settings = Settings.for_profile(args.profile, dataset=args.dataset, device=args.device,
                                    run_dir=out, n_rounds=max(args.rounds, 1),
                                    backend=args.backend, **{**model, **dict(args.set)})
    print(f"dataset {settings.dataset}, profile {settings.profile}, backend {settings.backend}, "
          f"{settings.image_size} px, {settings.train_steps} steps, device {settings.device}, "
          f"{settings.n_rounds} round(s); run folder {out}")
    if settings.model_path is not None:
        print(f"model folder {settings.model_path}"
              + (f" (random, --sd-size {args.sd_size})" if args.model_path is None else ""))
    print(f"{'stage':<27}{'seconds':>9}{'peak RSS':>11}{'max RSS':>10}{'GPU peak':>9}  (MiB)")
    rows: list[dict] = []
    started = time.perf_counter()
    inputs: dict[str, object] = {}
    measure("set-up (holders, FID ref)",
            lambda: inputs.update(zip(("holders", "policy", "ml", "reference"),
                                      load_run_inputs(settings), strict=True)), rows)
    inputs["ml"] = dataclasses.replace(inputs["ml"], progress=False)  # no bars between rows
    holders, ml = inputs["holders"], inputs["ml"]
    participating = np.ones(len(holders), dtype=bool)
    for round_id in range(1, settings.n_rounds + 1):
        paths = RoundPaths(out, round_id)
        work = _round_work(paths, settings, inputs, participating)
        for spec, run in bind_stages(stages_through("allocate"), work):
            measure(f"round {round_id}: {spec.key}", run, rows)
        amounts = [parse_wei(h["amount_wei"]) for h in read_json(paths.allocation)["holders"]]
        participating = stays_next_round(participating, amounts,
                                         [h.reservation_price_wei for h in holders],
                                         read_json(paths.copyright)["loss"])
        if not participating.any():
            break
    total = time.perf_counter() - started
    peak = max(r["peak_rss_mib"] for r in rows)
    print(f"{'total':<27}{total:>9.2f}{peak:>11.1f}")
    if args.json:
        record = {"dataset": settings.dataset, "profile": settings.profile,
                  "backend": settings.backend,
                  "sd_size": args.sd_size if args.backend == "sd-lora" and args.model_path is None
                  else None,
                  "n_holders": len(holders), "ml": dataclasses.asdict(ml), "rows": rows,
                  "total_seconds": round(total, 2)}
        args.json.write_text(json.dumps(record, indent=1))


def _round_work(paths: RoundPaths, settings: Settings, inputs: dict,
                participating: np.ndarray) -> dict[str, Callable[[], object] | None]:
    holders, policy, ml, reference = (inputs[k] for k in ("holders", "policy", "ml", "reference"))
    return {
        "prepare": lambda: stages.prepare(paths, holders, participating),
        "train": lambda: stages.train(paths, ml),
        "generate": lambda: stages.generate(paths, ml),
        "attribute": lambda: stages.attribute(paths, ml),
        "copyright": lambda: stages.assess_copyright(paths, ml),
        "quality": ((lambda: stages.assess_quality(paths, ml, reference))
                    if reference is not None else None),
        "policy": lambda: stages.decide(paths, policy, settings.n_rounds,
                                        settings.total_budget_wei),
        "allocate": lambda: stages.allocate(paths, ml),
    }


if __name__ == "__main__":
    main()
