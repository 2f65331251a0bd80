"""An sd-lora campaign end to end on a tiny Stable Diffusion folder: two emoji holders, 8 px
images (8×8 VAE latents), a real anvil node. Attribution runs on the latents over the LoRA
parameters only, the copyright loss regenerates works from their captions and compares pixels,
latents are cached across rounds; and the pieces that make it so, one by one."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from sd_fixture import TINY_SD_RESOLUTION, build_tiny_sd

from offchain.attribution.attributed_model import (
    attributed_model,
    differentiate_only,
    unet_inputs,
)
from offchain.attribution.lds import LDSConfig, run_lds
from offchain.config import Settings
from offchain.copyright.encoders import UNetFeatureEncoder, load_encoder
from offchain.diffusion.sd_lora import ADAPTER_FILE, SDLoraBackend, SDLoraConfig
from offchain.errors import ConfigError
from offchain.layout import RoundPaths
from offchain.oracle.campaign import run_campaign
from offchain.utils import read_json

LATENT_SHAPE = [4, TINY_SD_RESOLUTION, TINY_SD_RESOLUTION]
"""The tiny VAE keeps the side: an 8 px image is a 4 × 8 × 8 latent."""


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="module")
def backend(sd_folder: Path) -> SDLoraBackend:
    return SDLoraBackend(SDLoraConfig(model_path=str(sd_folder), resolution=TINY_SD_RESOLUTION,
                                      train_steps=4, batch_size=2, num_inference_steps=3,
                                      num_threads=1, device="cpu"))


@pytest.fixture(scope="module")
def trained(backend: SDLoraBackend, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint whose adapters moved away from their initialisation (B ≠ 0)."""
    images = np.random.default_rng(0).integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)
    return backend.train_round(images, tmp_path_factory.mktemp("ckpt") / "r1", seed=1,
                               progress=False, captions=["red apple", "blue", "red", ""])


# ---------------------------------------------------------------------------------------------
# The campaign
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd_campaign(sd_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    settings = Settings.for_profile(
        "tiny", dataset="emoji", backend="sd-lora", model_path=sd_folder,
        image_size=TINY_SD_RESOLUTION, run_dir=tmp_path_factory.mktemp("sd-run"), device="cpu",
        quality_reference="none",
    )
    result = run_campaign(settings, console=Console(file=io.StringIO(), width=200), fresh=True)
    return settings, result


def _adapter_size(checkpoint: Path) -> int:
    return sum(t.numel() for t in load_file(checkpoint / ADAPTER_FILE).values())


def test_the_sd_lora_campaign_pays_exactly_what_it_allocates(sd_campaign) -> None:
    settings, result = sd_campaign
    assert result.rounds == settings.n_rounds == 2
    assert result.balances_wei == result.allocated_wei  # claims paid exactly the allocations
    assert sum(result.allocated_wei) == settings.total_budget_wei
    for round_id in (1, 2):
        allocation = read_json(RoundPaths(result.run_dir, round_id).allocation)
        assert int(allocation["total_wei"]) == int(allocation["budget_wei"])


def test_contributions_are_computed_over_the_lora_parameters_on_latents(sd_campaign) -> None:
    settings, result = sd_campaign
    for round_id in (1, 2):
        paths = RoundPaths(result.run_dir, round_id)
        adapter = _adapter_size(paths.checkpoint)
        assert read_json(paths.checkpoint / "train_log.json")["trainable_parameters"] == adapter
        members = sorted(paths.trak_dir.glob("member_*/meta.json"))
        assert len(members) == settings.trak_ensemble == 2
        for meta_path in members:
            meta = read_json(meta_path)
            assert meta["projector"]["grad_dim"] == adapter  # the adapters, not the base
            assert meta["sample_shape"] == LATENT_SHAPE  # TRAK saw the VAE latents
        n_train = len(np.load(paths.train_images))
        contributions = read_json(paths.contributions)
        assert contributions["scores_shape"] == [settings.n_samples, n_train]
        assert sum(contributions["normalized"]) == pytest.approx(1.0)
        assert np.isfinite(np.load(paths.trak_dir / "scores.npy")).all()


def test_copyright_is_measured_per_holder_from_caption_probes(sd_campaign) -> None:
    settings, result = sd_campaign
    for round_id in (1, 2):
        paths = RoundPaths(result.run_dir, round_id)
        copyright_ = read_json(paths.copyright)
        assert copyright_["procedure"] == "caption_probes"
        assert len(copyright_["loss"]) == len(result.names) == 2
        assert all(0.0 <= x <= 1.0 for x in copyright_["loss"])
        with np.load(paths.copyright_probes) as probes:  # generations compared as pixels
            assert probes["samples"].shape == (2 * settings.copyright_probes, 3, 8, 8)
        encoder = read_json(paths.copyright_calibration)["encoder"]
        assert encoder.startswith("unet(") and encoder.endswith(",x0=encoded)")


def test_the_second_round_reads_its_latents_from_the_run_cache(sd_campaign) -> None:
    _, result = sd_campaign
    logs = [read_json(RoundPaths(result.run_dir, r).checkpoint / "train_log.json")
            for r in (1, 2)]
    cache = result.run_dir / "cache" / "sd-latents"
    assert {log["latent_cache"] for log in logs} == {str(cache)}
    first = {h for h in read_json(RoundPaths(result.run_dir, 1).manifest)["holders"]
             if h["participating"] for h in h["image_hashes"]}
    second = [h for entry in read_json(RoundPaths(result.run_dir, 2).manifest)["holders"]
              if entry["participating"] for h in entry["image_hashes"]]
    seen = sum(h in first for h in second)
    assert logs[0]["latent_cache_hits"] == 0
    assert seen > 0 and logs[1]["latent_cache_hits"] == seen


# ---------------------------------------------------------------------------------------------
# The pieces
# ---------------------------------------------------------------------------------------------


def test_attribution_differentiates_only_the_adapters(backend, trained) -> None:
    model = backend.load(trained)
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    z = torch.randn(2, *LATENT_SHAPE)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        expected = model.unet(z, t).sample
    lora = [n for n, _ in backend.trainable_parameters(model)]
    view = attributed_model(backend, model)
    assert [n for n, _ in view.unet.named_parameters()] == lora
    assert sum(p.numel() for p in view.unet.parameters()) == _adapter_size(trained)
    after = view.unet.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    with torch.no_grad():
        torch.testing.assert_close(view.unet(z, t).sample, expected, rtol=0, atol=0)


def test_differentiate_only_keeps_everything_when_everything_trains() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    net[1].weight = net[0].weight  # tied: one parameter under two names
    params = list(net.parameters())
    assert differentiate_only(net, [n for n, _ in net.named_parameters()]) is net
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]
    assert not list(net.buffers()) and isinstance(net[1].weight, torch.nn.Parameter)
    with pytest.raises(ConfigError, match="not its parameters"):
        differentiate_only(net, ["0.weight", "nope"])
    with pytest.raises(ConfigError, match="none"):
        differentiate_only(net, [])


