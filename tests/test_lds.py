"""Linear datamodeling score: subsets, per-target Spearman, intervals, measured loss, the driver."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from offchain.attribution.lds import (
    LDSConfig,
    draw_subsets,
    format_report,
    lds_per_target,
    mean_interval,
    measured_loss,
    pixel_scores,
    run_lds,
)
from offchain.diffusion.backend import register_backend
from offchain.diffusion.text_unet import TextUNetBackend, TextUNetConfig
from offchain.errors import ConfigError, DataError, StageError

HOLDERS = np.repeat(np.arange(6), [3, 4, 5, 6, 7, 8])  # 33 images, 6 holders


def test_example_subsets_hold_exactly_half_the_images_and_are_distinct():
    masks = draw_subsets(HOLDERS, "examples", 20, 0.5, seed=1)
    assert masks.shape == (20, 33) and masks.dtype == bool
    assert set(masks.sum(1)) == {16}  # round(0.5 · 33)
    assert len({m.tobytes() for m in masks}) == 20


def test_holder_subsets_take_whole_holders():
    masks = draw_subsets(HOLDERS, "holders", 20, 0.5, seed=1)  # C(6, 3) = 20 distinct
    assert len({m.tobytes() for m in masks}) == 20
    for m in masks:
        chosen = np.unique(HOLDERS[m])
        assert len(chosen) == 3
        assert m.sum() == np.isin(HOLDERS, chosen).sum()  # all images of a chosen holder


def test_subsets_repeat_only_when_there_are_too_few_distinct_ones():
    masks = draw_subsets(np.arange(4), "holders", 10, 0.5, seed=0)  # C(4, 2) = 6
    assert len({m.tobytes() for m in masks}) == 6


def test_subsets_are_seeded():
    a = draw_subsets(HOLDERS, "examples", 5, 0.5, seed=3)
    assert np.array_equal(a, draw_subsets(HOLDERS, "examples", 5, 0.5, seed=3))
    assert not np.array_equal(a, draw_subsets(HOLDERS, "examples", 5, 0.5, seed=4))


@pytest.mark.parametrize("kind, fraction", [("shapes", 0.5), ("examples", 0.01), ("holders", 0.99)])
def test_bad_subset_requests_are_refused(kind, fraction):
    with pytest.raises(ConfigError):
        draw_subsets(HOLDERS, kind, 5, fraction, seed=0)


def test_a_true_linear_datamodel_has_lds_one_and_its_negation_minus_one():
    rng = np.random.default_rng(0)
    tau = rng.standard_normal((5, 33))
    masks = draw_subsets(HOLDERS, "examples", 12, 0.5, seed=0)
    outputs = masks.astype(float) @ tau.T  # (J, M): the outputs are exactly the linear model
    assert np.allclose(lds_per_target(tau, masks, outputs), 1.0)
    assert np.allclose(lds_per_target(-tau, masks, outputs), -1.0)


def test_lds_of_unrelated_scores_is_near_zero_on_average():
    rng = np.random.default_rng(1)
    masks = draw_subsets(np.arange(200), "examples", 50, 0.5, seed=0)
    outputs = masks.astype(float) @ rng.standard_normal((40, 200)).T
    lds = lds_per_target(rng.standard_normal((40, 200)), masks, outputs)
    assert abs(np.mean(lds)) < 0.1


def test_constant_measurements_give_nan_not_a_fake_correlation():
    tau = np.ones((2, 33))
    masks = draw_subsets(HOLDERS, "examples", 6, 0.5, seed=0)  # all subsets of equal size
    lds = lds_per_target(tau, masks, np.random.default_rng(0).standard_normal((6, 2)))
    assert np.isnan(lds).all()
    assert mean_interval(lds)["n"] == 0


def test_lds_shape_errors():
    masks = draw_subsets(HOLDERS, "examples", 4, 0.5, seed=0)
    with pytest.raises(DataError):
        lds_per_target(np.zeros((2, 32)), masks, np.zeros((4, 2)))
    with pytest.raises(DataError):
        lds_per_target(np.zeros((2, 33)), masks, np.zeros((2, 4)))
    with pytest.raises(DataError):
        lds_per_target(np.full((2, 33), np.nan), masks, np.zeros((4, 2)))


def test_mean_interval_matches_the_t_interval():
    values = np.array([0.1, 0.3, 0.2, 0.4, np.nan])
    r = mean_interval(values)
    assert r["n"] == 4 and r["mean"] == pytest.approx(0.25)
    half = 3.182446305284263 * np.std(values[:4], ddof=1) / 2  # t_{0.975, 3}
    assert r["low"] == pytest.approx(0.25 - half) and r["high"] == pytest.approx(0.25 + half)


def test_pixel_scores_are_centred_negative_mean_squared_distances():
    rng = np.random.default_rng(0)
    t, x = rng.uniform(-1, 1, (3, 1, 4, 4)), rng.uniform(-1, 1, (5, 1, 4, 4))
    d = ((t[:, None] - x[None]) ** 2).reshape(3, 5, -1).mean(-1)
    assert np.allclose(pixel_scores(t, x), d.mean(1, keepdims=True) - d, atol=1e-6)


def _tiny_unet() -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )


def test_measured_loss_is_deterministic_and_is_the_denoising_loss():
    unet, scheduler = _tiny_unet(), DDPMScheduler(num_train_timesteps=100)
    targets = torch.rand(3, 1, 8, 8) * 2 - 1
    a = measured_loss(unet, scheduler, targets, eval_timesteps=5, seed=7, batch_size=4)
    assert a.shape == (3,) and a.dtype == np.float64
    assert np.array_equal(a, measured_loss(unet, scheduler, targets, 5, seed=7, batch_size=4))
    assert np.allclose(a, measured_loss(unet, scheduler, targets, 5, seed=7), rtol=1e-6)
    # by hand for target 0 with the same noise draw
    gen = torch.Generator().manual_seed(7)
    noise = torch.randn((3, 5, 1, 8, 8), generator=gen)[0]
    t = torch.arange(5) * 20 + 10
    acp = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = acp.sqrt() * targets[0] + (1 - acp).sqrt() * noise
    with torch.no_grad():
        pred = unet(x_t, t).sample
    assert a[0] == pytest.approx(float((noise - pred).pow(2).mean()), rel=1e-5)
    with pytest.raises(ConfigError):
        measured_loss(unet, scheduler, targets, eval_timesteps=0, seed=0)


def test_config_is_validated():
    with pytest.raises(ConfigError):
        LDSConfig(n_subsets=2)
    with pytest.raises(ConfigError):
        LDSConfig(subset_fraction=1.0)
    with pytest.raises(ConfigError):
        LDSConfig(lambda_reg=0.0)


def _mnist_subset():
    from offchain.data.holders import mnist_holders, training_set

    return training_set(mnist_holders(4, sizes=(6, 6, 6, 6)))


TINY = LDSConfig(
    n_subsets=3,
    train_steps=3,
    n_targets=3,
    eval_timesteps=4,
    proj_dim=16,
    trak_timesteps=2,
    image_size=8,
)
"""The smallest run that exercises every stage of the driver (seconds)."""


def test_the_driver_runs_resumes_and_refuses_a_different_run(tmp_path):
    images, index = _mnist_subset()
    cfg = TINY
    report = run_lds(
        tmp_path, images, index, cfg, methods=("dtrak", "random", "count"), progress=False
    )
    assert report["results"]["examples"]["count"]["n"] == 0  # equal-size subsets: no ranking
    assert "n/a" in (tmp_path / "lds.md").read_text()
    for kind in ("examples", "holders"):
        for method in ("dtrak", "random", "count"):
            r = report["results"][kind][method]
            assert len(r["per_target"]) == 3
            assert r["n"] == 0 or -1 <= r["mean"] <= 1
        assert len(list((tmp_path / "retrain" / kind).glob("*/loss.npy"))) == 3
        assert not list((tmp_path / "retrain" / kind).glob("*/checkpoint"))  # not kept
    assert "| dtrak |" in (tmp_path / "lds.md").read_text()
    # a finished run is returned as saved; a lost result is recomputed from the saved losses
    methods = ("dtrak", "random", "count")
    assert run_lds(tmp_path, images, index, cfg, methods=methods) == report
    (tmp_path / "lds.json").unlink()
    again = run_lds(tmp_path, images, index, cfg, methods=methods, progress=False)
    assert again["results"] == report["results"]
    with pytest.raises(StageError, match="different data or settings"):
        run_lds(tmp_path, images, index, LDSConfig(n_subsets=4), methods=methods)
    assert format_report(report).count("\n|") >= 3


def test_a_run_can_be_rescored_with_other_trak_settings_without_retraining(tmp_path, monkeypatch):
    import offchain.diffusion.ddpm as ddpm

    images, index = _mnist_subset()
    cfg = TINY
    first = run_lds(tmp_path, images, index, cfg, methods=("dtrak",), progress=False)

    real_train = ddpm.train_round

    def _no_training(images, out_dir, *args, **kwargs):
        if not ddpm.is_complete_checkpoint(out_dir):  # the full model is kept and reused
            raise AssertionError(f"re-scoring must not train {out_dir}")
        return real_train(images, out_dir, *args, **kwargs)

    monkeypatch.setattr(ddpm, "train_round", _no_training)
    wider = LDSConfig(**{**cfg.__dict__, "proj_dim": 24, "trak_ensemble": 2})
    second = run_lds(tmp_path, images, index, wider, methods=("dtrak", "pixel"), progress=False)
    assert second["config"]["proj_dim"] == 24 and "pixel" in second["results"]["examples"]
    assert (tmp_path / "scores" / "dtrak_p16_k2_l0.01.npy").exists()
    assert (tmp_path / "scores" / "dtrak_p24_k2_l0.01_e2.npy").exists()
    assert len(list((tmp_path / "scores" / "dtrak_p24_k2_l0.01_e2").glob("member_*"))) == 2
    assert second["results"]["examples"]["dtrak"] != first["results"]["examples"]["dtrak"]


def test_several_training_seeds_per_subset_average_their_measured_losses(tmp_path):
    images, index = _mnist_subset()
    cfg = LDSConfig(**{**TINY.__dict__, "train_seeds": 2})
    run_lds(tmp_path, images, index, cfg, methods=("random",), kinds=("holders",), progress=False)
    for folder in sorted((tmp_path / "retrain" / "holders").iterdir()):
        seeds = [np.load(folder / f"loss_seed{k}.npy") for k in range(2)]
        assert not np.array_equal(seeds[0], seeds[1])  # different training seeds
        assert np.allclose(np.load(folder / "loss.npy"), (seeds[0] + seeds[1]) / 2)
    with pytest.raises(StageError, match="train_seeds"):
        run_lds(tmp_path, images, index, TINY, methods=("random",), kinds=("holders",))


# ------------------------------------------------------------------------ text-to-image rounds


@register_backend("lds-test-text-unet")
class _TinyTextUNet(TextUNetBackend):
    """The ``text-unet`` backend at the smallest size (8 × 8 RGB, two levels), for the test."""

    @classmethod
    def from_settings(cls, settings) -> _TinyTextUNet:
        return cls(
            TextUNetConfig(
                image_size=settings.image_size,
                train_steps=settings.train_steps,
                device=settings.device,
                guidance_scale=settings.guidance_scale,
                block_out_channels=(8, 16),
                text_dim=16,
                text_heads=2,
                max_tokens=4,
                mid_attention=False,
                num_inference_steps=4,
                lr_warmup_steps=1,
            )
        )


def _emoji_like():
    """24 RGB images of 4 holders with captions (two holders share their subjects)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)
    index = np.repeat(np.arange(4), 6)
    subjects = ["red apple", "green pear", "blue ball", "cat face", "dog face", "owl"]
    captions = subjects * 2 + [f"{s} drawn" for s in subjects] + [""] * 6  # last: no captions
    return images, index, captions


