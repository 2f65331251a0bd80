"""The sd-lora backend on a tiny Stable Diffusion folder built from configs (no download): the
folder loads through ``model_path``, LoRA rounds train and save only the adapter, continue, and
sample from captions."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sd_fixture import build_tiny_sd, tiny_backend

from offchain.diffusion import ModelBackend, backend_names, get_backend
from offchain.diffusion.sd_lora import (
    ADAPTER_FILE,
    SDLoraBackend,
    SDLoraUNet,
    load_base,
    missing_model_parts,
)
from offchain.errors import ConfigError, StageError

CAPTIONS = ["red apple", "blue", "red", ""]


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD 1.x folder written by ``StableDiffusionPipeline.save_pretrained``."""
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="module")
def backend(sd_folder: Path) -> SDLoraBackend:
    return tiny_backend(sd_folder)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(4, 12, 12, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def rounds(backend: SDLoraBackend, images: np.ndarray, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rounds")
    first = backend.train_round(images, root / "r1", seed=1, progress=False, captions=CAPTIONS)
    second = backend.train_round(images, root / "r2", seed=2, init_checkpoint=first,
                                 progress=False, captions=CAPTIONS)
    return first, second


def test_registry_lists_sd_lora_and_protocol(backend: SDLoraBackend) -> None:
    assert "sd-lora" in backend_names()
    assert get_backend("sd-lora") is SDLoraBackend
    assert isinstance(backend, ModelBackend) and backend.conditional


def test_folder_loads_through_model_path(sd_folder: Path) -> None:
    from diffusers import StableDiffusionPipeline

    assert missing_model_parts(sd_folder) == []
    pipe = load_base(sd_folder)
    assert isinstance(pipe, StableDiffusionPipeline)
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size == 32


def test_missing_setting_and_missing_part_are_clear(sd_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model_path"):
        SDLoraBackend.from_settings(SimpleNamespace(image_size=8, train_steps=1))
    broken = tmp_path / "broken"
    broken.mkdir()
    for part in ("model_index.json", "unet", "text_encoder", "scheduler"):
        src = sd_folder / part
        (broken / part).symlink_to(src, target_is_directory=src.is_dir())
    assert missing_model_parts(broken) == ["vae/", "tokenizer/"]
    with pytest.raises(ConfigError, match=r"missing vae/, tokenizer/"):
        load_base(broken)
    with pytest.raises(ConfigError, match="missing the folder"):
        load_base(tmp_path / "nowhere")


def test_round_saves_only_the_adapter_and_continues(backend, rounds) -> None:
    first, second = rounds
    for ckpt in rounds:
        assert backend.is_complete(ckpt)
        assert sorted(p.name for p in ckpt.iterdir()) == [
            ADAPTER_FILE, "sd_lora.json", "train_log.json"]
        assert (ckpt / ADAPTER_FILE).stat().st_size < 64 * 1024
    log = json.loads((second / "train_log.json").read_text())
    assert log["init_checkpoint_hash"] == backend.checkpoint_hash(first)
    assert log["latent_cache_hits"] == 4  # the second round read every latent from the cache
    assert backend.checkpoint_hash(first) != backend.checkpoint_hash(second)
    assert backend.train_round(np.zeros((1, 8, 8), np.uint8), first, seed=9) == first


def test_model_wrapper_and_lora_parameters(backend, rounds) -> None:
    model = backend.load(rounds[1])
    assert isinstance(model.unet, SDLoraUNet)
    names = [n for n, _ in backend.trainable_parameters(model)]
    assert names and all("lora_" in n for n in names)
    assert len(names) < len(list(model.unet.parameters()))
    ids = model.encode_captions(["red apple", ""])
    assert ids.dtype == torch.int64 and ids.shape == (2, 16)
    z = torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        out = model.unet(z, t, ids).sample
        null = model.unet(z, t).sample
    assert out.shape == z.shape
    torch.testing.assert_close(null[1], out[1])  # None is the empty caption
    x = backend.preprocess(np.zeros((2, 5, 5), np.uint8))
    assert x.shape == (2, 3, 8, 8) and float(x.min()) == -1.0


def test_missing_checkpoint_is_a_stage_error(backend, tmp_path: Path) -> None:
    with pytest.raises(StageError, match=ADAPTER_FILE):
        backend.load(tmp_path)
    with pytest.raises(StageError):
        backend.checkpoint_hash(tmp_path)


def test_sample_from_captions_is_seeded(backend, rounds) -> None:
    a = backend.sample(rounds[1], 3, seed=5, captions=["red apple", "blue", ""])
    b = backend.sample(rounds[1], 3, seed=5, captions=["red apple", "blue", ""])
    c = backend.sample(rounds[1], 3, seed=6, captions=["red apple", "blue", ""])
    assert a.shape == (3, 3, 8, 8) and a.dtype == np.float32
    assert a.min() >= -1.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(ConfigError):
        backend.sample(rounds[1], 2, seed=0, captions=["one"])


def test_adapter_round_trips_and_shape_must_match(backend, rounds, images, tmp_path) -> None:
    model = backend.load(rounds[0])
    saved = backend.save(model, tmp_path / "again", {"note": "round trip"})
    assert backend.checkpoint_hash(saved) == backend.checkpoint_hash(rounds[0])
    wider = SDLoraBackend(dataclasses.replace(backend.config, lora_rank=8))
    with pytest.raises(ConfigError, match="lora_rank"):
        wider.train_round(images, tmp_path / "r3", seed=3, init_checkpoint=rounds[0],
                          progress=False, captions=CAPTIONS)


def test_the_model_path_setting_reaches_the_backend(sd_folder, tmp_path, monkeypatch) -> None:
    import pytest

    from offchain.config import Settings
    from offchain.diffusion import get_backend
    from offchain.rounds.config import MLConfig

    monkeypatch.setenv("CCOMP_MODEL_PATH", str(sd_folder))
    settings = Settings.for_profile("tiny", backend="sd-lora", image_size=8,
                                    run_dir=tmp_path / "run", lora_rank=8, lora_alpha=16,
                                    lora_target_modules=["to_q", "to_v"])
    backend = get_backend("sd-lora").from_settings(MLConfig.from_settings(settings))
    assert backend.config.model_path == str(sd_folder)
    assert backend.config.resolution == 8
    assert (backend.config.lora_rank, backend.config.lora_alpha) == (8, 16.0)
    assert backend.config.target_modules == ("to_q", "to_v")
    assert backend.config.latent_cache_dir == str(tmp_path / "run" / "cache" / "sd-latents")

    eight = Settings.for_profile("tiny", backend="sd-lora", image_size=8, train_batch_size=8,
                                 num_processes=4)
    assert get_backend("sd-lora").from_settings(MLConfig.from_settings(eight)).config.batch_size == 8
    uneven = Settings.for_profile("tiny", backend="sd-lora", image_size=8, num_processes=3)
    with pytest.raises(ConfigError, match=r"batch \(4 images.*num_processes \(3\)"):
        get_backend("sd-lora").from_settings(MLConfig.from_settings(uneven))

    # a folder missing a part is refused when the backend is built, naming the part
    monkeypatch.setenv("CCOMP_MODEL_PATH", str(tmp_path))
    settings = Settings.for_profile("tiny", backend="sd-lora", image_size=8)
    with pytest.raises(ConfigError, match="missing model_index.json"):
        get_backend("sd-lora").from_settings(MLConfig.from_settings(settings))


def test_a_campaign_refuses_sd_lora_without_a_model_folder_before_writing(tmp_path) -> None:
    import pytest

    from offchain.config import Settings
    from offchain.errors import ConfigError
    from offchain.oracle.run_folder import check_backend, load_run_inputs

    run_dir = tmp_path / "run"
    no_path = Settings.for_profile("tiny", backend="sd-lora", run_dir=run_dir)
    with pytest.raises(ConfigError, match="model_path"):
        load_run_inputs(no_path)
    absent = Settings.for_profile("tiny", backend="sd-lora", model_path=tmp_path / "sd",
                                  run_dir=run_dir)
    with pytest.raises(ConfigError, match=r"model_path .*sd is not a .*folder"):
        check_backend(absent)
    assert not run_dir.exists()