def test_differentiate_only_turns_the_rest_into_buffers_of_the_same_name() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    x = torch.randn(2, 3)
    expected = net(x)
    differentiate_only(net, ["1.bias"])
    assert [n for n, _ in net.named_parameters()] == ["1.bias"]
    assert sorted(n for n, _ in net.named_buffers()) == ["0.bias", "0.weight", "1.weight"]
    torch.testing.assert_close(net(x), expected, rtol=0, atol=0)
    grads = torch.func.grad(lambda w: torch.func.functional_call(net, w, (x,)).sum())(
        dict(net.named_parameters()))
    assert list(grads) == ["1.bias"]


def test_unet_inputs_are_latents_for_sd_and_the_images_themselves_otherwise(
    backend, trained
) -> None:
    model = backend.load(trained)
    pixels = backend.preprocess(np.zeros((3, 8, 8, 3), np.uint8))
    latents = unet_inputs(model, pixels)
    assert latents.shape == (3, *LATENT_SHAPE) and latents.dtype == torch.float32
    torch.testing.assert_close(latents, model.encode_images(pixels))
    pixel_model = type(model)(model.unet, model.scheduler)  # no encode_images: pixel space
    as_array = pixels.numpy()
    assert unet_inputs(pixel_model, as_array) is as_array


def test_the_unet_encoder_of_a_latent_model_encodes_pixels_to_latents(backend, trained) -> None:
    model = backend.load(trained)
    encoder = load_encoder("unet", model.unet, model.scheduler, encode_images=model.encode_images)
    assert isinstance(encoder, UNetFeatureEncoder) and encoder.name.endswith(",x0=encoded)")
    rng = np.random.default_rng(1)
    pixels = backend.preprocess(rng.integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8))
    emb = encoder.encode(pixels)
    assert emb.shape[0] == 5 and torch.isfinite(emb).all()
    torch.testing.assert_close(encoder.encode(pixels[:2]), emb[:2])  # deterministic
    plain = UNetFeatureEncoder(model.unet, model.scheduler)
    assert "x0=" not in plain.name
    with pytest.raises(RuntimeError):  # pixels are not what this UNet denoises
        plain.encode(pixels)


