"""Diffusion stage: preprocessing, training rounds (continue, skip, determinism) and sampling."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from offchain.diffusion import (
    DDPMBackend,
    DiffusionConfig,
    checkpoint_hash,
    generate_samples,
    is_complete_checkpoint,
    load_checkpoint,
    preprocess,
    read_train_log,
    samples_to_uint8,
    train_round,
)
from offchain.diffusion.model import luma
from offchain.errors import ConfigError, DataError, StageError

TINY = DiffusionConfig(
    image_size=8,
    block_out_channels=(8, 16),
    layers_per_block=1,
    norm_num_groups=4,
    add_attention=False,
    num_train_timesteps=100,
    train_steps=4,
    batch_size=8,
    learning_rate=2e-3,
    lr_warmup_steps=0,
    num_inference_steps=5,
    num_threads=1,  # a tiny model gains nothing from threads, and threads thrash on a busy CPU
    seed=0,
)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """uint8 (24, 12, 12): bright squares of varying size and place on black."""
    rng = np.random.default_rng(0)
    out = np.zeros((24, 12, 12), dtype=np.uint8)
    for image in out:
        top, left = rng.integers(0, 5, size=2)
        side = rng.integers(4, 8)
        image[top : top + side, left : left + side] = 255
    return out


@pytest.fixture(scope="module")
def round_one(tmp_path_factory: pytest.TempPathFactory, images: np.ndarray) -> Path:
    return train_round(images, tmp_path_factory.mktemp("r1") / "checkpoint", TINY, progress=False)


def _state(ckpt: Path) -> dict[str, torch.Tensor]:
    unet, _ = load_checkpoint(ckpt)
    return unet.state_dict()


# --- preprocess ---------------------------------------------------------------------------------


def test_preprocess_resizes_to_the_model_range_and_shape() -> None:
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    images[1] = 255
    x = preprocess(images, 16)
    assert x.shape == (3, 1, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x[0], -torch.ones(1, 16, 16), atol=1e-6)
    assert torch.allclose(x[1], torch.ones(1, 16, 16), atol=1e-6)
    assert x.min() >= -1.0 and x.max() <= 1.0


def test_luma_is_pillows_grayscale_bit_for_bit() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, size=(5, 7, 9, 3), dtype=np.uint8)
    expected = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in rgb])
    assert np.array_equal(luma(rgb), expected)


def test_preprocess_turns_rgb_into_luma_for_one_channel_and_gray_into_three() -> None:
    rgb = np.random.default_rng(2).integers(0, 256, size=(3, 12, 12, 3), dtype=np.uint8)
    assert torch.equal(preprocess(rgb, 8), preprocess(luma(rgb), 8))
    gray = rgb[..., 0]
    x = preprocess(gray, 8, channels=3)
    assert x.shape == (3, 3, 8, 8) and x.is_contiguous()
    assert torch.equal(x[:, 0], preprocess(gray, 8)[:, 0]) and torch.equal(x[:, 0], x[:, 2])
    colour = preprocess(rgb, 12, channels=3)  # no resize: the channels come straight through
    assert torch.allclose(colour[:, 1], torch.from_numpy(rgb[..., 1] / 127.5 - 1).float(), atol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((0, 8, 8), np.uint8),
        np.zeros((2, 8, 8), np.float32),
        np.zeros((8, 8), np.uint8),
        np.zeros((2, 8, 8, 4), np.uint8),  # RGBA: composite on white first
        np.zeros((0, 8, 8, 3), np.uint8),
    ],
)
def test_preprocess_rejects_empty_or_mistyped_images(bad: np.ndarray) -> None:
    with pytest.raises(DataError):
        preprocess(bad, 8)


def test_samples_to_uint8_keeps_gray_2d_and_rgb_channels_last() -> None:
    samples = np.linspace(-1, 1, 2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    rgb = samples_to_uint8(samples)
    assert rgb.shape == (2, 4, 4, 3) and rgb[0, 0, 0, 0] == 0 and rgb[1, 3, 3, 2] == 255
    assert samples_to_uint8(samples[:, :1]).shape == (2, 4, 4)
    with pytest.raises(DataError):
        samples_to_uint8(samples[:, :2])


def test_train_round_rejects_empty_images(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="non-empty"):
        train_round(np.zeros((0, 12, 12), np.uint8), tmp_path / "ck", TINY, progress=False)
    assert not (tmp_path / "ck").exists()


def test_config_rejects_groups_that_do_not_divide_channels() -> None:
    with pytest.raises(ConfigError, match="norm_num_groups"):
        DiffusionConfig(block_out_channels=(12, 16), norm_num_groups=8).validate()


# --- training -----------------------------------------------------------------------------------


def test_training_loss_decreases_over_a_few_dozen_steps(tmp_path: Path, images: np.ndarray) -> None:
    cfg = dataclasses.replace(TINY, train_steps=40, batch_size=16)
    ckpt = train_round(images, tmp_path / "ck", cfg, progress=False)
    loss = read_train_log(ckpt)["loss"]
    assert len(loss) == 40
    assert np.mean(loss[-10:]) < 0.6 * np.mean(loss[:5])


def test_train_round_writes_a_complete_checkpoint_and_log(
    round_one: Path, images: np.ndarray
) -> None:
    assert is_complete_checkpoint(round_one)
    log = read_train_log(round_one)
    assert log["steps"] == TINY.train_steps and log["n_images"] == len(images)
    assert log["init_checkpoint"] is None and log["seconds"] > 0
    assert [p.name for p in round_one.parent.iterdir()] == ["checkpoint"]  # no temp folder left


def test_train_round_is_deterministic_given_the_seed(
    tmp_path: Path, round_one: Path, images: np.ndarray
) -> None:
    again = train_round(images, tmp_path / "again", TINY, progress=False)
    assert checkpoint_hash(again) == checkpoint_hash(round_one)
    other = train_round(
        images, tmp_path / "other", dataclasses.replace(TINY, seed=1), progress=False
    )
    assert checkpoint_hash(other) != checkpoint_hash(round_one)


def test_continuing_from_a_checkpoint_loads_the_same_weights(
    tmp_path: Path, round_one: Path, images: np.ndarray
) -> None:
    zero_steps = dataclasses.replace(TINY, train_steps=0, seed=5)
    copy = train_round(
        images, tmp_path / "r2", zero_steps, init_checkpoint=round_one, progress=False
    )
    before, after = _state(round_one), _state(copy)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert checkpoint_hash(copy) == checkpoint_hash(round_one)
    assert read_train_log(copy)["init_checkpoint_hash"] == checkpoint_hash(round_one)


def test_continuing_training_changes_the_weights(
    tmp_path: Path, round_one: Path, images: np.ndarray
) -> None:
    cfg = dataclasses.replace(TINY, seed=1)
    nxt = train_round(images, tmp_path / "r2", cfg, init_checkpoint=round_one, progress=False)
    assert checkpoint_hash(nxt) != checkpoint_hash(round_one)


def test_train_round_rejects_a_config_that_does_not_match_the_checkpoint(
    tmp_path: Path, round_one: Path, images: np.ndarray
) -> None:
    cfg = dataclasses.replace(TINY, block_out_channels=(16, 16))
    with pytest.raises(ConfigError, match="block_out_channels"):
        train_round(images, tmp_path / "r2", cfg, init_checkpoint=round_one, progress=False)


def test_train_round_skips_when_the_checkpoint_is_complete(round_one: Path) -> None:
    before = checkpoint_hash(round_one)
    mtime = (round_one / "train_log.json").stat().st_mtime_ns
    # Empty images would raise if training ran: returning proves it was skipped.
    assert (
        train_round(np.zeros((0, 12, 12), np.uint8), round_one, TINY, progress=False) == round_one
    )
    assert checkpoint_hash(round_one) == before
    assert (round_one / "train_log.json").stat().st_mtime_ns == mtime


def test_train_round_refuses_to_overwrite_an_incomplete_checkpoint(
    tmp_path: Path, images: np.ndarray
) -> None:
    partial = tmp_path / "ck"
    (partial / "unet").mkdir(parents=True)
    with pytest.raises(StageError, match="not a complete checkpoint"):
        train_round(images, partial, TINY, progress=False)


def test_load_checkpoint_raises_stage_error_when_missing(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="missing"):
        load_checkpoint(tmp_path / "nowhere")


# --- sampling -----------------------------------------------------------------------------------


def test_generate_samples_shape_dtype_and_range(round_one: Path) -> None:
    samples = generate_samples(round_one, 10, TINY, seed=0)  # two batches of 8 and 2
    assert samples.shape == (10, 1, 8, 8) and samples.dtype == np.float32
    assert samples.min() >= -1.0 and samples.max() <= 1.0
    assert np.isfinite(samples).all()


def test_generate_samples_is_deterministic_by_seed(round_one: Path) -> None:
    first = generate_samples(round_one, 4, TINY, seed=3)
    assert np.array_equal(first, generate_samples(round_one, 4, TINY, seed=3))
    assert not np.array_equal(first, generate_samples(round_one, 4, TINY, seed=4))


def test_generate_samples_rejects_a_mismatched_image_size(round_one: Path) -> None:
    with pytest.raises(ConfigError, match="image_size"):
        generate_samples(round_one, 2, dataclasses.replace(TINY, image_size=16), seed=0)


def test_num_threads_applies_during_sampling_and_is_restored(round_one: Path) -> None:
    before = torch.get_num_threads()
    one = generate_samples(round_one, 2, dataclasses.replace(TINY, num_threads=1), seed=0)
    assert torch.get_num_threads() == before
    assert one.shape == (2, 1, 8, 8)


# --- the ddpm backend ---------------------------------------------------------------------------


def test_the_ddpm_backend_trains_colour_images_on_their_luma(
    tmp_path: Path, round_one: Path, images: np.ndarray
) -> None:
    # A gray image in RGB has luma = itself: the checkpoint is the gray run's, bit for bit.
    rgb = np.repeat(images[..., None], 3, axis=3)
    backend = DDPMBackend(TINY)
    assert not backend.conditional
    ckpt = backend.train_round(
        rgb, tmp_path / "ck", seed=TINY.seed, captions=[""] * len(rgb), progress=False
    )
    assert checkpoint_hash(ckpt) == checkpoint_hash(round_one)


def test_the_ddpm_backend_refuses_captions_but_not_null_ones(
    tmp_path: Path, round_one: Path, images: np.ndarray
) -> None:
    backend = DDPMBackend(TINY)
    captions = ["a square"] + [""] * (len(images) - 1)
    with pytest.raises(ConfigError, match="unconditional"):
        backend.train_round(images, tmp_path / "ck", seed=0, captions=captions, progress=False)
    assert not (tmp_path / "ck").exists()
    plain = backend.sample(round_one, 2, seed=1)
    assert np.array_equal(backend.sample(round_one, 2, seed=1, captions=["", ""]), plain)
    with pytest.raises(ConfigError, match="unconditional"):
        backend.sample(round_one, 2, seed=1, captions=["a", "b"])
