"""Extension points: a model backend and an attributor are one class plus one registry line.

A toy attributor and a tiny DDPM backend are registered here and driven through the real
round stages (prepare → train → generate → attribute) on a tiny round.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from offchain.attribution import (
    SCORES_FILE,
    Attributor,
    attributor_names,
    get_attributor,
    register_attributor,
)
from offchain.config import Settings
from offchain.data.holders import Holder
from offchain.diffusion import (
    DDPMBackend,
    DiffusionConfig,
    ModelBackend,
    backend_names,
    get_backend,
    register_backend,
)
from offchain.errors import ConfigError
from offchain.layout import RoundPaths
from offchain.rounds import stages
from offchain.rounds.config import MLConfig
from offchain.utils import read_json, write_npy

ADDRESSES = (
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
)


@register_backend("tiny-ddpm")
class TinyDDPM(DDPMBackend):
    """The DDPM backend with a model small enough to train in a fraction of a second."""

    name = "tiny-ddpm"

    @classmethod
    def from_settings(cls, settings) -> TinyDDPM:
        return cls(
            DiffusionConfig(
                image_size=settings.image_size,
                block_out_channels=(8, 16),
                norm_num_groups=4,
                add_attention=False,
                num_train_timesteps=100,
                train_steps=settings.train_steps,
                batch_size=8,
                lr_warmup_steps=0,
                num_inference_steps=5,
                num_threads=1,
            )
        )


@register_attributor("brightness")
class BrightnessAttributor:
    """A toy attributor: τ[m, i] = mean pixel of target m × mean pixel of training image i."""

    name = "brightness"

    @classmethod
    def from_settings(cls, settings) -> BrightnessAttributor:
        return cls()

    def scores(self, model, train_images, targets, out_dir, *, seed, progress=True,
               train_captions=None, target_captions=None):
        train = np.asarray(train_images, dtype=np.float64).mean(axis=(1, 2, 3)) + 1.0
        target = np.asarray(targets, dtype=np.float64).mean(axis=(1, 2, 3)) + 1.0
        tau = np.outer(target, train).astype(np.float32)
        write_npy(Path(out_dir) / SCORES_FILE, tau)
        return tau

    def holder_contributions(self, scores, holder_index, n_holders):
        raw = np.bincount(holder_index, weights=scores.sum(axis=0), minlength=n_holders)
        return raw, raw / raw.sum()

    def record(self):
        return {"method": "brightness"}


def _holders() -> list[Holder]:
    """Three holders of 4 uint8 (8, 8) images each, of increasing brightness."""
    rng = np.random.default_rng(0)
    return [
        Holder(
            name=f"h{k}",
            address=address,
            reservation_price_wei=0,
            images=rng.integers(0, 64 * (k + 1), size=(4, 8, 8), dtype=np.uint8),
        )
        for k, address in enumerate(ADDRESSES)
    ]


@pytest.fixture(scope="module")
def tiny_round(tmp_path_factory: pytest.TempPathFactory) -> tuple[RoundPaths, MLConfig]:
    """A trained and sampled round 1 of the tiny backend (holder 1 sits out)."""
    cfg = MLConfig(
        image_size=8,
        train_steps=2,
        n_samples=3,
        seed=5,
        progress=False,
        backend="tiny-ddpm",
        attributor="brightness",
    )
    paths = RoundPaths(tmp_path_factory.mktemp("run"), 1)
    stages.prepare(paths, _holders(), [True, False, True])
    stages.train(paths, cfg)
    stages.generate(paths, cfg)
    return paths, cfg


def test_the_registries_list_the_built_ins_and_the_registered_toys() -> None:
    assert {"ddpm", "text-unet", "tiny-ddpm"} <= set(backend_names())
    assert {"trak", "brightness"} <= set(attributor_names())
    for name, conditional in (("ddpm", False), ("text-unet", True)):
        backend = get_backend(name).from_settings(MLConfig())
        assert isinstance(backend, ModelBackend) and backend.conditional is conditional
    assert isinstance(get_attributor("trak").from_settings(MLConfig()), Attributor)
    assert isinstance(BrightnessAttributor(), Attributor)


def test_an_unknown_name_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown model backend 'sd'.*'ddpm'"):
        get_backend("sd")
    with pytest.raises(ConfigError, match=r"unknown attributor 'shapley'.*'trak'"):
        get_attributor("shapley")


def test_a_name_cannot_be_registered_twice() -> None:
    with pytest.raises(ConfigError, match="already registered"):
        register_attributor("trak")(BrightnessAttributor)


def test_the_attribute_stage_uses_the_configured_attributor(tiny_round) -> None:
    paths, cfg = tiny_round
    stages.attribute(paths, cfg)

    train = get_backend(cfg.backend).from_settings(cfg).preprocess(np.load(paths.train_images))
    expected = BrightnessAttributor().scores(None, train, np.load(paths.samples), paths.dir,
                                             seed=0)
    assert np.array_equal(np.load(paths.trak_dir / SCORES_FILE), expected)
    contributions = read_json(paths.contributions)
    assert list(contributions) == ["round_id", "method", "scores_shape", "raw", "normalized"]
    assert contributions["method"] == "brightness"
    assert contributions["scores_shape"] == [3, 8]
    assert contributions["raw"][1] == 0.0  # holder 1 did not train this round
    assert sum(contributions["normalized"]) == pytest.approx(1.0)
    provenance = stages.round_provenance(paths, cfg)
    assert provenance["checkpoint_hash"] == "0x" + TinyDDPM.from_settings(cfg).checkpoint_hash(
        paths.checkpoint
    )


def test_the_tiny_backend_trained_and_sampled_the_round(tiny_round) -> None:
    paths, cfg = tiny_round
    samples = np.load(paths.samples)
    assert samples.shape == (3, 1, 8, 8) and samples.dtype == np.float32
    log = read_json(paths.checkpoint / "train_log.json")
    assert log["config"]["block_out_channels"] == [8, 16] and log["config"]["seed"] == 6


def test_the_ddpm_backend_refuses_captions(tiny_round) -> None:
    paths, cfg = tiny_round
    with pytest.raises(ConfigError, match="unconditional"):
        TinyDDPM.from_settings(cfg).sample(paths.checkpoint, 1, seed=0, captions=["a digit"])


def test_ml_config_from_settings_takes_every_ml_setting() -> None:
    settings = Settings.for_profile("tiny", seed=3)
    ml = MLConfig.from_settings(settings, progress=False)
    shared = {f.name for f in dataclasses.fields(MLConfig)} - {
        "progress", "backend", "attributor", "cache_dir"}
    assert {name: getattr(ml, name) for name in shared} == {
        name: getattr(settings, name) for name in shared
    }
    assert (ml.progress, ml.backend, ml.attributor) == (False, "ddpm", "trak")
    assert ml.cache_dir == str(settings.run_dir / "cache")
