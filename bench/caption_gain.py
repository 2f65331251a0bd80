"""How much a text-conditioned round's model uses its captions: the denoising error on the
round's own training works with their captions against the null caption.

For each round of a finished run folder (a ``text-unet`` run, e.g. the emoji demo's
``runs/demo``) the works x_0 (the round's ``train_images.npy``, preprocessed by the backend)
are noised to x_t at a few fixed timesteps with seeded noise ε, and the mean squared error
‖ε_θ(x_t, t, c) − ε‖² is printed with each work's own caption c and with the null caption.
A model that uses its captions predicts the noise better with them (own < null); equal errors
mean the conditioning carries nothing yet. Nothing is written.

    .venv/bin/python bench/caption_gain.py [--run-dir runs/demo] [--timesteps 50 200 500]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from offchain.config import Settings  # noqa: E402
from offchain.diffusion import get_backend  # noqa: E402
from offchain.layout import RoundPaths  # noqa: E402
from offchain.rounds.config import MLConfig  # noqa: E402


def denoising_errors(
    paths: RoundPaths, ml: MLConfig, timesteps: list[int], seed: int
) -> tuple[list[float], list[float]]:
    """(own-caption errors, null-caption errors), one mean squared error per timestep."""
    backend = get_backend(ml.backend).from_settings(ml)
    if not backend.conditional:
        raise SystemExit(f"backend {ml.backend!r} is unconditional: no captions to measure")
    model = backend.load(paths.checkpoint)
    x0 = backend.preprocess(np.load(paths.train_images))
    caption_ids = model.encode_captions(json.loads(paths.train_captions.read_text()))
    alphas_cumprod = torch.as_tensor(model.scheduler.alphas_cumprod, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    own, null = [], []
    with torch.no_grad():
        for t in timesteps:
            noise = torch.randn(x0.shape, generator=generator)
            a = alphas_cumprod[t]
            noisy_images = a.sqrt() * x0 + (1 - a).sqrt() * noise
            steps = torch.full((len(x0),), t, dtype=torch.int64)
            own.append(((model.unet(noisy_images, steps, caption_ids).sample - noise) ** 2).mean().item())
            null.append(((model.unet(noisy_images, steps).sample - noise) ** 2).mean().item())
    return own, null


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--dataset", default="emoji", help="The run's dataset (its backend).")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[50, 200, 500])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ml = MLConfig.from_settings(Settings.for_profile("demo", dataset=args.dataset), progress=False)
    rounds = sorted(int(p.name.removeprefix("round_")) for p in args.run_dir.glob("round_[0-9]*"))
    print(f"{'round':>5}  {'t':>5}  {'own caption':>12}  {'null caption':>12}  {'gain':>7}")
    for round_id in rounds:
        paths = RoundPaths(args.run_dir, round_id)
        if not (paths.checkpoint / "train_log.json").exists():
            continue
        own, null = denoising_errors(paths, ml, args.timesteps, args.seed)
        for t, o, n in zip(args.timesteps, own, null, strict=True):
            print(f"{round_id:>5}  {t:>5}  {o:>12.4f}  {n:>12.4f}  {(n - o) / n:>7.2%}")


if __name__ == "__main__":
    main()
