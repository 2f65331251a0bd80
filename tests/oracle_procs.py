"""Shared set-up of the tests that run the node and the API as real processes: a tiny funded
campaign on an anvil node (deployed with the dev accounts), and ``python -m offchain serve``
on a free loopback port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from offchain.config import Settings
from offchain.oracle import operations
from offchain.oracle.deployment import Deployment, load_deployment

ROOT = Path(__file__).resolve().parents[1]
FUNDING_WEI = 1000 * 10**18

TINY_ENV = (
    "CCOMP_N_HOLDERS=4",
    "CCOMP_HOLDER_SIZES=[6,8,10,12]",
    "CCOMP_N_ROUNDS=2",
    "CCOMP_N_SAMPLES=4",
    "CCOMP_TRAIN_STEPS=8",
    "CCOMP_PROJ_DIM=32",
    "CCOMP_TRAK_TIMESTEPS=2",
    "CCOMP_QUALITY_SAMPLES=8",
    "CCOMP_QUALITY_CLASSIFIER_EPOCHS=1",
    f"CCOMP_TOTAL_BUDGET_WEI={FUNDING_WEI}",
)
"""Tiny settings as an env file, so every process of a test (``run-round --config``, ``serve``)
reads the same values (they match the ``tiny`` profile, which ``--profile`` also selects)."""


def tiny_campaign(
    tmp: Path, rpc_url: str, extra: Sequence[str] = ()
) -> tuple[Path, Settings, Deployment, int]:
    """Write ``<tmp>/ccomp.env`` (tiny settings, ``extra`` lines last), deploy, create and fund
    a campaign with the dev accounts; (env file, settings, deployment, campaign id)."""
    env_file = tmp / "ccomp.env"
    lines = [f"CCOMP_RPC_URL={rpc_url}", f"CCOMP_RUN_DIR={tmp / 'run'}", *TINY_ENV, *extra]
    env_file.write_text("\n".join(lines) + "\n")
    settings = Settings(_env_file=env_file)
    deployment = operations.deploy(settings, dev=True)
    campaign_id = operations.create_campaign(settings, deployment, dev=True)
    deployment = load_deployment(settings)
    operations.fund(settings, deployment, campaign_id, FUNDING_WEI, dev=True)
    return env_file, settings, deployment, campaign_id


def child_env(**extra: str) -> dict[str, str]:
    """This environment without ``CCOMP_*`` variables, offline, one OpenMP thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCOMP_")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def offchain(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    """Run ``python -m offchain <args>`` to completion, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "offchain", *args],
        cwd=ROOT,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, object]:
    """(status, JSON body or text) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@contextmanager
def served(run_dir: Path, log: Path, *extra: str) -> Iterator[str]:
    """``python -m offchain serve --run-dir <run_dir> <extra>`` on a free port until the block
    ends; yields its base URL once ``/health`` answers."""
    port = free_port()
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "offchain",
                "serve",
                "--run-dir",
                str(run_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *extra,
            ],
            cwd=ROOT,
            env=child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if get(base + "/health")[0] == 200:
                        break
                except OSError:
                    pass
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.2)
            yield base
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
