"""Per-step cost of the text-unet backend's configurations on this machine.

For each configuration (conditioning × UNet widths × batch size) this builds the real model of
``offchain.diffusion.text_unet`` on the CPU (or ``--device``), runs ``--warmup`` untimed and
``--steps`` timed training steps (forward, ε-MSE, backward, AdamW: what ``train_text_round``
does per step), and one timed guided sampling step (conditional + unconditional in one batch of
``--sample-batch``). Prints seconds per training step, the implied time of a 300-step round,
seconds per sampled image for ``--inference-steps`` steps, the parameter count and the process's
peak RSS; the load average before and after shows whether the machine was quiet.

Threads: ``offchain.cpu.configure_openmp`` sets OMP_NUM_THREADS to the CPUs this process may
use before torch loads (set OMP_NUM_THREADS yourself to override).

    python bench/train_step.py                        # the default grid at 32 px
    python bench/train_step.py --conditioning time --channels 16,32,64 --batch 32 --steps 10

Measured on the 2-core machine with other work running (load average 1.6; torch 2.13, 2
threads, median of 8 steps; s/img = 25 guided sampling steps):

    cond  channels      batch  params   s/step  300 steps  s/img sampled
    time  (16, 32, 64)     32  680,883   0.168       50 s         0.082
    time  (16, 32, 64)     64  680,883   0.294       88 s         0.078
    time  (32, 64, 64)     32  1,124,003 0.310       93 s         0.225
    time  (32, 64, 64)     64  1,124,003 0.584      175 s         0.145
    cross (16, 32, 64)     32  1,029,939 0.226       68 s         0.103
    cross (16, 32, 64)     64  1,029,939 0.406      122 s         0.101
    cross (32, 64, 64)     32  1,473,059 0.381      114 s         0.197
    cross (32, 64, 64)     64  1,473,059 0.711      213 s         0.176

peak RSS 1,492 MiB (all eight models in one process). With OMP_NUM_THREADS=1 the default
(time, (16, 32, 64), 32) took 0.252 s per step. Under a load average of 4–6 the same grid ran
2.5–4× slower (0.650 s per step for the default).
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from offchain.cpu import configure_openmp  # noqa: E402

THREADS = configure_openmp()  # before torch is imported

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from offchain.diffusion.device import autocast, select_device  # noqa: E402
from offchain.diffusion.text_encoder import WordTokenizer  # noqa: E402
from offchain.diffusion.text_unet import (  # noqa: E402
    TextUNetConfig,
    build_model,
    build_scheduler,
)

CAPTIONS = ["red apple", "blue whale", "grinning face with big eyes", "hot beverage", ""]


def _channels(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in text.split(","))


def measure(cfg: TextUNetConfig, steps: int, warmup: int, sample_batch: int,
            inference_steps: int, device: torch.device) -> dict[str, float]:
    """Seconds per training step and per guided sampling step (one batch), parameters."""
    tokenizer = WordTokenizer.build(CAPTIONS, cfg.max_tokens)
    model = build_model(cfg, tokenizer, seed=0).to(device).train()
    scheduler = build_scheduler(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    shape = (cfg.batch_size, cfg.channels, cfg.image_size, cfg.image_size)
    x0 = torch.rand(shape).mul(2).sub(1).to(device)
    ids = tokenizer([CAPTIONS[i % len(CAPTIONS)] for i in range(cfg.batch_size)]).to(device)
    timings = []
    for step in range(warmup + steps):
        started = time.perf_counter()
        noise = torch.randn(shape).to(device)
        t = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,)).to(device)
        with autocast(device):
            pred = model(scheduler.add_noise(x0, noise, t), t, ids).sample
        loss = F.mse_loss(pred.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            timings.append(time.perf_counter() - started)
    model.eval()
    xs = torch.randn((2 * sample_batch, *shape[1:])).to(device)
    sids = tokenizer([CAPTIONS[i % len(CAPTIONS)] for i in range(2 * sample_batch)]).to(device)
    with torch.no_grad(), autocast(device):
        model(xs, torch.tensor(500), sids)  # warm-up
        started = time.perf_counter()
        for _ in range(3):
            model(xs, torch.tensor(500), sids)
        if device.type == "cuda":
            torch.cuda.synchronize()
    sample_step = (time.perf_counter() - started) / 3
    return {
        "s_per_step": sorted(timings)[len(timings) // 2],
        "s_per_image_sampled": sample_step * inference_steps / sample_batch,
        "params": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conditioning", nargs="+", default=["time", "cross"])
    parser.add_argument("--channels", nargs="+", type=_channels,
                        default=[(16, 32, 64), (32, 64, 64)])
    parser.add_argument("--batch", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--mid-attention", nargs="+", choices=["on", "off"], default=["on"],
                        help="self-attention in the mid block ('time' only)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sample-batch", type=int, default=64)
    parser.add_argument("--inference-steps", type=int, default=25)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = select_device(args.device)
    print(f"threads {THREADS} torch.get_num_threads()={torch.get_num_threads()} device={device} "
          f"load average before {os.getloadavg()[0]:.2f}")
    print(f"{'cond':5} {'attn':4} {'channels':12} {'batch':>5} {'params':>9} {'s/step':>7} "
          f"{'300 steps':>9} {'s/img sampled':>13}")
    grid = itertools.product(args.conditioning, args.mid_attention, args.channels, args.batch)
    for cond, attn, channels, batch in grid:
        if cond == "cross" and attn == "off":
            continue  # the cross UNet's mid block is its cross-attention
        cfg = TextUNetConfig(image_size=args.image_size, block_out_channels=channels,
                             conditioning=cond, batch_size=batch, mid_attention=attn == "on")
        r = measure(cfg, args.steps, args.warmup, args.sample_batch, args.inference_steps, device)
        print(f"{cond:5} {attn:4} {str(channels):12} {batch:5d} {r['params']:9d} "
              f"{r['s_per_step']:7.3f} {300 * r['s_per_step']:8.0f}s "
              f"{r['s_per_image_sampled']:13.4f}", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB; load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
