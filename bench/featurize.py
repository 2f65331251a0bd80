#!/usr/bin/env python3
"""Benchmark: our TRAK pipeline against traker's default CPU path, same model, data and λ.

Run from the project root::

    .venv/bin/python bench/featurize.py                       # N=512, M=64, proj_dim 512, K=4
    .venv/bin/python bench/featurize.py --proj-dim 2048 --out runs/featurize_2048.json
    .venv/bin/python bench/featurize.py --checkpoint runs/demo/round_1/ckpt

Model: the project's demo UNet (``offchain.diffusion.build_unet(DiffusionConfig())``, 651k
parameters) trained ``--train-steps`` steps on the training images with
``offchain.diffusion.train_round`` (so the gradients have structure), or a checkpoint folder.
Data: the first N MNIST test digits (``offchain.data.mnist.load_mnist``) as training images
and the next M as targets, ``preprocess(images, 16)``.

Paths, each in its own subprocess (so ``ru_maxrss`` is per path), one after the other:

(a) ``ours``: :func:`offchain.attribution.compute_trak_scores` (torch.func per-example
    gradients, projection matrix generated once, resumable store, float64 Cholesky kernel).
(b) ``traker``: traker 0.3.2 as a CPU user writes it: ``TRAKer(model, task=DTrakOutput,
    train_set_size=N, device="cpu", use_half_precision=False, proj_dim=...)`` with no custom
    projector (so its default multi-block ``BasicProjector``, 100-column blocks regenerated
    for every batch), ``load_checkpoint``, ``featurize`` per batch, ``finalize_features``,
    ``start_scoring_checkpoint``, ``score`` per batch, ``finalize_scores``; ``lambda_reg`` =
    the absolute λ our run used (relative 1e-2 by default), so both solve the same system.

Both use the same output function (D-TRAK), the same fixed noise and the same batch size.
Featurization throughput = N / (wall time of featurizing the N training images, including
drawing the projection matrix: ours once, traker's first block at construction and every block
again in each batch). Total = the whole attribution call. Scores are compared with Spearman
(scipy) over all M·N entries and as the mean of the M per-target rows.

Measured (2026-11, 2-core AMD EPYC shared with three other jobs, load 2–3, ``--threads 1``,
defaults otherwise; best of 2 alternating runs at proj_dim 512, 1 run at 2048)::

    proj_dim  --proj-dtype  ours ex/s  traker ex/s  featurize ×  total ×  Spearman flat/rows
    512       float32          34.5       18.0          1.91      1.94    1.00000 / 1.00000
    512       bfloat16         44.4       17.3          2.56      2.61    0.99939 / 0.99926
    2048      float32          14.1        6.0          2.34      2.39    1.00000 / 1.00000
    2048      bfloat16         23.4        6.1          3.85      3.95    0.99934 / 0.99921

(earlier float32 runs at 512: 2.16–2.25×). Peak RSS: ours 2.8 GB (512, float32), 2.1 GB
(512, bfloat16), 6.6 GB (2048, float32), 4.0 GB (2048, bfloat16); traker 2.0 GB throughout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="TRAK featurization benchmark: our pipeline vs traker's default CPU path.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--n-train", type=int, default=512, help="training images N")
    p.add_argument("--n-targets", type=int, default=64, help="target images M")
    p.add_argument("--proj-dim", type=int, default=512, help="projection dimension")
    p.add_argument("--timesteps", type=int, default=4, help="K timesteps of the D-TRAK output")
    p.add_argument("--batch-size", type=int, default=32, help="examples per batch (both paths)")
    p.add_argument("--lambda-reg", type=float, default=1e-2, help="relative λ of our run")
    p.add_argument("--seed", type=int, default=0, help="noise and projection seed")
    p.add_argument("--train-steps", type=int, default=40, help="training steps of the demo UNet")
    p.add_argument("--checkpoint", type=Path, default=None, help="use this checkpoint folder")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run the paths alternately this many times; report each path's fastest run "
        "(the machine may be shared: alternation and best-of-r reduce the load's bias)",
    )
    p.add_argument("--paths", nargs="+", default=["ours", "traker"], choices=["ours", "traker"])
    p.add_argument(
        "--proj-dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="ours: precision of the projection matmul (TrakConfig.proj_dtype)",
    )
    p.add_argument(
        "--classic-attention",
        action="store_true",
        help="ours: swap the UNet's attention to diffusers' AttnProcessor (vmap-batched)",
    )
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: tmp)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    p.add_argument("--worker", choices=["ours", "traker"], help=argparse.SUPPRESS)
    p.add_argument("--lambda-abs", type=float, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------- workers


def _load(workdir: Path):
    import numpy as np
    import torch

    from offchain.diffusion import load_checkpoint

    ckpt = Path((workdir / "checkpoint.txt").read_text().strip())
    unet, scheduler = load_checkpoint(ckpt)
    data = np.load(workdir / "data.npz")
    return unet, scheduler, torch.from_numpy(data["train"]), torch.from_numpy(data["targets"])


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _worker_ours(args: argparse.Namespace) -> dict:
    import numpy as np

    from offchain.attribution import TrakConfig, compute_trak_scores
    from offchain.attribution.featurize import use_classic_attention
    from offchain.utils import read_json

    unet, scheduler, train, targets = _load(args.workdir)
    if args.classic_attention:
        use_classic_attention(unet)
    out = args.workdir / "ours"
    shutil.rmtree(out, ignore_errors=True)
    cfg = TrakConfig(
        proj_dim=args.proj_dim,
        num_timesteps=args.timesteps,
        lambda_reg=args.lambda_reg,
        batch_size=args.batch_size,
        seed=args.seed,
        proj_dtype=args.proj_dtype,
    )
    t0 = time.perf_counter()
    scores = compute_trak_scores(unet, scheduler, train, targets, out, cfg, progress=False)
    total = time.perf_counter() - t0
    meta = read_json(out / "meta.json")
    t = meta["timing_s"]
    np.save(args.workdir / "scores_ours.npy", scores)
    return {
        "featurize_s": t["projector"] + t["featurize_train"],
        "total_s": total,
        "timing_s": t,
        "lambda_abs": meta["lambda_abs"],
        "projector": meta["projector"],
    }


def _worker_traker(args: argparse.Namespace) -> dict:
    import logging

    import numpy as np
    from trak import TRAKer

    from offchain.attribution import DTrakOutput, make_noise
    from offchain.attribution.model_output import TARGET_STREAM, TRAIN_STREAM

    unet, scheduler, train, targets = _load(args.workdir)
    out = args.workdir / "traker"
    shutil.rmtree(out, ignore_errors=True)
    n, m, bs = len(train), len(targets), args.batch_size
    shape = tuple(train.shape[1:])
    t0 = time.perf_counter()
    traker = TRAKer(
        model=unet,
        task=DTrakOutput(scheduler.alphas_cumprod, args.timesteps),
        train_set_size=n,
        save_dir=str(out),
        device="cpu",
        use_half_precision=False,
        proj_dim=args.proj_dim,
        projector_seed=args.seed,
        lambda_reg=args.lambda_abs,
        logging_level=logging.WARNING,
    )
    traker.load_checkpoint(unet.state_dict(), model_id=0)
    for start in range(0, n, bs):
        idx = np.arange(start, min(start + bs, n))
        noise = make_noise(idx, args.timesteps, shape, args.seed, TRAIN_STREAM)
        traker.featurize(batch=(train[idx], noise), num_samples=len(idx))
    t_feat = time.perf_counter() - t0
    traker.finalize_features()
    if getattr(traker.projector, "num_blocks", 2) == 1:
        # traker pitfall (docs/toolchain.md): with proj_dim ≤ 100 the single-block projector
        # never regenerates the matrix finalize_features() freed; redraw it from its state
        traker.projector.generate_sketch_matrix(traker.projector.generator_states[0])
    t_fin = time.perf_counter() - t0 - t_feat
    traker.start_scoring_checkpoint(
        exp_name="targets", checkpoint=unet.state_dict(), model_id=0, num_targets=m
    )
    for start in range(0, m, bs):
        idx = np.arange(start, min(start + bs, m))
        noise = make_noise(idx, args.timesteps, shape, args.seed, TARGET_STREAM)
        traker.score(batch=(targets[idx], noise), num_samples=len(idx))
    raw = traker.finalize_scores(exp_name="targets")  # (N, M)
    total = time.perf_counter() - t0
    np.save(args.workdir / "scores_traker.npy", np.asarray(raw, dtype=np.float32).T.copy())
    projector = traker.projector
    return {
        "featurize_s": t_feat,
        "total_s": total,
        "timing_s": {
            "featurize_train": round(t_feat, 3),
            "finalize_features": round(t_fin, 3),
            "score": round(total - t_feat - t_fin, 3),
        },
        "projector": {
            "kind": type(projector).__name__,
            "proj_type": str(getattr(projector.proj_type, "value", projector.proj_type)),
            "block_size": getattr(projector, "block_size", None),
            "num_blocks": getattr(projector, "num_blocks", None),
        },
    }


def _run_worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="There is a performance drop because")
    load_before = os.getloadavg()
    result = _worker_ours(args) if args.worker == "ours" else _worker_traker(args)
    result["peak_rss_mib"] = _peak_rss_mib()
    result["loadavg_before"] = list(load_before)
    result["loadavg_after"] = list(os.getloadavg())
    (args.workdir / f"result_{args.worker}.json").write_text(json.dumps(result, indent=2))


# -------------------------------------------------------------------------------- driver


def _prepare(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from offchain.data.mnist import load_mnist
    from offchain.diffusion import DiffusionConfig, preprocess, train_round

    torch.set_num_threads(args.threads)
    images, _ = load_mnist()
    need = args.n_train + args.n_targets
    if need > len(images):
        raise SystemExit(f"need {need} images, MNIST test set has {len(images)}")
    train_u8, target_u8 = images[: args.n_train], images[args.n_train : need]
    np.savez(
        args.workdir / "data.npz",
        train=preprocess(train_u8, 16).numpy(),
        targets=preprocess(target_u8, 16).numpy(),
    )
    info: dict = {}
    if args.checkpoint is not None:
        ckpt = args.checkpoint.resolve()
        info["checkpoint"] = str(ckpt)
    else:
        ckpt = args.workdir / "ckpt"
        shutil.rmtree(ckpt, ignore_errors=True)
        cfg = DiffusionConfig(
            train_steps=args.train_steps,
            lr_warmup_steps=min(20, args.train_steps),
            num_threads=args.threads,
            seed=args.seed,
        )
        t0 = time.perf_counter()
        train_round(train_u8, ckpt, cfg, progress=False)
        info["trained_steps"] = args.train_steps
        info["train_s"] = round(time.perf_counter() - t0, 2)
    (args.workdir / "checkpoint.txt").write_text(str(ckpt))
    return info


def _spearman(a, b) -> tuple[float, float]:
    import numpy as np
    from scipy.stats import spearmanr

    flat = float(spearmanr(a.ravel(), b.ravel()).statistic)
    rows = float(np.mean([spearmanr(x, y).statistic for x, y in zip(a, b, strict=True)]))
    return flat, rows


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker:
        _run_worker(args)
        return 0
    own_tmp = args.workdir is None
    args.workdir = Path(tempfile.mkdtemp(prefix="bench_featurize_")) if own_tmp else args.workdir
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _drive(args)
    finally:
        if own_tmp and not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)


def _drive(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    setup = _prepare(args)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(args.threads))
    base = [sys.executable, str(Path(__file__).resolve())]
    common = [
        f"--n-train={args.n_train}",
        f"--n-targets={args.n_targets}",
        f"--proj-dim={args.proj_dim}",
        f"--timesteps={args.timesteps}",
        f"--batch-size={args.batch_size}",
        f"--lambda-reg={args.lambda_reg}",
        f"--seed={args.seed}",
        f"--threads={args.threads}",
        f"--proj-dtype={args.proj_dtype}",
        f"--workdir={args.workdir}",
    ] + (["--classic-attention"] if args.classic_attention else [])
    runs: dict[str, list[dict]] = {p: [] for p in ("ours", "traker") if p in args.paths}
    lambda_abs = None
    for rep in range(max(1, args.repeats)):
        for path in runs:
            extra = []
            if path == "traker":
                if lambda_abs is None:
                    raise SystemExit("the traker path needs λ from our run: include 'ours'")
                extra = [f"--lambda-abs={lambda_abs!r}"]
            print(f"run {rep + 1}/{args.repeats}: {path} ...", file=sys.stderr, flush=True)
            subprocess.run([*base, f"--worker={path}", *common, *extra], env=env, check=True)
            runs[path].append(json.loads((args.workdir / f"result_{path}.json").read_text()))
            if path == "ours" and lambda_abs is None:
                lambda_abs = runs[path][0]["lambda_abs"]
    # each path's fastest run (by total wall time); all runs are kept in the JSON
    results = {p: min(rs, key=lambda r: r["total_s"]) for p, rs in runs.items()}

    summary: dict = {
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("worker", "lambda_abs", "workdir", "out", "keep")
        },
        "setup": setup,
        "lambda_abs": lambda_abs,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "paths": {},
    }
    for name, r in results.items():
        summary["paths"][name] = {
            "featurize_examples_per_s": args.n_train / r["featurize_s"],
            **r,
            "all_runs": [
                {k: x[k] for k in ("featurize_s", "total_s", "peak_rss_mib", "loadavg_before")}
                for x in runs[name]
            ],
        }
    if "ours" in results and "traker" in results:
        ours = np.load(args.workdir / "scores_ours.npy")
        theirs = np.load(args.workdir / "scores_traker.npy")
        flat, rows = _spearman(ours, theirs)
        summary["comparison"] = {
            "featurize_speedup": results["traker"]["featurize_s"] / results["ours"]["featurize_s"],
            "total_speedup": results["traker"]["total_s"] / results["ours"]["total_s"],
            "spearman_flat": flat,
            "spearman_rows_mean": rows,
        }
    _print_table(summary)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def _print_table(summary: dict) -> None:
    s = summary["settings"]
    attention = ", classic attention" if s["classic_attention"] else ""
    print(
        f"\nTRAK featurize benchmark: N={s['n_train']} M={s['n_targets']} "
        f"proj_dim={s['proj_dim']} K={s['timesteps']} batch={s['batch_size']} "
        f"threads={s['threads']}; ours: {s['proj_dtype']} projection{attention}; "
        f"λ_abs={summary['lambda_abs']:.3g}; best of {s['repeats']} alternating runs per path"
    )
    header = f"{'path':<8} {'feat ex/s':>10} {'feat s':>8} {'total s':>8} {'peak RSS MiB':>13}"
    header += f" {'load 1m (before→after)':>24}"
    print(header)
    print("-" * len(header))
    for name, r in summary["paths"].items():
        load = f"{r['loadavg_before'][0]:.2f}→{r['loadavg_after'][0]:.2f}"
        print(
            f"{name:<8} {r['featurize_examples_per_s']:>10.1f} {r['featurize_s']:>8.1f} "
            f"{r['total_s']:>8.1f} {r['peak_rss_mib']:>13.0f} {load:>24}"
        )
    c = summary.get("comparison")
    if c:
        print(
            f"speed-up: featurize {c['featurize_speedup']:.2f}x, total {c['total_speedup']:.2f}x; "
            f"Spearman flat {c['spearman_flat']:.5f}, per-target mean "
            f"{c['spearman_rows_mean']:.5f}"
        )


if __name__ == "__main__":
    sys.exit(main())
