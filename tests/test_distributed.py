"""Scale-out with accelerate: a stage launched in 2 CPU processes (gloo) through
:func:`offchain.rounds.distributed.launch_stage`.

- TRAK featurization sharded by batch across 2 processes into the one feature store gives
  bit-identical features and equal scores to one process;
- data-parallel sd-lora training (each process half of the same seeded global batch), killed
  in both processes and relaunched, resumes and follows the loss curve of one process;
- a process that fails makes the stage fail with a StageError naming it and the exit code;
- the feature store's per-rank files merge, also those a killed run left behind.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sd_fixture import TINY_SD_RESOLUTION, build_tiny_sd

from offchain.attribution.featurize import FeatureStore
from offchain.attribution.trak import TrakConfig
from offchain.attribution.trak_attributor import TrakAttributor
from offchain.diffusion.sd_lora import SDLoraBackend, SDLoraConfig
from offchain.errors import ConfigError, StageError
from offchain.layout import RoundPaths
from offchain.rounds.config import MLConfig
from offchain.rounds.distributed import accelerate_command, launch_stage
from offchain.utils import read_json, write_json

TESTS = Path(__file__).resolve().parent
N_TRAIN, N_TARGETS = 8, 4


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture
def tests_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The launched processes import this module's stage functions."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


# --- worker stages (run in every launched process) -----------------------------------------


def _attributor(cfg: MLConfig) -> TrakAttributor:
    trak = TrakConfig(proj_dim=cfg.proj_dim, num_timesteps=cfg.trak_timesteps, batch_size=2)
    return TrakAttributor(trak, ensemble=cfg.trak_ensemble, device="cpu")


def _featurize_inputs(paths: RoundPaths, cfg: MLConfig):
    """The tiny sd-lora model (adapters from seed 3), latents of 8 training images and 4
    targets, and their captions: what an attribute stage hands the attributor."""
    backend = SDLoraBackend(SDLoraConfig(model_path=cfg.model_path,
                                         resolution=TINY_SD_RESOLUTION))
    model = backend.build(3)
    images = np.load(paths.train_images)
    with torch.no_grad():
        latents = model.encode_images(backend.preprocess(images))
    captions = [str(c) for c in read_json(paths.train_captions)]
    return (model, latents[:N_TRAIN], latents[N_TRAIN:], captions[:N_TRAIN],
            captions[N_TRAIN:])


def featurize_stage(paths: RoundPaths, cfg: MLConfig) -> None:
    """A featurize stage: every process shares the feature stores' rows. Rank 1's own inputs
    are off by 1e-3 (as latents encoded on another GPU could be): the attributor featurizes the
    main process's."""
    from accelerate import PartialState

    model, train, targets, train_captions, target_captions = _featurize_inputs(paths, cfg)
    if PartialState(cpu=True).process_index == 1:
        train, targets = train + 1e-3, targets + 1e-3
    _attributor(cfg).featurize(model, train, targets, paths.trak_dir, seed=cfg.seed,
                               progress=False, train_captions=train_captions,
                               target_captions=target_captions)


def failing_stage(paths: RoundPaths, cfg: MLConfig) -> None:
    """Rank 1 fails."""
    from accelerate import PartialState

    if PartialState(cpu=True).process_index == 1:
        raise RuntimeError("rank 1 failed on purpose")


def _scores(paths: RoundPaths, cfg: MLConfig, trak_dir: Path) -> np.ndarray:
    model, train, targets, train_captions, target_captions = _featurize_inputs(paths, cfg)
    return _attributor(cfg).scores(model, train, targets, trak_dir, seed=cfg.seed,
                                   progress=False, train_captions=train_captions,
                                   target_captions=target_captions)


def _round(tmp_path: Path, sd_folder: Path, n_images: int, **fields) -> tuple[RoundPaths, MLConfig]:
    paths = RoundPaths(tmp_path / "run", 1)
    paths.dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(paths.train_images, rng.integers(0, 256, (n_images, 12, 12, 3), dtype=np.uint8))
    write_json(paths.train_captions, [["red apple", "blue", "red", ""][i % 4]
                                      for i in range(n_images)])
    write_json(paths.manifest, {"n_train": n_images, "n_holders": 1})
    cfg = MLConfig(backend="sd-lora", model_path=str(sd_folder), image_size=TINY_SD_RESOLUTION,
                   device="cpu", proj_dim=16, trak_timesteps=2, seed=4, progress=False,
                   cache_dir=str(tmp_path / "run" / "cache"), num_processes=2, **fields)
    return paths, cfg


