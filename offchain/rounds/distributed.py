"""Distributed round stages: one stage run in N processes with Hugging Face ``accelerate``.

:func:`launch_stage` runs a stage of one round (``train``: data-parallel LoRA training;
``featurize``: TRAK featurization sharded by example) under::

    accelerate launch [--config_file <cfg.accelerate_config>] --num_processes <N> \\
        [--multi_gpu --num_machines 1 --main_process_port <free port> ...] \\
        -m offchain.rounds.distributed <stage> <run_dir> <round_id> <MLConfig JSON file>

waits for it, and raises :class:`~offchain.errors.StageError` naming the stage and the exit
code when any process died, so the round runner records the stage as failed and re-runs it
later; the stages' resumable state (``checkpoint.partial/``, the feature stores' done-masks)
makes the rerun cheap. Without an accelerate config file, ``--multi_gpu`` starts N local
processes through torchrun: one per GPU, or N gloo processes on the CPU (the stages create
their accelerate state with ``cpu=True`` when the round's device is the CPU). With a config
file (``accelerate config``: several GPUs, several machines) the file decides the rest.

Several machines: with a config whose ``num_machines`` > 1 (this machine's ``machine_rank`` 0,
``main_process_ip``/``main_process_port`` of this machine), every other machine must start the
same launch with its own config at the same time. :func:`launch_stage` then also writes a
launch request, ``<round dir>/.distributed-<stage>.launch.json`` (stage, round, MLConfig file
name, process count, a unique ``launch_id``), before starting its processes and removes it when
they end; ``offchain follow-launches`` (:func:`offchain.rounds.follow.follow_launches`), left
running on each other machine over the shared run folder, starts its part of each request.

The worker entry point (``python -m offchain.rounds.distributed``, what each process runs)
rebuilds :class:`~offchain.layout.RoundPaths` and the :class:`~offchain.rounds.config.MLConfig`
(with ``num_processes = 1``, so the stage runs in this process and never launches again), arms
the fault point given with ``--fault-kill`` (:mod:`offchain.faults`; the launcher passes its
``fault_point``) and calls the stage function. Stages: the names of :data:`WORKER_STAGES`, or ``<module>:<function>`` taking
``(paths, cfg)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

import offchain
from offchain.errors import ConfigError, StageError
from offchain.faults import arm
from offchain.layout import RoundPaths
from offchain.rounds.config import MLConfig
from offchain.utils import write_json

__all__ = ["LAUNCH_REQUEST_GLOB", "WORKER_STAGES", "accelerate_command", "launch_request_path",
           "launch_stage", "machine_config", "main", "worker_env"]

logger = logging.getLogger(__name__)

WORKER_STAGES = {
    "train": "offchain.rounds.stages:train",
    "featurize": "offchain.rounds.stages:featurize",
}
"""Stage names the worker accepts, and the ``(paths, cfg)`` functions they run."""

LAUNCH_REQUEST_GLOB = "round_*/.distributed-*.launch.json"
"""Where, under a run folder, the launch requests of multi-machine launches lie."""


def machine_config(accelerate_config: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings of an ``accelerate config`` YAML file, with ``num_machines`` (default 1)
    and ``machine_rank`` (default 0) as ints.

    Raises:
        ConfigError: the file is missing, is not YAML, is not a mapping, or its
            ``num_machines``/``machine_rank`` are not integers."""
    path = Path(accelerate_config)
    try:
        settings = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the accelerate config {path}: {exc}") from exc
    if not isinstance(settings, dict):
        raise ConfigError(f"the accelerate config {path} is not a YAML mapping of settings")
    try:
        settings["num_machines"] = int(settings.get("num_machines", 1))
        settings["machine_rank"] = int(settings.get("machine_rank", 0))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the accelerate config {path}: num_machines and machine_rank must "
                          f"be integers ({exc})") from exc
    return settings


def launch_request_path(paths: RoundPaths, stage: str) -> Path:
    """``<round dir>/.distributed-<stage>.launch.json``: the request that tells the other
    machines of a multi-machine launch to start their part of ``stage``."""
    return paths.dir / f".distributed-{stage.replace(':', '-')}.launch.json"


