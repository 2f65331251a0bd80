"""How much slower a round's training gets when a second torch process computes on the same CPUs.

Runs the demo's training workload (the 651k-parameter DDPM, 512 MNIST digits of 16 × 16,
``--steps`` optimizer steps) in a fresh process, alone and next to a competing torch process
that trains the same model in a loop, under two environments:

- ``torch defaults``: ``OMP_NUM_THREADS`` and ``GOMP_SPINCOUNT`` unset (the state before the
  project chose them);
- ``project``: what ``python -m offchain`` sets (:func:`offchain.cpu.configure_openmp`).

The competitor runs with the same environment as the measured process (two of our runs side by
side), and, in a last row, with torch's defaults while the measured one uses the project's (a
foreign, busy-waiting neighbour). Prints seconds and slowdowns; nothing is written.

    .venv/bin/python bench/cpu_contention.py [--steps 40] [--spincount N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from offchain.cpu import configure_openmp  # noqa: E402

WORKER = """
import sys, tempfile, time
from pathlib import Path
import numpy as np
from offchain.data.holders import mnist_holders, training_set
from offchain.diffusion import DiffusionConfig, train_round
images, _ = training_set(mnist_holders(n_holders=8, seed=0), np.ones(8, bool))
steps, repeat = int(sys.argv[1]), sys.argv[2] == "loop"
while True:
    started = time.perf_counter()
    train_round(images, Path(tempfile.mkdtemp()) / "ckpt", DiffusionConfig(train_steps=steps),
                progress=False)
    if not repeat:
        print(f"{time.perf_counter() - started:.2f}", flush=True)
        break
"""


def _environment(project: bool, spincount: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    if project:
        if spincount is not None:  # try another spin budget than the project's
            env["GOMP_SPINCOUNT"] = spincount
        configure_openmp(env)
    return env


def _timed(steps: int, env: dict[str, str]) -> float:
    done = subprocess.run([sys.executable, "-c", WORKER, str(steps), "once"], env=env,
                          cwd=ROOT, capture_output=True, text=True, check=True, timeout=3600)
    return float(done.stdout.split()[-1])


def _next_to(steps: int, env: dict[str, str], neighbour_env: dict[str, str]) -> float:
    neighbour = subprocess.Popen([sys.executable, "-c", WORKER, "1000000", "loop"],
                                 env=neighbour_env, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        time.sleep(5)  # the neighbour has imported torch and is training
        return _timed(steps, env)
    finally:
        neighbour.kill()
        neighbour.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps measured")
    parser.add_argument("--spincount", help="GOMP_SPINCOUNT to try instead of the project's")
    args = parser.parse_args()
    defaults, project = _environment(False), _environment(True, args.spincount)
    print(f"CPUs: {os.cpu_count()} on the machine, project threads "
          f"{project['OMP_NUM_THREADS']}, GOMP_SPINCOUNT {project['GOMP_SPINCOUNT']}; "
          f"{args.steps} training steps of the demo model")
    rows = []
    for name, env in (("torch defaults", defaults), ("project", project)):
        alone = _timed(args.steps, env)
        loaded = _next_to(args.steps, env, env)
        rows.append((name, alone, loaded, "same environment"))
    loaded = _next_to(args.steps, project, defaults)
    rows.append(("project", rows[1][1], loaded, "torch defaults (busy-waiting)"))
    best_alone = min(r[1] for r in rows)
    print(f"{'environment':<15} {'alone s':>8} {'loaded s':>9} {'slowdown':>9} "
          f"{'vs best alone':>14}  neighbour")
    for name, alone, loaded, neighbour in rows:
        print(f"{name:<15} {alone:>8.1f} {loaded:>9.1f} {loaded / alone:>8.1f}× "
              f"{loaded / best_alone:>13.1f}×  {neighbour}")


if __name__ == "__main__":
    main()