def test_lds_runs_on_latents_over_the_adapters(sd_folder, tmp_path) -> None:
    images = np.random.default_rng(2).integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    cfg = LDSConfig(backend="sd-lora", model_path=str(sd_folder), image_size=8, train_steps=2,
                    n_subsets=3, n_targets=2, eval_timesteps=2, proj_dim=8, trak_timesteps=1,
                    device="cpu")
    report = run_lds(tmp_path / "lds", images, np.repeat([0, 1, 2], 2), cfg,
                     methods=("dtrak", "pixel"), kinds=("examples",), progress=False,
                     captions=["red", "blue", "red apple", "", "blue", "red"])
    member = next((tmp_path / "lds" / "scores").glob("dtrak_*/member_*/meta.json"))
    meta = json.loads(member.read_text())
    full = tmp_path / "lds" / "full" / "checkpoint"
    assert meta["projector"]["grad_dim"] == _adapter_size(full)
    assert meta["sample_shape"] == LATENT_SHAPE
    assert set(report["results"]["examples"]) == {"dtrak", "pixel"}
    assert report["config"]["model_path"] == str(sd_folder)


def test_a_calibration_of_an_sd_lora_checkpoint_encodes_latents(backend, trained,
                                                                  tmp_path) -> None:
    from offchain.copyright import run_calibration

    works = np.random.default_rng(3).integers(0, 256, size=(10, 8, 8, 3), dtype=np.uint8)
    path = run_calibration(trained, works, np.repeat([0, 1], 5), tmp_path / "calibration",
                           encoder_spec="unet", backend=backend)
    calibration = json.loads(path.read_text())
    assert calibration["encoder"].endswith(",x0=encoded)")
    assert calibration["image_shape"] == [3, 8, 8]  # the works' pixels; latents inside


@pytest.mark.slow
def test_an_attribute_stage_featurized_in_two_processes_gives_the_same_scores(
    sd_campaign, tmp_path
) -> None:
    import dataclasses
    import shutil

    from offchain.rounds import stages
    from offchain.rounds.config import MLConfig

    settings, result = sd_campaign
    done = RoundPaths(result.run_dir, 1)
    paths = RoundPaths(tmp_path / "run", 1)
    paths.dir.mkdir(parents=True)
    for name in ("manifest.json", "train_images.npy", "holder_index.npy", "train_captions.json",
                 "samples.npy", "prompts.json"):
        shutil.copy(done.dir / name, paths.dir / name)
    shutil.copytree(done.checkpoint, paths.checkpoint)
    cfg = dataclasses.replace(MLConfig.from_settings(settings, progress=False), num_processes=2)
    stages.attribute(paths, cfg)
    assert (paths.trak_dir / stages.UNET_INPUTS_FILE).exists()
    for meta in paths.trak_dir.glob("member_*/meta.json"):  # the launch featurized every row
        assert set(read_json(meta)["rows_computed"].values()) == {0}
    np.testing.assert_allclose(np.load(paths.trak_dir / "scores.npy"),
                               np.load(done.trak_dir / "scores.npy"), rtol=0, atol=1e-6)
    for store in sorted(done.trak_dir.glob("member_*/features/*.npy")):
        if not store.name.endswith(".done.npy"):
            mine = paths.trak_dir / store.relative_to(done.trak_dir)
            assert np.array_equal(np.load(mine), np.load(store)), store.name
    assert read_json(paths.contributions)["normalized"] == pytest.approx(
        read_json(done.contributions)["normalized"], abs=1e-6)


@pytest.mark.slow
def test_a_campaign_with_two_processes_trains_and_featurizes_in_both(sd_folder, tmp_path) -> None:
    settings = Settings.for_profile(
        "tiny", dataset="emoji", backend="sd-lora", model_path=sd_folder,
        image_size=TINY_SD_RESOLUTION, run_dir=tmp_path / "run", device="cpu",
        quality_reference="none", num_processes=2,
    )
    result = run_campaign(settings, console=Console(file=io.StringIO(), width=200), fresh=True)
    assert result.balances_wei == result.allocated_wei
    for round_id in (1, 2):
        paths = RoundPaths(result.run_dir, round_id)
        log = read_json(paths.checkpoint / "train_log.json")
        assert log["num_processes"] == 2  # data-parallel LoRA training
        for meta in paths.trak_dir.glob("member_*/meta.json"):  # the launch featurized all
            assert set(read_json(meta)["rows_computed"].values()) == {0}
            assert read_json(meta)["projector"]["grad_dim"] == _adapter_size(paths.checkpoint)
    assert read_json(RoundPaths(result.run_dir, 2).checkpoint / "train_log.json")[
        "latent_cache_hits"] > 0


def test_calibrate_copyright_loads_an_sd_lora_round_with_its_base_folder(sd_campaign) -> None:
    from typer.testing import CliRunner

    from offchain.cli.main import app

    _, result = sd_campaign
    round_dir = result.run_dir / "round_002"
    out = round_dir / "calibration-cli"
    run = CliRunner().invoke(app, [
        "calibrate-copyright", "--round-dir", str(round_dir), "--dataset", "emoji",
        "--n-external", "20", "--out", str(out),
    ])
    assert run.exit_code == 0, run.output
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["encoder"].endswith(",x0=encoded)")  # the works' latents, by the VAE
    assert calibration["image_shape"] == [3, TINY_SD_RESOLUTION, TINY_SD_RESOLUTION]
