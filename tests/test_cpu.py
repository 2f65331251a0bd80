"""CPU threads: counted from what the process may use, set before torch loads, user values kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from offchain.cpu import GOMP_SPINCOUNT, available_cpus, cgroup_cpu_limit, configure_openmp

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000\n", 1),
     ("200000 100000\n", 2), ("", None), ("lots of cpus\n", None), ("100 0\n", None)],
)
def test_a_cgroup_quota_is_read_as_whole_cpus(tmp_path: Path, text: str, cpus: int | None) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(text)
    assert cgroup_cpu_limit(cpu_max) == cpus
    assert cgroup_cpu_limit(tmp_path / "missing") is None


def test_available_cpus_is_capped_by_the_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("100000 100000\n")
    assert available_cpus(cpu_max) == 1
    cpu_max.write_text("max 100000\n")
    assert available_cpus(cpu_max) == len(os.sched_getaffinity(0))


def _child(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip()


def test_available_cpus_follows_the_affinity_mask() -> None:
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from offchain.cpu import available_cpus; print(available_cpus())")
    assert _child(code) == "1"


def test_configure_openmp_fills_in_only_what_the_user_did_not_set() -> None:
    env: dict[str, str] = {}
    assert configure_openmp(env) == {"OMP_NUM_THREADS": str(available_cpus()),
                                     "GOMP_SPINCOUNT": GOMP_SPINCOUNT}
    mine = {"OMP_NUM_THREADS": "7", "GOMP_SPINCOUNT": "5"}
    assert configure_openmp(dict(mine)) == mine


def test_the_command_line_sets_them_before_torch_loads() -> None:
    code = ("import os, offchain.cli.main, torch; "
            "print(os.environ['GOMP_SPINCOUNT'], os.environ['OMP_NUM_THREADS'], "
            "torch.get_num_threads())")
    spin, threads, torch_threads = _child(code).split()
    assert spin == GOMP_SPINCOUNT
    assert int(threads) == int(torch_threads) == available_cpus()
    # a value the user chose wins, and torch uses it
    assert _child(code, OMP_NUM_THREADS="1").split()[1:] == ["1", "1"]