def worker_env() -> dict[str, str]:
    """The environment of a launch: this process's, with the ``offchain`` package's folder
    first on ``PYTHONPATH``, ``OMP_NUM_THREADS`` 1 and ``HF_HUB_OFFLINE`` 1 unless set."""
    env = dict(os.environ)
    package_root = str(Path(offchain.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def _write_launch_request(stage: str, paths: RoundPaths, cfg: MLConfig, cfg_file: Path,
                          fault_point: str | None) -> Path | None:
    """Write the launch request of a multi-machine launch (atomically; None, and nothing
    written, when ``cfg.accelerate_config`` is unset or names a single machine).

    Raises:
        ConfigError: the accelerate config cannot be read, or is this machine's with a
            ``machine_rank`` other than 0 (the node runs machine 0)."""
    if cfg.accelerate_config is None:
        return None
    settings = machine_config(cfg.accelerate_config)
    if settings["num_machines"] < 2:
        return None
    if settings["machine_rank"] != 0:
        raise ConfigError(f"the node's accelerate config {cfg.accelerate_config} has "
                          f"machine_rank {settings['machine_rank']}; the node is machine 0 "
                          "(the other machines run `offchain follow-launches`)")
    request = launch_request_path(paths, stage)
    write_json(request, {
        "stage": stage, "round_id": paths.round_id, "cfg_file": cfg_file.name,
        "num_processes": cfg.num_processes, "num_machines": settings["num_machines"],
        "fault_point": fault_point, "launch_id": uuid.uuid4().hex, "time": time.time(),
        "host": socket.gethostname(),
    })
    return request


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the launch's rendezvous port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accelerate_command(stage: str, paths: RoundPaths, cfg: MLConfig, cfg_file: Path,
                       port: int | None = None, fault_point: str | None = None) -> list[str]:
    """The ``accelerate launch`` argv that runs ``stage`` of ``paths``' round in
    ``cfg.num_processes`` processes, each reading the MLConfig JSON ``cfg_file``.

    Without ``cfg.accelerate_config``: ``--multi_gpu --num_processes N --num_machines 1
    --mixed_precision no --dynamo_backend no --main_process_port <port>`` (the stages set their
    own mixed precision); with it: ``--config_file <file> --num_processes N`` and the file's
    settings. ``port`` None: a free local port. ``fault_point``: armed in every process."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if cfg.accelerate_config is not None:
        cmd += ["--config_file", str(cfg.accelerate_config),
                "--num_processes", str(cfg.num_processes)]
    else:
        cmd += ["--multi_gpu", "--num_processes", str(cfg.num_processes), "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(port if port is not None else _free_port())]
    worker = ["-m", "offchain.rounds.distributed", stage, str(paths.run_dir),
              str(paths.round_id), str(cfg_file)]
    return [*cmd, *worker, *(["--fault-kill", fault_point] if fault_point else [])]


def launch_stage(stage: str, paths: RoundPaths, cfg: MLConfig,
                 timeout: float | None = None, fault_point: str | None = None) -> None:
    """Run ``stage`` of ``paths``' round under ``accelerate launch`` with ``cfg.num_processes``
    processes and wait for all of them.

    The MLConfig travels as JSON in ``<round dir>/.distributed-<stage>.json`` (removed after
    a successful run). With an accelerate config of several machines, the launch request
    ``<round dir>/.distributed-<stage>.launch.json`` is written before the processes start and
    removed when they end (success or failure), for the other machines'
    ``offchain follow-launches``; ``cfg.num_processes`` is then the total over all machines.
    The processes inherit this process's environment, with the ``offchain``
    package's folder put first on ``PYTHONPATH`` and ``OMP_NUM_THREADS`` 1 unless set; each
    arms ``fault_point`` (a :mod:`offchain.faults` point name, for the kill tests). Their
    output goes to this process's stdout/stderr.

    Raises:
        ConfigError: ``stage`` is neither a name of :data:`WORKER_STAGES` nor
            ``<module>:<function>``, ``cfg.num_processes`` < 2 (run the stage in-process),
            or the accelerate config is unreadable or not machine 0's.
        StageError: a process died or failed (the exit code is named), or ``timeout`` seconds
            passed.
    """
    if stage not in WORKER_STAGES and ":" not in stage:
        raise ConfigError(f"unknown distributed stage {stage!r}; expected one of "
                          f"{sorted(WORKER_STAGES)} or <module>:<function>")
    if cfg.num_processes < 2:
        raise ConfigError(f"launch_stage needs num_processes ≥ 2, got {cfg.num_processes}")
    cfg_file = paths.dir / f".distributed-{stage.replace(':', '-')}.json"
    write_json(cfg_file, dataclasses.asdict(cfg))
    request = _write_launch_request(stage, paths, cfg, cfg_file, fault_point)
    cmd = accelerate_command(stage, paths, cfg, cfg_file, fault_point=fault_point)
    logger.info("round %d: %s in %d processes: %s", paths.round_id, stage, cfg.num_processes,
                " ".join(cmd))
    try:
        code = subprocess.run(cmd, env=worker_env(), timeout=timeout, check=False).returncode
    except subprocess.TimeoutExpired as exc:
        raise StageError(f"distributed stage {stage} of round {paths.round_id} ran past "
                         f"{timeout} s") from exc
    finally:
        if request is not None:
            request.unlink(missing_ok=True)
    if code != 0:
        raise StageError(f"distributed stage {stage} of round {paths.round_id} failed: "
                         f"accelerate launch exited with code {code} (a process died or "
                         "raised; a rerun resumes from its saved state)")
    cfg_file.unlink(missing_ok=True)


def _stage_function(stage: str) -> Callable[[RoundPaths, MLConfig], object]:
    """The ``(paths, cfg)`` function of a stage name or ``<module>:<function>``.

    Raises:
        ConfigError: the name, module or function does not exist."""
    target = WORKER_STAGES.get(stage, stage)
    module_name, _, function = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"distributed stage {stage!r} ({target}) is not importable: "
                          f"{exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """The worker: ``<stage> <run_dir> <round_id> <MLConfig JSON file> [--fault-kill <point>]``
    → runs the stage in this process (one of the launch's); returns 0 (errors propagate: the
    process fails)."""
    parser = argparse.ArgumentParser(prog="python -m offchain.rounds.distributed",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("stage")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("round_id", type=int)
    parser.add_argument("cfg_file", type=Path)
    parser.add_argument("--fault-kill", default=None, help="fault point to arm")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format=f"[rank {os.environ.get('RANK', '0')}] %(levelname)s %(message)s")
    arm(args.fault_kill)
    fields = json.loads(args.cfg_file.read_text())
    cfg = MLConfig(**{**fields, "num_processes": 1})
    _stage_function(args.stage)(RoundPaths(args.run_dir, args.round_id), cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