def test_holder_level_lds_runs_on_rgb_captioned_images_with_a_conditional_backend(tmp_path):
    images, index, captions = _emoji_like()
    cfg = LDSConfig(**{**TINY.__dict__, "backend": "lds-test-text-unet", "device": "cpu"})
    report = run_lds(
        tmp_path, images, index, cfg, methods=("dtrak", "pixel", "count"), kinds=("holders",),
        progress=False, captions=captions,
    )  # fmt: skip
    prompts = report["prompts"]
    assert len(prompts) == 3 and set(prompts) <= set(captions) - {""}
    assert np.load(tmp_path / "targets.npy").shape == (3, 3, 8, 8)
    for method in ("dtrak", "pixel", "count"):
        r = report["results"]["holders"][method]
        assert len(r["per_target"]) == 3 and (r["n"] == 0 or -1 <= r["mean"] <= 1)
    meta = json.loads((tmp_path / "scores" / "dtrak_p16_k2_l0.01" / "member_m0_s0" / "meta.json")
                      .read_text())  # fmt: skip
    assert meta["train_captions_sha256"] and meta["targets_captions_sha256"]
    assert json.loads((tmp_path / "run.json").read_text())["training"]["backend"] == (
        "lds-test-text-unet"
    )
    other = list(captions)
    other[0] = "yellow star"
    with pytest.raises(StageError, match="different data"):
        run_lds(tmp_path, images, index, cfg, methods=("count",), kinds=("holders",),
                captions=other)  # fmt: skip


