#!/usr/bin/env python3
"""Spread of the reference-classifier FID over seeds and sample sizes (MNIST demo).

Run from the project root (needs the ml extra; everything is local, nothing is downloaded)::

    HF_HUB_OFFLINE=1 .venv/bin/python bench/fid_variance.py --out runs/fid_variance.json

What it measures, with the demo's holders (``mnist_holders()``: 8 holders, 512 MNIST test
images) and every other MNIST test image held out (``held_out_images``):

1. The held-out images are split, stratified and seeded, into a classifier part (half) and a
   real part; the real part is shuffled and cut into a *floor pool* (``--floor-pool`` images)
   and the *reference* (the rest) whose feature statistics every FID is measured against.
2. Reference classifiers are trained on the classifier part with seeds 0, 1, 2
   (``--classifier-seeds``).
3. Diffusion checkpoints are trained on the 512 holder images: ``--train-steps`` (600) steps
   (the "trained" model), ``--short-steps`` (100) steps, and 0 steps (the untrained UNet).
4. For M in ``--sizes`` (32, 128, 512), with classifier seed 0:
   (a) the floor: FID of M real floor-pool images against the reference, and of two disjoint
       sets of M real images against each other, over ``--reps`` random draws;
   (b) FID of M samples of the trained checkpoint for ``--sampling-seeds`` (5) sampling seeds,
       and of the short and untrained checkpoints for ``--other-seeds`` (2) sampling seeds; the
       first M of each seed's 512 samples are used (they are i.i.d. draws), plus M random
       holder training images (what a model that reproduced its training set would score);
   (c) the trained checkpoint's sampling seed 0 and floor draw 0 under each classifier seed.
5. Prints one table (mean, std (ddof 1), min, max per condition and M) and writes it with all
   raw values, timings, accuracies and the machine's load average as JSON (``--out``).

Checkpoints, classifiers, reference statistics and samples are cached under ``--work-dir``, so a
second run only recomputes the FIDs. Use one torch thread on a shared machine (``--threads``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from offchain.data.holders import mnist_holders  # noqa: E402
from offchain.diffusion import (  # noqa: E402
    DiffusionConfig,
    generate_samples,
    preprocess,
    train_round,
)
from offchain.quality import (  # noqa: E402
    ClassifierConfig,
    feature_stats,
    fid,
    frechet_distance,
    held_out_images,
    load_reference_classifier,
    reference_stats,
    split_reference,
    train_reference_classifier,
)
from offchain.utils import write_json  # noqa: E402

logger = logging.getLogger("fid_variance")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Spread of the reference-classifier FID over sampling seeds, classifier "
        "seeds and sample sizes M, against the real-vs-real floor (MNIST demo).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument(
        "--work-dir",
        type=Path,
        default=ROOT / "runs" / "fid_variance",
        help="cache of checkpoints, classifiers and samples",
    )
    p.add_argument("--sizes", type=str, default="32,128,512", help="sample sizes M")
    p.add_argument("--reps", type=int, default=5, help="random real draws per M (floor)")
    p.add_argument("--sampling-seeds", type=int, default=5, help="seeds of the trained model")
    p.add_argument(
        "--other-seeds", type=int, default=2, help="seeds of the short and untrained models"
    )
    p.add_argument("--classifier-seeds", type=int, default=3, help="classifier training seeds")
    p.add_argument("--train-steps", type=int, default=600, help="steps of the trained model")
    p.add_argument(
        "--short-steps", type=int, default=100, help="steps of the half-trained model (0: skip it)"
    )
    p.add_argument(
        "--floor-pool",
        type=int,
        default=1024,
        help="real images kept out of the reference for floor draws (>= 2·max M)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and real draws")
    return p.parse_args(argv)


def summary(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    return {
        "n": int(arr.size),
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "min": float(arr.min()),
        "max": float(arr.max()),
        "values": [float(v) for v in arr],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.floor_pool < 2 * max(sizes):
        raise SystemExit(f"--floor-pool must be >= 2·max(M) = {2 * max(sizes)}")
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_before = os.getloadavg()
    timings: dict[str, float] = {}

    # -- data ---------------------------------------------------------------------------------
    holders = mnist_holders(seed=0)
    holder_images = np.concatenate([h.images for h in holders])
    held_images, held_labels = held_out_images(holders, "mnist")
    (clf_images, clf_labels), (real_images, _) = split_reference(
        held_images, held_labels, 0.5, seed=args.seed
    )
    order = np.random.default_rng(args.seed).permutation(len(real_images))
    floor_images = real_images[order[: args.floor_pool]]
    ref_images = real_images[order[args.floor_pool :]]
    floor_x = preprocess(floor_images, 16)
    holder_x = preprocess(holder_images, 16)
    logger.info(
        "%d holder images; %d held out → %d classifier, %d floor pool, %d reference",
        len(holder_images),
        len(held_images),
        len(clf_images),
        len(floor_images),
        len(ref_images),
    )

    # -- reference classifiers ------------------------------------------------------------------
    classifiers = []
    for cs in range(args.classifier_seeds):
        t = time.perf_counter()
        cdir = train_reference_classifier(
            clf_images,
            clf_labels,
            work / f"classifier_seed{cs}",
            ClassifierConfig(seed=cs, num_threads=args.threads),
        )
        model = load_reference_classifier(cdir)
        ref = reference_stats(cdir, ref_images, model)
        classifiers.append((cs, model, ref))
        timings[f"classifier_seed{cs}_s"] = time.perf_counter() - t
    accuracies = {
        f"seed{cs}": {
            "val_accuracy": m.metadata["val_accuracy"],
            "train_seconds": m.metadata["train_seconds"],
        }
        for cs, m, _ in classifiers
    }

    # -- diffusion checkpoints and samples --------------------------------------------------------
    checkpoints = {"trained": args.train_steps, "untrained": 0}
    if args.short_steps > 0:
        checkpoints["short"] = args.short_steps
    n_seeds = {
        "trained": args.sampling_seeds,
        "short": args.other_seeds,
        "untrained": args.other_seeds,
    }
    max_m = max(sizes)
    samples: dict[str, list[np.ndarray]] = {}
    for name, steps in checkpoints.items():
        cfg = DiffusionConfig(train_steps=steps, num_threads=args.threads)
        ckpt = work / f"ckpt_{steps}steps"
        t = time.perf_counter()
        train_round(holder_images, ckpt, cfg)
        timings[f"train_{name}_s"] = time.perf_counter() - t
        samples[name] = []
        t = time.perf_counter()
        for s in range(n_seeds[name]):
            path = work / f"samples_{steps}steps_seed{s}_n{max_m}.npy"
            if path.is_file():
                x = np.load(path)
            else:
                x = generate_samples(ckpt, max_m, cfg, seed=s)
                np.save(path, x)
            samples[name].append(x)
        timings[f"sample_{name}_s"] = time.perf_counter() - t

    # -- FIDs ---------------------------------------------------------------------------------
    t = time.perf_counter()
    rows: list[dict[str, Any]] = []

    def add(condition: str, m: int, values: list[float], **extra: Any) -> None:
        rows.append({"condition": condition, "M": m, **summary(values), **extra})

    _, model0, ref0 = classifiers[0]
    rng = np.random.default_rng(args.seed + 1)
    floor_draws = {
        m: [rng.permutation(len(floor_x))[: 2 * m] for _ in range(args.reps)] for m in sizes
    }
    holder_draws = {
        m: [rng.permutation(len(holder_x))[:m] for _ in range(args.reps)] for m in sizes
    }
    for m in sizes:
        vs_ref, vs_half = [], []
        for idx in floor_draws[m]:
            a, b = floor_x[idx[:m]], floor_x[idx[m:]]
            vs_ref.append(fid(a, ref0, model0))
            sa, sb = feature_stats(model0, a), feature_stats(model0, b)
            vs_half.append(frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma))
        add("real vs reference (floor)", m, vs_ref, repeats="real draws")
        add("real vs real, disjoint M/M", m, vs_half, repeats="real draws")
        add(
            "holder train images vs ref",
            m,
            [fid(holder_x[idx], ref0, model0) for idx in holder_draws[m]],
            repeats="real draws",
        )
        for name in ("trained", "short", "untrained"):
            if name not in samples:
                continue
            label = f"{name} ({checkpoints[name]} steps) vs ref"
            add(
                label,
                m,
                [fid(x[:m], ref0, model0) for x in samples[name]],
                repeats="sampling seeds",
            )
    # (c) classifier seeds
    for m in sizes:
        gen, floor, ratio = [], [], []
        for _, model, ref in classifiers:
            g = fid(samples["trained"][0][:m], ref, model)
            f = fid(floor_x[floor_draws[m][0][:m]], ref, model)
            gen.append(g)
            floor.append(f)
            ratio.append(g / f)
        add("trained, over classifier seeds", m, gen, repeats="classifier seeds")
        add("floor, over classifier seeds", m, floor, repeats="classifier seeds")
        add("trained/floor ratio, clf seeds", m, ratio, repeats="classifier seeds")
    timings["fid_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started

    # -- report ---------------------------------------------------------------------------------
    header = (
        f"{'condition':34s} {'M':>4s} {'n':>2s} {'mean':>9s} {'std':>8s} {'min':>9s} {'max':>9s}"
    )
    lines = [header, "-" * len(header)]
    for r in sorted(rows, key=lambda r: (_order(r["condition"]), r["M"])):
        lines.append(
            f"{r['condition']:34s} {r['M']:4d} {r['n']:2d} {r['mean']:9.2f} {r['std']:8.2f} "
            f"{r['min']:9.2f} {r['max']:9.2f}"
        )
    print("\n".join(lines))
    print(f"classifier accuracy: {json.dumps(accuracies)}")
    print("timings (s): " + ", ".join(f"{k}={v:.1f}" for k, v in timings.items()))
    load_after = os.getloadavg()
    print(
        f"load average before {load_before}, after {load_after}; threads {args.threads}; "
        f"cores {os.cpu_count()}"
    )

    if args.out is not None:
        write_json(
            args.out,
            {
                "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "n_holder_images": int(len(holder_images)),
                "n_classifier_images": int(len(clf_images)),
                "n_floor_pool": int(len(floor_images)),
                "n_reference": int(ref0.n),
                "feature_dim": int(ref0.dim),
                "classifiers": accuracies,
                "rows": rows,
                "table": lines,
                "timings_s": timings,
                "machine": {
                    "platform": platform.platform(),
                    "cpu_count": os.cpu_count(),
                    "torch_threads": args.threads,
                    "load_average_before": list(load_before),
                    "load_average_after": list(load_after),
                    "torch": torch.__version__,
                },
            },
        )
        print(f"wrote {args.out}")
    return 0


_ORDER = (
    "real vs reference",
    "real vs real",
    "holder",
    "trained (",
    "short",
    "untrained",
    "trained,",
    "floor,",
    "trained/",
)


def _order(condition: str) -> int:
    return next((i for i, p in enumerate(_ORDER) if condition.startswith(p)), len(_ORDER))


if __name__ == "__main__":
    raise SystemExit(main())