# --- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ensemble", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_two_process_featurization_equals_one_process(sd_folder, tmp_path, tests_on_path,
                                                      ensemble) -> None:
    paths, cfg = _round(tmp_path, sd_folder, N_TRAIN + N_TARGETS, trak_ensemble=ensemble)
    reference = _scores(paths, cfg, tmp_path / "one-process")  # in this process, no launch

    started = time.perf_counter()
    launch_stage("test_distributed:featurize_stage", paths, cfg)
    print(f"2-process featurize launch: {time.perf_counter() - started:.1f} s")
    assert not (paths.trak_dir / "scores.npy").exists()  # featurized, not scored
    members = ["."] if ensemble == 1 else ["member_m0_s4", "member_m0_s1004"]
    for member in members:
        for name in ("train", "target"):
            folder = paths.trak_dir / member / "features"
            assert np.load(folder / f"{name}.done.npy").all()
            assert not list(folder.glob(f"{name}.*rank*"))  # merged by the main process
            one = np.load(tmp_path / "one-process" / member / "features" / f"{name}.npy")
            assert np.array_equal(np.load(folder / f"{name}.npy"), one)  # bit-identical

    scores = _scores(paths, cfg, paths.trak_dir)  # finalizes and scores only
    if ensemble == 1:
        assert read_json(paths.trak_dir / "meta.json")["rows_computed"] == {"train": 0,
                                                                            "target": 0}
    print(f"scores 2 vs 1 process: max abs gap {np.abs(scores - reference).max():.2e}")
    np.testing.assert_allclose(scores, reference, rtol=0, atol=1e-6)


def _train_one_and_two(tmp_path: Path, sd_folder: Path, steps: int, kill_at: int | None
                       ) -> tuple[dict, dict, RoundPaths, RoundPaths]:
    """Train the round in this process and in 2 launched processes (killed in both after step
    ``kill_at`` and relaunched, when given); their train logs and paths."""
    from offchain.rounds import stages

    paths, cfg = _round(tmp_path, sd_folder, 4, train_steps=steps)
    one = RoundPaths(tmp_path / "one", 1)
    shutil.copytree(paths.dir, one.dir)
    stages.train(one, MLConfig(**{**cfg.__dict__, "num_processes": 1}))
    if kill_at is not None:
        with pytest.raises(StageError, match="exited with code"):
            launch_stage("train", paths, cfg, fault_point=f"sd-lora:step:{kill_at}")
        assert not paths.checkpoint.exists()
    launch_stage("train", paths, cfg)  # (the round runner's rerun: resumes)
    log, ref = (read_json(p.checkpoint / "train_log.json") for p in (paths, one))
    assert log["num_processes"] == 2 and ref["num_processes"] == 1
    # the same global batches: the curves agree to float32 summation order
    gap = np.abs(np.subtract(log["loss"], ref["loss"])) / np.abs(ref["loss"])
    print(f"loss curve 2 vs 1 process: max relative gap {gap.max():.2e}")
    np.testing.assert_allclose(log["loss"], ref["loss"], rtol=1e-4, atol=1e-6)
    from safetensors.torch import load_file

    two_w, one_w = (load_file(p.checkpoint / "adapter_model.safetensors") for p in (paths, one))
    for key, value in one_w.items():
        torch.testing.assert_close(two_w[key], value, rtol=1e-4, atol=1e-6)
    assert not (paths.dir / "checkpoint.partial").exists()
    return log, ref, paths, one


@pytest.mark.slow
def test_two_process_featurization_killed_resumes(sd_folder, tmp_path, tests_on_path) -> None:
    paths, cfg = _round(tmp_path, sd_folder, N_TRAIN + N_TARGETS)
    reference = _scores(paths, cfg, tmp_path / "one-process")
    with pytest.raises(StageError, match="exited with code"):  # both die after a first batch
        launch_stage("test_distributed:featurize_stage", paths, cfg,
                     fault_point="trak:train:stored")
    features = paths.trak_dir / "features"
    assert sorted(p.name for p in features.glob("train.*rank*")) == [
        "train.done.rank1.npy", "train.rank1.npy"]
    assert np.load(features / "train.done.npy").sum() == 2  # the main process's batch
    launch_stage("test_distributed:featurize_stage", paths, cfg)  # merges, computes the rest
    one = tmp_path / "one-process" / "features"
    for name in ("train", "target"):
        assert np.array_equal(np.load(features / f"{name}.npy"), np.load(one / f"{name}.npy"))
    np.testing.assert_allclose(_scores(paths, cfg, paths.trak_dir), reference, rtol=0, atol=1e-6)


