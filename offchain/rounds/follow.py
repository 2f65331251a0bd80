"""The other machines' half of a multi-machine launch: follow the node's launch requests.

With an ``accelerate config`` of several machines, the node (machine 0) writes a launch request
``<run_dir>/round_<NNN>/.distributed-<stage>.launch.json`` before each distributed stage
(:func:`offchain.rounds.distributed.launch_stage`) and removes it when its processes end. Every
other machine runs :func:`follow_launches` (``offchain follow-launches``) once and leaves it
running: it polls the shared run folder and, for each request it has not run yet (by
``launch_id``), starts its own part of the launch::

    accelerate launch --config_file <this machine's YAML> --num_processes <N> \\
        -m offchain.rounds.distributed <stage> <run_dir> <round_id> <MLConfig JSON file>

so the rendezvous at the config's ``main_process_ip:main_process_port`` completes. Each request
runs at most once per machine: the launch ids it started are remembered in memory and in
``<run_dir>/.followers/<hostname>-<machine_rank>.json`` (a restarted follower skips them). A
request whose MLConfig file is gone (the launch is over) is skipped; when the request
disappears while this machine's processes still run (the node's launch ended or died), they are
stopped after ``orphan_grace_s`` seconds.

The run folder must be the same shared folder on every machine, and the MLConfig's paths (the
model folder, the cache) must exist on every machine: mount them at the same paths.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from offchain.errors import ConfigError
from offchain.layout import RoundPaths
from offchain.rounds.config import MLConfig
from offchain.rounds.distributed import (
    LAUNCH_REQUEST_GLOB,
    accelerate_command,
    machine_config,
    worker_env,
)
from offchain.utils import read_json, write_json

__all__ = ["follow_launches", "follower_state_path"]

logger = logging.getLogger(__name__)

_KEPT_RECORDS = 1000
"""Launch records the state file keeps (the newest)."""


def _follower_rank(accelerate_config: Path) -> dict[str, Any]:
    """The settings of a secondary machine's accelerate config.

    Raises:
        ConfigError: unreadable, a single-machine config, or ``machine_rank`` 0 (the node's)."""
    settings = machine_config(accelerate_config)
    if settings["num_machines"] < 2:
        raise ConfigError(f"{accelerate_config} is not a multi-machine accelerate config "
                          f"(num_machines {settings['num_machines']}); follow-launches needs "
                          "num_machines ≥ 2")
    rank = settings["machine_rank"]
    if not 0 < rank < settings["num_machines"]:
        raise ConfigError(f"{accelerate_config} has machine_rank {rank}: machine 0 is the node "
                          "(it launches the stages itself); a follower's machine_rank is 1 … "
                          f"{settings['num_machines'] - 1}")
    return settings


def follower_state_path(run_dir: Path, machine_rank: int, host: str | None = None) -> Path:
    """``<run_dir>/.followers/<hostname>-<machine_rank>.json``: the launches this machine's
    follower started (launch_id → stage, round_id, exit_code, times)."""
    return Path(run_dir) / ".followers" / f"{host or socket.gethostname()}-{machine_rank}.json"


def _read_request(path: Path) -> dict[str, Any] | None:
    """A launch request, or None when it vanished or is not (yet) a complete request."""
    try:
        request = read_json(path)
    except (OSError, ValueError):
        return None
    keys = ("stage", "round_id", "cfg_file", "num_processes", "launch_id")
    return request if isinstance(request, dict) and all(k in request for k in keys) else None


def _run_launch(cmd: list[str], request_path: Path, launch_id: str,
                orphan_grace_s: float, poll_s: float) -> int:
    """Run this machine's part of a launch; stop it ``orphan_grace_s`` after its request
    vanished or was replaced. Returns the exit code of ``accelerate launch``."""
    process = subprocess.Popen(cmd, env=worker_env())
    orphaned_at = None
    try:
        while (code := process.poll()) is None:
            current = _read_request(request_path)
            if current is None or current["launch_id"] != launch_id:
                orphaned_at = orphaned_at or time.monotonic()
                if time.monotonic() - orphaned_at > orphan_grace_s:
                    logger.warning("launch %s: the node's request is gone; stopping this "
                                   "machine's processes", launch_id)
                    process.terminate()
                    return process.wait()
            time.sleep(min(poll_s, 1.0))
        return code
    finally:
        if process.poll() is None:  # interrupted (Ctrl-C): take the launch down with us
            process.terminate()
            process.wait()


def _follow_one(run_dir: Path, config: Path, settings: dict[str, Any], path: Path,
                request: dict[str, Any], echo: Callable[[str], None],
                orphan_grace_s: float, poll_s: float) -> dict[str, Any]:
    """Run (or skip) one new request; the record for the state file."""
    round_id, stage = int(request["round_id"]), str(request["stage"])
    record: dict[str, Any] = {"stage": stage, "round_id": round_id, "started": time.time()}
    cfg_file = path.parent / str(request["cfg_file"])
    what = f"round {round_id} {stage} (launch {request['launch_id']})"
    if int(request.get("num_machines", settings["num_machines"])) != settings["num_machines"]:
        record["skipped"] = (f"the node launches on {request['num_machines']} machines, this "
                             f"config names {settings['num_machines']}")
    elif not cfg_file.is_file():
        record["skipped"] = f"its MLConfig file {cfg_file.name} is gone (the launch is over)"
    if "skipped" in record:
        echo(f"skipped {what}: {record['skipped']}")
        return record
    try:
        cfg = MLConfig(**read_json(cfg_file))
    except (OSError, ValueError, TypeError, ConfigError) as exc:
        record["skipped"] = f"its MLConfig file {cfg_file.name} is unreadable: {exc}"
        echo(f"skipped {what}: {record['skipped']}")
        return record
    cfg = dataclasses.replace(cfg, accelerate_config=str(config),
                              num_processes=int(request["num_processes"]))
    cmd = accelerate_command(stage, RoundPaths(run_dir, round_id), cfg, cfg_file,
                             fault_point=request.get("fault_point"))
    echo(f"running {what} on machine {settings['machine_rank']}: {' '.join(cmd)}")
    record["exit_code"] = _run_launch(cmd, path, str(request["launch_id"]), orphan_grace_s,
                                      poll_s)
    record["finished"] = time.time()
    echo(f"{what} exited with code {record['exit_code']}")
    return record


def follow_launches(run_dir: str | Path, accelerate_config: str | Path, *, poll_s: float = 1.0,
                    stop: threading.Event | None = None, once: bool = False,
                    echo: Callable[[str], None] | None = None,
                    orphan_grace_s: float = 60.0) -> dict[str, dict[str, Any]]:
    """Follow the node's multi-machine launches under ``run_dir`` and run this machine's part
    of each, with ``accelerate_config`` (this machine's YAML: ``num_machines`` ≥ 2,
    ``machine_rank`` ≥ 1).

    Polls ``run_dir/round_*/`` every ``poll_s`` seconds until ``stop`` is set (or after one
    pass with ``once``). Each request runs at most once (by ``launch_id``, also across restarts
    through :func:`follower_state_path`); its exit code is logged and recorded, and a failed
    launch does not stop the follower. ``echo`` gets a line per launch run or skipped (default:
    the log). Returns the records of the requests handled by this call (launch_id → stage,
    round_id, started, and exit_code and finished, or skipped with the reason).

    Raises:
        ConfigError: ``run_dir`` is not a folder, or ``accelerate_config`` is unreadable, a
            single-machine config, or machine 0's (the node's)."""
    run_dir, config = Path(run_dir), Path(accelerate_config).resolve()
    if not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} does not exist")
    settings = _follower_rank(config)
    echo = echo or logger.info
    state_path = follower_state_path(run_dir, settings["machine_rank"])
    state = read_json(state_path) if state_path.is_file() else {"launches": {}}
    handled: dict[str, dict[str, Any]] = {}
    while True:
        requests = ((p, _read_request(p)) for p in sorted(run_dir.glob(LAUNCH_REQUEST_GLOB)))
        for path, request in sorted(((p, r) for p, r in requests if r is not None),
                                    key=lambda pr: float(pr[1].get("time", 0))):
            launch_id = str(request["launch_id"])
            if launch_id in state["launches"]:
                continue
            state["launches"][launch_id] = {"started": time.time(), "running": True}
            write_json(state_path, state)  # a follower killed mid-launch never reruns it
            record = _follow_one(run_dir, config, settings, path, request, echo,
                                 orphan_grace_s, poll_s)
            handled[launch_id] = state["launches"][launch_id] = record
            state["launches"] = dict(list(state["launches"].items())[-_KEPT_RECORDS:])
            write_json(state_path, state)
        if once or (stop is not None and stop.wait(poll_s)):
            return handled
        if stop is None:
            time.sleep(poll_s)
