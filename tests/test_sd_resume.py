"""sd-lora training is resumable after a kill: a process SIGKILLed mid-round (fault point
``sd-lora:step:<n>``) leaves its training state in ``<out_dir>.partial``; a rerun resumes from it
and its adapter is bit-identical to an uninterrupted run's."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sd_fixture import TINY_SD_RESOLUTION, build_tiny_sd

from offchain.diffusion.sd_lora import (
    ADAPTER_FILE,
    SDLoraConfig,
    partial_dir,
    train_lora_round,
)
from offchain.errors import ConfigError, StageError
from offchain.utils import read_json

CAPTIONS = ["red apple", "blue", "red", ""]
STEPS, EVERY, KILL_AT = 12, 5, 8

_SCRIPT = """
import json, sys
import numpy as np
from offchain.diffusion.sd_lora import SDLoraConfig, train_lora_round
from offchain.faults import arm
cfg = SDLoraConfig(**json.loads(sys.argv[1]))
arm(sys.argv[3])
images = np.load(sys.argv[2])
train_lora_round(images, json.loads(sys.argv[4]), sys.argv[5], cfg, progress=False)
"""


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="module")
def cfg(sd_folder: Path) -> SDLoraConfig:
    return SDLoraConfig(model_path=str(sd_folder), resolution=TINY_SD_RESOLUTION,
                        train_steps=STEPS, batch_size=2, checkpoint_every=EVERY, num_threads=1,
                        device="cpu", seed=5)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, size=(4, 12, 12, 3), dtype=np.uint8)


def _killed_run(cfg: SDLoraConfig, images: np.ndarray, out_dir: Path, point: str) -> None:
    """Train in a subprocess armed to SIGKILL itself at ``point``; assert it died so."""
    np.save(out_dir.parent / "images.npy", images)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(dataclasses.asdict(cfg)),
         str(out_dir.parent / "images.npy"), point, json.dumps(CAPTIONS), str(out_dir)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def test_killed_round_resumes_bit_identical(cfg, images, tmp_path: Path) -> None:
    reference = train_lora_round(images, CAPTIONS, tmp_path / "ref" / "ckpt", cfg,
                                 progress=False)
    assert not partial_dir(reference).exists()  # removed once the checkpoint is complete

    out_dir = tmp_path / "run" / "ckpt"
    out_dir.parent.mkdir()
    _killed_run(cfg, images, out_dir, f"sd-lora:step:{KILL_AT}")
    assert not out_dir.exists()
    states = sorted(p.name for p in partial_dir(out_dir).iterdir())
    assert states == [f"step-{EVERY:08d}"]  # the state of step 5; step 8 was never saved

    train_lora_round(images, CAPTIONS, out_dir, cfg, progress=False)
    assert (out_dir / ADAPTER_FILE).read_bytes() == (reference / ADAPTER_FILE).read_bytes()
    log, ref_log = read_json(out_dir / "train_log.json"), read_json(reference / "train_log.json")
    assert log["resumed_from_step"] == EVERY and ref_log["resumed_from_step"] == 0
    assert log["loss"] == ref_log["loss"] and len(log["loss"]) == STEPS
    assert not partial_dir(out_dir).exists()


def test_state_of_another_request_is_refused(cfg, images, tmp_path: Path) -> None:
    out_dir = tmp_path / "ckpt"
    out_dir.parent.mkdir(exist_ok=True)
    _killed_run(cfg, images, out_dir, f"sd-lora:step:{EVERY + 1}")
    other = dataclasses.replace(cfg, learning_rate=2e-4)
    with pytest.raises(StageError, match=r"different request.*learning_rate"):
        train_lora_round(images, CAPTIONS, out_dir, other, progress=False)
    # how the run executes is not part of the request: another checkpoint_every resumes
    done = train_lora_round(images, CAPTIONS, out_dir, dataclasses.replace(cfg, checkpoint_every=3),
                            progress=False)
    assert read_json(done / "train_log.json")["resumed_from_step"] == EVERY


def test_checkpoint_every_is_validated() -> None:
    with pytest.raises(ConfigError, match="checkpoint_every"):
        SDLoraConfig(checkpoint_every=-1)
