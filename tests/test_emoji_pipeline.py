"""The emoji-art campaign end to end, tiny: two holders (Noto and Twemoji smileys, 16 px), the
text-conditioned backend, captions through every stage, a real anvil node; and the settings
and prompt draw it rests on."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from offchain.api.app import create_app
from offchain.config import DATASET_PRESETS, HOLDER_SOURCES, Settings
from offchain.data.datasets import load_dataset
from offchain.data.emoji import CATEGORIES
from offchain.errors import ConfigError
from offchain.layout import RoundPaths
from offchain.oracle.campaign import run_campaign
from offchain.quality.classifier import CLASSIFIER_JSON
from offchain.rounds.config import MLConfig
from offchain.rounds.stages import draw_prompts
from offchain.utils import read_json

# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def test_a_dataset_preset_sits_between_the_profile_and_explicit_values() -> None:
    mnist = Settings.for_profile("tiny")
    assert (mnist.dataset, mnist.backend, mnist.image_size, mnist.quality_reference) == (
        "mnist", "ddpm", 16, "mnist")
    demo = Settings.for_profile("demo", dataset="emoji")
    assert (demo.backend, demo.image_size, demo.quality_reference) == ("text-unet", 32, "emoji")
    tiny = Settings.for_profile("tiny", dataset="emoji")
    assert (tiny.backend, tiny.image_size, tiny.n_holders, tiny.train_steps) == (
        "text-unet", 16, 2, 8)  # the preset's size, the profile's steps
    explicit = Settings.for_profile("tiny", dataset="emoji", backend="ddpm", image_size=8)
    assert (explicit.backend, explicit.image_size) == ("ddpm", 8)
    assert set(DATASET_PRESETS) == set(HOLDER_SOURCES) == {"mnist", "emoji"}


def test_the_dataset_comes_from_the_environment_too(monkeypatch) -> None:
    monkeypatch.setenv("CCOMP_DATASET", "emoji")
    monkeypatch.setenv("CCOMP_PROFILE", "tiny")
    settings = Settings.for_profile(None)
    assert (settings.dataset, settings.backend, settings.image_size) == ("emoji", "text-unet", 16)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dataset": "cifar"}, "unknown dataset 'cifar'; choose one of mnist, emoji"),
        ({"device": "tpu"}, "device"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"guidance_scale": float("inf")}, "guidance_scale"),
        ({"copyright_probes": 0}, "copyright_probes"),
    ],
)
def test_bad_ml_settings_are_refused_in_one_line(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.for_profile("tiny", **values)


def test_the_round_ml_config_carries_device_guidance_and_probes() -> None:
    ml = MLConfig.from_settings(Settings.for_profile(
        "tiny", device="cpu", guidance_scale=1.5, copyright_probes=3))
    assert (ml.device, ml.guidance_scale, ml.copyright_probes) == ("cpu", 1.5, 3)
    with pytest.raises(ConfigError, match="device"):
        MLConfig(device="gpu")
    with pytest.raises(ConfigError, match="guidance_scale"):
        MLConfig(guidance_scale=float("nan"))


# ---------------------------------------------------------------------------------------------
# The fixed prompt set
# ---------------------------------------------------------------------------------------------


def test_prompts_are_a_seeded_draw_of_the_rounds_captions() -> None:
    captions = ["red apple", "", "grinning face", "red apple", "cat face", ""]
    drawn = draw_prompts(captions, 3, seed=7)
    assert drawn == draw_prompts(captions, 3, seed=7)  # fixed by the seed
    assert all(p in {"red apple", "grinning face", "cat face"} for p in drawn)  # never ""
    assert len({tuple(draw_prompts(captions, 3, seed=s)) for s in range(5)}) > 1  # varies
    many = draw_prompts(captions, 10, seed=0)  # more prompts than captions: with replacement
    assert len(many) == 10 and set(many) <= {"red apple", "grinning face", "cat face"}
    four = draw_prompts(captions, 4, seed=0)  # as many as there are: each caption once
    assert sorted(four) == sorted(c for c in captions if c)
    assert draw_prompts(["", ""], 3, seed=0) == ["", "", ""]  # no caption: unconditional


# ---------------------------------------------------------------------------------------------
# The tiny emoji campaign
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emoji_campaign(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("emoji-run")
    settings = Settings.for_profile("tiny", dataset="emoji", run_dir=run_dir, device="cpu")
    console = Console(file=io.StringIO(), width=200)
    result = run_campaign(settings, console=console, fresh=True)
    return settings, result, console.file.getvalue()


def test_the_emoji_campaign_pays_every_holder_exactly_on_chain(emoji_campaign) -> None:
    settings, result, _ = emoji_campaign
    assert result.rounds == settings.n_rounds == 2
    assert result.names == ["noto-smileys", "twemoji-smileys"]
    assert result.balances_wei == result.allocated_wei
    assert sum(result.allocated_wei) == settings.total_budget_wei


def test_captions_prompts_and_probes_are_recorded_per_round(emoji_campaign) -> None:
    settings, result, _ = emoji_campaign
    holders = read_json(result.run_dir / "holders.json")["holders"]
    assert all(h["captions"] and h["licence"] and h["attribution"] for h in holders)
    for round_id in range(1, result.rounds + 1):
        paths = RoundPaths(result.run_dir, round_id)
        images = np.load(paths.train_images)
        captions = read_json(paths.train_captions)
        assert images.dtype == np.uint8 and images.shape[1:] == (64, 64, 3)
        assert len(captions) == len(images) and all(captions)  # every emoji has its name
        prompts = read_json(paths.prompts)
        assert len(prompts) == settings.n_samples and set(prompts) <= set(captions)
        assert np.load(paths.samples).shape == (settings.n_samples, 3, 16, 16)
        assert paths.generations_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with np.load(paths.copyright_probes) as probes:
            holder_of = np.load(paths.holder_index)
            assert np.array_equal(probes["holder"], holder_of[probes["work_index"]])
            assert np.bincount(probes["holder"]).tolist() == [settings.copyright_probes] * 2
            assert probes["samples"].shape == (2 * settings.copyright_probes, 3, 16, 16)
        copyright_ = read_json(paths.copyright)
        assert copyright_["procedure"] == "caption_probes"
        assert all(0.0 <= x <= 1.0 for x in copyright_["loss"])
        assert read_json(paths.contributions)["scores_shape"] == [settings.n_samples,
                                                                   len(images)]


def test_quality_is_measured_in_color_against_held_out_emoji_of_every_artist(
    emoji_campaign,
) -> None:
    settings, result, _ = emoji_campaign
    record = read_json(result.run_dir / "quality_reference" / CLASSIFIER_JSON)
    assert record["in_channels"] == 3 and record["image_size"] == 16
    assert record["classes"] == list(range(len(CATEGORIES)))  # labels are the categories
    images, _ = load_dataset("emoji")
    n_holder_images = sum(settings.holder_sizes)
    quality = read_json(RoundPaths(result.run_dir, 1).quality)
    # every holder image was found by its hash and left out of classifier and reference
    assert record["n_images"] + quality["n_reference"] == len(images) - n_holder_images
    assert quality["fid"] > 0 and quality["n_samples"] == settings.quality_samples


def test_the_report_and_the_api_show_prompts_licence_and_attribution(emoji_campaign) -> None:
    _, result, output = emoji_campaign
    assert "Generations from:" in output and "generations.png" in output
    assert "Apache-2.0" in output and "CC-BY-4.0" in output
    credits = " ".join(output[output.index("Credits:"):].split())
    assert "Noto Emoji by Google" in credits and "(noto-smileys)" in credits
    assert "Twemoji by Twitter" in credits and "(twemoji-smileys)" in credits
    detail = TestClient(create_app(result.run_dir)).get("/rounds/1").json()
    licences = {h["name"]: (h["licence"], h["attribution"]) for h in detail["holders"]}
    assert licences["noto-smileys"][0] == "Apache-2.0"
    assert licences["twemoji-smileys"][0] == "CC-BY-4.0"
    assert all(attribution for _, attribution in licences.values())


def test_own_folders_keep_their_colour_and_captions_for_a_text_to_image_backend(tmp_path) -> None:
    from PIL import Image

    from offchain.oracle.run_folder import OWN_COLOR_IMAGE_SIDE_PX, load_holders

    folder = tmp_path / "holders" / "alice"
    folder.mkdir(parents=True)
    Image.new("RGBA", (20, 20), (255, 0, 0, 255)).save(folder / "apple.png")
    Image.new("RGBA", (20, 20), (0, 0, 255, 0)).save(folder / "clear.png")  # transparent
    (folder / "captions.json").write_text('{"apple.png": "red apple", "clear.png": "nothing"}')

    color = load_holders(Settings.for_profile("tiny", holders_dir=tmp_path / "holders",
                                              backend="text-unet"))
    side = OWN_COLOR_IMAGE_SIDE_PX
    assert color[0].images.shape == (2, side, side, 3)
    assert color[0].images[0, 0, 0].tolist() == [255, 0, 0]
    assert color[0].images[1, 0, 0].tolist() == [255, 255, 255]  # composited on white
    assert color[0].captions == ("red apple", "nothing")

    gray = load_holders(Settings.for_profile("tiny", holders_dir=tmp_path / "holders"))
    assert gray[0].images.shape == (2, 28, 28)  # the grayscale ddpm, as before

    # sd-lora at 128 px trains on works at its own resolution, not on 64 px upscaled
    large = load_holders(Settings.for_profile("tiny", holders_dir=tmp_path / "holders",
                                              backend="sd-lora", image_size=128))
    assert large[0].images.shape == (2, 128, 128, 3)


def test_calibrate_copyright_loads_an_emoji_round_with_its_text_backend(emoji_campaign) -> None:
    from typer.testing import CliRunner

    from offchain.cli.main import app

    settings, result, _ = emoji_campaign
    round_dir = result.run_dir / "round_001"
    out = round_dir / "calibration-cli"
    run = CliRunner().invoke(app, [
        "calibrate-copyright", "--round-dir", str(round_dir), "--dataset", "emoji",
        "--n-external", "40", "--out", str(out),
    ])
    assert run.exit_code == 0, run.output
    calibration = read_json(out / "calibration.json")
    assert calibration["image_shape"][0] == 3  # RGB works through the text-unet backend
    assert "precision" in run.output.lower()
