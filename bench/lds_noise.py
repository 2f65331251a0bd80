"""How much of an LDS run's measured outputs is training noise rather than the subset?

Retrains one of a finished LDS run's example subsets with other training seeds and compares,
per target, the spread of the measured loss across seeds (same data) with its spread across
the run's subsets (same seed, different data). When the two are alike, the retrained models'
outputs are dominated by training randomness and the LDS of any attribution method is
noise-limited (docs/attribution.md).

    .venv/bin/python bench/lds_noise.py --run runs/lds --subset 0 --seeds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/lds"), help="finished LDS run")
    parser.add_argument("--kind", default="examples", choices=("examples", "holders"))
    parser.add_argument("--subset", type=int, default=0, help="subset j to retrain")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds (incl. the run's)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--profile", default="demo", help="holder split the run used")
    args = parser.parse_args()

    import torch

    from offchain.attribution.lds import LDSConfig, measured_loss
    from offchain.config import Settings
    from offchain.data.holders import training_set
    from offchain.diffusion import load_checkpoint, train_round
    from offchain.oracle.run_folder import load_holders
    from offchain.utils import read_json

    torch.set_num_threads(args.threads)
    cfg = LDSConfig(**read_json(args.run / "lds.json")["config"])
    holders = load_holders(Settings.for_profile(args.profile))
    images, _ = training_set(holders)
    masks = np.load(args.run / f"subsets_{args.kind}.npy")
    targets = np.load(args.run / "targets.npy")
    losses = np.stack(
        [np.load(p / "loss.npy") for p in sorted((args.run / "retrain" / args.kind).iterdir())]
    )  # (J, M), all with the run's training seed
    per_seed = [losses[args.subset]]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(1, args.seeds):
            dcfg = dataclasses.replace(cfg.diffusion(), seed=cfg.seed + k, num_threads=None)
            out = Path(tmp) / f"seed_{k}"
            train_round(images[masks[args.subset]], out, dcfg, progress=False)
            unet, scheduler = load_checkpoint(out)
            per_seed.append(
                measured_loss(unet, scheduler, targets, cfg.eval_timesteps, cfg.seed + 2)
            )
            shutil.rmtree(out)
    seeds = np.stack(per_seed)  # (S, M)
    result = {
        "run": str(args.run),
        "kind": args.kind,
        "subset": args.subset,
        "n_seeds": args.seeds,
        "n_subsets": int(losses.shape[0]),
        "across_subsets_std": float(losses.std(0, ddof=1).mean()),
        "across_seeds_std": float(seeds.std(0, ddof=1).mean()),
        "seconds": round(time.perf_counter() - start, 1),
    }
    result["noise_to_signal"] = result["across_seeds_std"] / result["across_subsets_std"]
    print(json.dumps(result, indent=2))  # noqa: T201 (a bench script prints its figures)


if __name__ == "__main__":
    main()