def test_featurize_in_one_process_then_scores(sd_folder, tmp_path) -> None:
    paths, cfg = _round(tmp_path, sd_folder, N_TRAIN + N_TARGETS, trak_ensemble=2)
    reference = _scores(paths, cfg, tmp_path / "direct")
    model, train, targets, train_captions, target_captions = _featurize_inputs(paths, cfg)
    rows = _attributor(cfg).featurize(model, train, targets, paths.trak_dir, seed=cfg.seed,
                                      progress=False, train_captions=train_captions,
                                      target_captions=target_captions)
    assert rows == {f"member_m0_s{s}/{name}": n for s in (4, 1004)
                    for name, n in (("train", N_TRAIN), ("target", N_TARGETS))}
    np.testing.assert_array_equal(_scores(paths, cfg, paths.trak_dir), reference)
    assert _attributor(cfg).featurize(model, train, targets, paths.trak_dir, seed=cfg.seed,
                                      progress=False, train_captions=train_captions,
                                      target_captions=target_captions) == {}  # scored: no-op


def test_two_process_training_follows_one_process(sd_folder, tmp_path, tests_on_path) -> None:
    log, _, _, _ = _train_one_and_two(tmp_path, sd_folder, 20, None)
    assert log["resumed_from_step"] == 0


@pytest.mark.slow
def test_two_process_training_killed_resumes(sd_folder, tmp_path, tests_on_path) -> None:
    log, _, _, _ = _train_one_and_two(tmp_path, sd_folder, 30, 28)  # state saved at step 25
    assert log["resumed_from_step"] == 25


def test_a_failed_process_fails_the_stage(sd_folder, tmp_path, tests_on_path) -> None:
    paths, cfg = _round(tmp_path, sd_folder, 1)
    with pytest.raises(StageError, match=r"failing_stage of round 1 failed.*exited with code"):
        launch_stage("test_distributed:failing_stage", paths, cfg)


def test_launch_command_and_arguments(tmp_path) -> None:
    paths = RoundPaths(tmp_path, 2)
    cmd = accelerate_command("train", paths, MLConfig(num_processes=4), tmp_path / "c.json",
                             port=29999)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert cmd[3:] == ["--multi_gpu", "--num_processes", "4", "--num_machines", "1",
                       "--mixed_precision", "no", "--dynamo_backend", "no",
                       "--main_process_port", "29999", "-m", "offchain.rounds.distributed",
                       "train", str(tmp_path), "2", str(tmp_path / "c.json")]
    cfg = MLConfig(num_processes=8, accelerate_config="/etc/acc.yaml")
    cmd = accelerate_command("featurize", paths, cfg, tmp_path / "c.json")
    assert cmd[3:7] == ["--config_file", "/etc/acc.yaml", "--num_processes", "8"]
    with pytest.raises(ConfigError, match="unknown distributed stage"):
        launch_stage("nope", paths, MLConfig(num_processes=2))
    with pytest.raises(ConfigError, match="num_processes"):
        launch_stage("train", paths, MLConfig(num_processes=1))


def test_rank_files_merge_and_survive_a_kill(tmp_path) -> None:
    identity = {"what": "test"}
    main = FeatureStore(tmp_path, "train", 5, 3, identity, writer=0)
    other = FeatureStore(tmp_path, "train", 5, 3, identity, writer=1)
    main.write(np.array([0, 1]), np.ones((2, 3), np.float32))
    other.write(np.array([2]), np.full((1, 3), 2.0, np.float32))
    other.write(np.array([3]), np.full((1, 3), 3.0, np.float32))
    # process 1 wrote only files of its own; the store's files hold the main process's rows
    assert sorted(p.name for p in tmp_path.glob("train.*rank*")) == [
        "train.done.rank1.npy", "train.rank1.npy"]
    assert np.load(tmp_path / "train.done.npy").tolist() == [True, True, False, False, False]
    assert np.load(tmp_path / "train.done.rank1.npy").tolist() == [False, False, True, True,
                                                                    False]
    # a killed run: the next (one-process) open merges the rank files, nothing is recomputed
    reopened = FeatureStore(tmp_path, "train", 5, 3, identity)
    assert reopened.done.tolist() == [True, True, True, True, False]
    assert not list(tmp_path.glob("train.*rank*"))
    reopened.write(np.array([4]), np.zeros((1, 3), np.float32))
    assert reopened.complete
    np.testing.assert_array_equal(reopened.array()[:, 0], [1, 1, 2, 3, 0])