def test_measured_loss_of_a_conditional_model_uses_each_targets_caption():
    backend = _TinyTextUNet.from_settings(LDSConfig(image_size=8, device="cpu"))
    model = backend.build(0, captions=["red apple", "green pear"])
    targets = torch.rand(2, 3, 8, 8) * 2 - 1
    ids = model.encode_captions(["red apple", "green pear"])
    conditional = measured_loss(model.unet, model.scheduler, targets, 3, seed=0, caption_ids=ids)
    swapped = measured_loss(model.unet, model.scheduler, targets, 3, 0, caption_ids=ids[[1, 0]])
    null = measured_loss(model.unet, model.scheduler, targets, 3, seed=0)
    assert conditional.shape == (2,) and not np.allclose(conditional, swapped)
    assert not np.allclose(conditional, null)
    with pytest.raises(DataError, match=r"\(2, L\)"):
        measured_loss(model.unet, model.scheduler, targets, 3, seed=0, caption_ids=ids[:1])


def test_an_unconditional_backend_refuses_captions(tmp_path):
    images, index, captions = _emoji_like()
    with pytest.raises(ConfigError, match="unconditional"):
        run_lds(tmp_path, images, index, TINY, methods=("count",), captions=captions)
    with pytest.raises(ConfigError, match="backend"):
        run_lds(tmp_path, images, index, LDSConfig(backend="nope"), methods=("count",))
