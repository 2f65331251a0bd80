"""CPU threads of the ML stages: as many as this process may really use, and polite under load.

Two facts, measured on a 2-core machine with ``bench/cpu_contention.py`` (docs/toolchain.md):

- torch's OpenMP threads busy-wait between parallel regions. Next to a second torch process
  training on the same cores, each process's threads spin on cores the other one needs: 40
  training steps of the demo model took 78.0 s instead of 7.1 s (11×). Capping the spin
  (libgomp's ``GOMP_SPINCOUNT``, to :data:`GOMP_SPINCOUNT`) makes a waiting thread sleep soon:
  16.6 s under the same load (2.3×), and 7.2 s alone. The whole demo, alone, takes about 10 %
  longer (many short parallel regions in TRAK and sampling); a dedicated machine may set
  ``GOMP_SPINCOUNT=300000`` (libgomp's default), which is kept.
- torch sizes its thread pool from the machine's cores, not from the CPUs this process may run
  on (its affinity mask, a container's CPU quota); :func:`available_cpus` counts those.

:func:`configure_openmp` sets both through the environment, which OpenMP reads once, when torch
is first imported; the command line calls it on import. A value the user already set is kept.
"""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["GOMP_SPINCOUNT", "available_cpus", "configure_openmp", "cgroup_cpu_limit"]

GOMP_SPINCOUNT = "3000"
"""Busy-wait iterations of an idle OpenMP thread before it sleeps (libgomp's default is 300,000).
Measured, 40 demo training steps alone / next to a second training process
(``bench/cpu_contention.py --spincount N``): 3,000: 7.2 / 16.6 s; 1,000: 8.2 / 16.0 s; next to
a process multiplying matrices instead: 10,000: 6.5 / 19.9 s, ``OMP_WAIT_POLICY=PASSIVE``: 8.6 /
14.8 s, torch's defaults: 6.4 / 146.6 s."""

_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_limit(cpu_max: Path = _CGROUP_CPU_MAX) -> int | None:
    """CPUs a cgroup v2 quota allows (``cpu.max``: ``<quota µs> <period µs>``, rounded up), or
    None where there is no quota (``max``) or no such file."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def available_cpus(cpu_max: Path = _CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (≥ 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cpu_max)
    return max(1, min(cpus, limit) if limit is not None else cpus)


def configure_openmp(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set ``OMP_NUM_THREADS`` to :func:`available_cpus` and ``GOMP_SPINCOUNT`` to
    :data:`GOMP_SPINCOUNT` in ``environ`` (default ``os.environ``) unless already set; effective
    only before torch is imported. Returns the values now in force."""
    environ = os.environ if environ is None else environ
    environ.setdefault("OMP_NUM_THREADS", str(available_cpus()))
    environ.setdefault("GOMP_SPINCOUNT", GOMP_SPINCOUNT)
    return {name: environ[name] for name in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
