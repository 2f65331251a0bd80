"""Several machines: the node (machine 0) launches a distributed stage with a multi-machine
accelerate config and writes a launch request; ``follow_launches`` on machine 1 runs its part.

Here both "machines" are this one: two accelerate config files (num_machines 2, machine_rank 0
and 1, main_process_ip 127.0.0.1), one process each (2 in total, gloo on the CPU).

- a 2-machine TRAK featurization gives bit-identical features and the same scores as one
  process, and the follower runs the launch once (about 15 s);
- the follower's bookkeeping: requests whose MLConfig file is gone are skipped, a launch id is
  never run twice (also after a restart), configs that are not a follower's are refused;
- a failed node launch removes its request;
- the train stage on two machines follows the loss curve of one process (slow).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sd_fixture import build_tiny_sd
from test_distributed import N_TARGETS, N_TRAIN, _round, _scores
from typer.testing import CliRunner

from offchain.cli.main import app
from offchain.errors import ConfigError, StageError
from offchain.layout import RoundPaths
from offchain.rounds import stages
from offchain.rounds.config import MLConfig
from offchain.rounds.distributed import launch_request_path, launch_stage
from offchain.rounds.follow import follow_launches, follower_state_path
from offchain.utils import read_json, write_json

TESTS = Path(__file__).resolve().parent


def machine_yaml(path: Path, machine_rank: int, port: int, num_machines: int = 2) -> Path:
    """An accelerate config of machine ``machine_rank`` of ``num_machines`` (one process each)
    with the rendezvous at 127.0.0.1:``port`` (the documented example)."""
    path.write_text(f"""\
compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
machine_rank: {machine_rank}
main_process_ip: 127.0.0.1
main_process_port: {port}
main_training_function: main
mixed_precision: 'no'
num_machines: {num_machines}
num_processes: {num_machines}
rdzv_backend: static
same_network: true
use_cpu: false
""")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def tests_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The launched processes import test_distributed's stage functions."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _request(paths: RoundPaths, stage: str, launch_id: str, cfg_file: str) -> Path:
    request = launch_request_path(paths, stage)
    write_json(request, {"stage": stage, "round_id": paths.round_id, "cfg_file": cfg_file,
                         "num_processes": 2, "num_machines": 2, "fault_point": None,
                         "launch_id": launch_id, "time": time.time(), "host": "node"})
    return request


# --- fast: bookkeeping and errors -----------------------------------------------------------


def test_a_request_whose_config_is_gone_is_skipped_once(tmp_path) -> None:
    run = tmp_path / "run"
    paths = RoundPaths(run, 2)
    paths.dir.mkdir(parents=True)
    _request(paths, "featurize", "a1", ".distributed-featurize.json")  # no such cfg file
    config = machine_yaml(tmp_path / "m1.yaml", 1, 29500)
    lines: list[str] = []

    handled = follow_launches(run, config, once=True, echo=lines.append)
    assert list(handled) == ["a1"] and "is gone" in handled["a1"]["skipped"]
    assert handled["a1"]["round_id"] == 2 and "exit_code" not in handled["a1"]
    assert len(lines) == 1 and lines[0].startswith("skipped round 2 featurize (launch a1)")
    state = read_json(follower_state_path(run, 1))
    assert state["launches"]["a1"]["skipped"] == handled["a1"]["skipped"]

    # a restarted follower remembers it; a new launch id is new
    assert follow_launches(run, config, once=True, echo=lines.append) == {}
    _request(paths, "featurize", "a2", ".distributed-featurize.json")
    assert list(follow_launches(run, config, once=True, echo=lines.append)) == ["a2"]
    assert len(lines) == 2


def test_a_request_for_another_machine_count_is_skipped(tmp_path) -> None:
    run = tmp_path / "run"
    paths = RoundPaths(run, 1)
    paths.dir.mkdir(parents=True)
    write_json(paths.dir / ".distributed-train.json", {})
    _request(paths, "train", "b1", ".distributed-train.json")
    config = machine_yaml(tmp_path / "m1.yaml", 1, 29500, num_machines=3)
    handled = follow_launches(run, config, once=True, echo=lambda line: None)
    assert "on 2 machines, this config names 3" in handled["b1"]["skipped"]


def test_the_follower_refuses_configs_that_are_not_a_secondary_machines(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match="machine 0 is the node"):
        follow_launches(tmp_path / "run", machine_yaml(tmp_path / "m0.yaml", 0, 29500),
                        once=True)
    single = tmp_path / "one.yaml"
    single.write_text("distributed_type: MULTI_GPU\nnum_machines: 1\nnum_processes: 2\n")
    with pytest.raises(ConfigError, match="not a multi-machine accelerate config"):
        follow_launches(tmp_path / "run", single, once=True)
    with pytest.raises(ConfigError, match="cannot read the accelerate config"):
        follow_launches(tmp_path / "run", tmp_path / "missing.yaml", once=True)
    with pytest.raises(ConfigError, match="does not exist"):
        follow_launches(tmp_path / "nowhere", single, once=True)

    result = CliRunner().invoke(app, ["follow-launches", "--run-dir", str(tmp_path / "run"),
                                      "--accelerate-config", str(tmp_path / "m0.yaml")])
    assert result.exit_code == 1 and "machine 0 is the node" in result.output


def test_the_node_refuses_a_secondary_config_and_removes_a_failed_launchs_request(
        tmp_path, tests_on_path) -> None:
    paths = RoundPaths(tmp_path / "run", 1)
    paths.dir.mkdir(parents=True)
    cfg = MLConfig(num_processes=2,
                   accelerate_config=str(machine_yaml(tmp_path / "m1.yaml", 1, 29500)))
    with pytest.raises(ConfigError, match="machine_rank 1; the node is machine 0"):
        launch_stage("test_distributed:failing_stage", paths, cfg)
    assert not launch_request_path(paths, "test_distributed:failing_stage").exists()

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:  # the rendezvous port
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = machine_yaml(tmp_path / "m0.yaml", 0, busy.getsockname()[1])
        with pytest.raises(StageError, match="exited with code"):  # accelerate refuses the port
            launch_stage("test_distributed:failing_stage", paths,
                         dataclasses.replace(cfg, accelerate_config=str(config)), timeout=60)
    assert not launch_request_path(paths, "test_distributed:failing_stage").exists()


def test_the_cli_follower_prints_what_it_does_and_stops_on_ctrl_c(tmp_path) -> None:
    run = tmp_path / "run"
    paths = RoundPaths(run, 1)
    paths.dir.mkdir(parents=True)
    config = machine_yaml(tmp_path / "m1.yaml", 1, 29500)
    follower = subprocess.Popen(
        [sys.executable, "-m", "offchain", "follow-launches", "--run-dir", str(run),
         "--accelerate-config", str(config), "--poll-s", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # A shell's background job (`bash .ci/run &`) ignores SIGINT and its children inherit
        # that; a person's Ctrl-C reaches a follower whose SIGINT is the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    watchdog = threading.Timer(60, follower.kill)  # a hung follower fails the test, no hang
    watchdog.start()
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline().startswith("following launches in")
        _request(paths, "train", "c1", ".distributed-train.json")  # a launch already over
        line = follower.stdout.readline()
        assert line.startswith("skipped round 1 train (launch c1): its MLConfig file")
        follower.send_signal(signal.SIGINT)
        out, _ = follower.communicate(timeout=30)
    finally:
        watchdog.cancel()
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0 and out.strip() == "stopped"


# --- a real two-machine launch on localhost (about 15 s) --------------------------------------


def test_a_two_machine_featurization_equals_one_process(tmp_path, tests_on_path) -> None:
    sd_folder = build_tiny_sd(tmp_path / "tiny-sd")
    paths, cfg = _round(tmp_path, sd_folder, N_TRAIN + N_TARGETS)
    reference = _scores(paths, cfg, tmp_path / "one-process")  # in this process, no launch
    port = _free_port()
    node = dataclasses.replace(cfg, accelerate_config=str(machine_yaml(tmp_path / "m0.yaml", 0,
                                                                       port)))
    follower_config = machine_yaml(tmp_path / "m1.yaml", 1, port)
    stage = "test_distributed:featurize_stage"
    seen: list[dict] = []
    lines: list[str] = []
    stop = threading.Event()

    def echo(line: str) -> None:
        lines.append(line)
        request = launch_request_path(paths, stage)
        if line.startswith("running") and request.exists():
            seen.append(read_json(request))

    follower = threading.Thread(target=follow_launches, args=(paths.run_dir, follower_config),
                                kwargs={"poll_s": 0.2, "stop": stop, "echo": echo})
    follower.start()
    started = time.perf_counter()
    try:
        launch_stage(stage, paths, node, timeout=300)
    finally:
        time.sleep(0.5)  # the follower logs its exit code
        stop.set()
        follower.join(timeout=60)
    print(f"2-machine featurize launch: {time.perf_counter() - started:.1f} s")
    assert not launch_request_path(paths, stage).exists()  # removed by the node
    assert len(seen) == 1 and [line.split(" on machine")[0] for line in lines] == [
        f"running round 1 {stage} (launch {seen[0]['launch_id']})",
        f"round 1 {stage} (launch {seen[0]['launch_id']}) exited with code 0"]

    for name in ("train", "target"):
        folder = paths.trak_dir / "features"
        assert np.load(folder / f"{name}.done.npy").all()
        one = np.load(tmp_path / "one-process" / "features" / f"{name}.npy")
        assert np.array_equal(np.load(folder / f"{name}.npy"), one)  # bit-identical
    scores = _scores(paths, cfg, paths.trak_dir)
    print(f"scores 2 machines vs 1 process: max abs gap {np.abs(scores - reference).max():.2e}")
    np.testing.assert_allclose(scores, reference, rtol=0, atol=1e-6)

    # the same request again (say the node's file reappeared): the follower does not rerun it
    launch_request_path(paths, stage).write_text(json.dumps(seen[0]))
    assert follow_launches(paths.run_dir, follower_config, once=True) == {}
    state = read_json(follower_state_path(paths.run_dir, 1))
    assert state["launches"][seen[0]["launch_id"]]["exit_code"] == 0


@pytest.mark.slow
def test_two_machines_train_data_parallel_like_one_process(tmp_path, tests_on_path) -> None:
    """The round runner's train stage on machine 0 with machine 1 following: the loss curve and
    the adapter of one process."""
    paths, cfg = _round(tmp_path, build_tiny_sd(tmp_path / "tiny-sd"), 4, train_steps=3)
    one = RoundPaths(tmp_path / "one", 1)
    shutil.copytree(paths.dir, one.dir)
    stages.train(one, dataclasses.replace(cfg, num_processes=1))
    port = _free_port()
    node = dataclasses.replace(cfg, accelerate_config=str(machine_yaml(tmp_path / "m0.yaml", 0,
                                                                       port)))
    stop = threading.Event()
    follower = threading.Thread(
        target=follow_launches, args=(paths.run_dir, machine_yaml(tmp_path / "m1.yaml", 1, port)),
        kwargs={"poll_s": 0.2, "stop": stop, "echo": lambda line: None})
    follower.start()
    try:
        stages.train(paths, node)  # launch_stage("train", …) under the hood
    finally:
        stop.set()
        follower.join(timeout=60)
    log, ref = (read_json(p.checkpoint / "train_log.json") for p in (paths, one))
    assert log["num_processes"] == 2 and ref["num_processes"] == 1
    np.testing.assert_allclose(log["loss"], ref["loss"], rtol=1e-4, atol=1e-6)
    two_w, one_w = (load_file(p.checkpoint / "adapter_model.safetensors") for p in (paths, one))
    for key, value in one_w.items():
        torch.testing.assert_close(two_w[key], value, rtol=1e-4, atol=1e-6)
    state = read_json(follower_state_path(paths.run_dir, 1))
    assert [r["exit_code"] for r in state["launches"].values()] == [0]
