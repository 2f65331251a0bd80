"""Copyright loss: similarity features, augmentations, calibration, encoders, holder loss."""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from skimage.metrics import structural_similarity
from sklearn.datasets import load_digits

from offchain.copyright import (
    AUGMENTATIONS,
    FEATURE_NAMES,
    Calibration,
    CalibrationConfig,
    CopyrightConfig,
    CopyrightResult,
    Encoder,
    HuggingFaceEncoder,
    TorchScriptEncoder,
    UNetFeatureEncoder,
    augment,
    centered_cosine,
    choose_thresholds,
    compute_copyright_losses,
    copyright_calibration_report,
    fit_calibration,
    load_encoder,
    perceptual_similarity,
    run_calibration,
    score_pairs,
    semantic_similarity,
    ssim_matrix,
    ssim_pairs,
    tiled_l2_matrix,
    tiled_l2_pairs,
)
from offchain.copyright.encoders import IMAGENET_MEAN, IMAGENET_STD
from offchain.errors import ConfigError, DataError, StageError

H, PER_HOLDER = 4, 16


def _digits(start: int, n: int) -> torch.Tensor:
    """sklearn digits [start, start + n) upscaled to float32 (n, 1, 16, 16) in [-1, 1]."""
    raw = load_digits().images[start : start + n].astype(np.float32) / 16.0
    images = torch.from_numpy(raw)[:, None]
    return (F.interpolate(images, size=16, mode="bilinear", align_corners=False) * 2 - 1).clamp(
        -1, 1
    )


@pytest.fixture(scope="module")
def model():
    """A tiny UNet trained 60 steps on the training works."""
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    train = _digits(0, H * PER_HOLDER)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(unet.parameters(), lr=2e-3)
    for _ in range(60):
        x0 = train[torch.randint(0, len(train), (32,), generator=gen)]
        eps = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (32,), generator=gen)
        loss = F.mse_loss(unet(scheduler.add_noise(x0, eps, t), t).sample, eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
    unet.eval()
    holder_index = np.repeat(np.arange(H), PER_HOLDER).astype(np.int64)
    return unet, scheduler, train, holder_index


@pytest.fixture(scope="module")
def calibration(model):
    """The default calibration on the fixture model's encoder and works."""
    unet, scheduler, train, holder_index = model
    return fit_calibration(UNetFeatureEncoder(unet, scheduler), train, holder_index)


@pytest.fixture(scope="module")
def copies_of_holder_0(model):
    """8 exact copies of holder 0's works plus 8 unseen digits."""
    unet, scheduler, train, holder_index = model
    copied = np.array([0, 2, 4, 6, 8, 10, 12, 14])
    generated = torch.cat([train[copied], _digits(500, 8)])
    result = compute_copyright_losses(
        unet, scheduler, generated, train, holder_index, H, CopyrightConfig()
    )
    return result, copied


# ----------------------------------------------------------------------------- holder loss


def test_exact_copies_of_one_holders_works_give_that_holder_the_highest_loss(copies_of_holder_0):
    result, copied = copies_of_holder_0
    # 8 exact copies among 16 generations: ~8 expected copies, share ~0.5; others ~0.
    assert result.expected_copies[0] == pytest.approx(len(copied), abs=0.5), result.expected_copies
    assert result.expected_copies[1:].max() < 1.0, result.expected_copies
    assert result.loss[0] > result.loss[1:].max() + 0.4, result.loss
    assert result.n_copies.tolist() == [len(copied), 0, 0, 0]
    assert result.n_replications.tolist() == [len(copied), 0, 0, 0]
    assert result.perceptual[0] > result.perceptual[1:].max() + 0.15, result.perceptual
    assert result.semantic[0] > result.semantic[1:].max(), result.semantic


def test_copied_pairs_have_similarity_one_and_point_at_the_copied_work(copies_of_holder_0):
    result, copied = copies_of_holder_0
    rows = np.arange(len(copied))
    np.testing.assert_allclose(result.pair_similarity[rows, copied], 1.0, atol=1e-5)
    np.testing.assert_allclose(result.pair_semantic[rows, copied], 1.0, atol=1e-5)
    np.testing.assert_allclose(result.pair_perceptual[rows, copied], 1.0, atol=1e-5)
    np.testing.assert_allclose(result.pair_tiled_l2[rows, copied], 0.0, atol=1e-4)
    assert np.all(result.pair_probability[rows, copied] >= result.calibration.copy_threshold)
    assert result.closest_work[0, rows].tolist() == copied.tolist()


def test_result_has_documented_shapes_dtypes_and_ranges(copies_of_holder_0):
    result, _ = copies_of_holder_0
    assert isinstance(result, CopyrightResult)
    m, n = 16, H * PER_HOLDER
    assert result.n_generations == m
    for name in ("loss", "semantic", "perceptual"):
        value = getattr(result, name)
        assert value.shape == (H,) and value.dtype == np.float64, name
        assert np.all((value >= 0) & (value <= 1)), name
    for name in ("expected_copies", "weighted"):
        value = getattr(result, name)
        assert value.shape == (H,) and value.dtype == np.float64, name
        assert np.all((value >= 0) & (value <= m)), name
    assert np.all(result.weighted <= result.expected_copies + 1e-9)
    for name in ("n_replications", "n_copies"):
        value = getattr(result, name)
        assert value.shape == (H,) and value.dtype == np.int64, name
        assert np.all((value >= 0) & (value <= m)), name
    assert np.all(result.n_copies <= result.n_replications)
    assert result.share is result.loss
    for name in ("pair_probability", "pair_similarity", "pair_semantic", "pair_perceptual"):
        value = getattr(result, name)
        assert value.shape == (m, n) and value.dtype == np.float32, name
        assert np.all((value >= 0) & (value <= 1)), name
    assert result.pair_tiled_l2.shape == (m, n) and np.all(result.pair_tiled_l2 >= 0)
    np.testing.assert_allclose(
        result.pair_similarity, 0.5 * result.pair_semantic + 0.5 * result.pair_perceptual, atol=1e-6
    )
    assert result.closest_work.shape == (H, m)
    holder_index = np.repeat(np.arange(H), PER_HOLDER)
    for h in range(H):
        assert np.all(holder_index[result.closest_work[h]] == h)


def test_summary_is_json_ready(copies_of_holder_0):
    result, _ = copies_of_holder_0
    summary = json.loads(json.dumps(result.summary()))
    assert summary["expected_copies"] == pytest.approx(result.expected_copies.tolist())
    assert summary["loss"] == pytest.approx(result.loss.tolist())
    assert summary["n_copies"] == result.n_copies.tolist() and summary["n_generations"] == 16
    assert summary["calibration"]["thresholds"]["copy"] == result.calibration.copy_threshold


def test_holder_statistics_match_a_hand_computation_from_the_pair_matrices(copies_of_holder_0):
    result, _ = copies_of_holder_0
    p = result.pair_probability.astype(np.float64)
    s = result.pair_similarity.astype(np.float64)
    cal = result.calibration
    for h in range(H):
        cols = slice(h * PER_HOLDER, (h + 1) * PER_HOLDER)
        pmax = p[:, cols].max(axis=1)
        assert result.expected_copies[h] == pytest.approx(pmax.sum(), abs=1e-4)
        assert result.loss[h] == pytest.approx(pmax.sum() / 16, abs=1e-5)
        assert result.weighted[h] == pytest.approx((p[:, cols] * s[:, cols]).max(1).sum(), abs=1e-4)
        assert result.n_replications[h] == int(np.sum(pmax >= cal.replication_threshold))
        assert result.n_copies[h] == int(np.sum(pmax >= cal.copy_threshold))
        sem = result.pair_semantic[:, cols].max(axis=1).mean()
        assert result.semantic[h] == pytest.approx(sem, abs=1e-6)


def test_unseen_digits_have_a_near_zero_floor(model):
    """The old uncalibrated score gave unrelated images ~0.55–0.63; the share must be ~0."""
    unet, scheduler, train, holder_index = model
    result = compute_copyright_losses(unet, scheduler, _digits(500, 16), train, holder_index, H)
    assert result.loss.max() < 0.1, result.loss
    assert result.n_copies.sum() <= 1, result.n_copies


def test_holder_without_works_has_zero_loss(model):
    unet, scheduler, train, holder_index = model
    result = compute_copyright_losses(
        unet, scheduler, train[:4].numpy(), train, holder_index, H + 1, CopyrightConfig()
    )
    assert result.loss.shape == (H + 1,)
    for name in ("loss", "expected_copies", "weighted", "semantic", "perceptual", "tiled_l2"):
        assert getattr(result, name)[H] == 0.0, name
    assert result.n_replications[H] == 0 and result.n_copies[H] == 0
    assert np.all(result.closest_work[H] == -1)
    assert result.loss[0] == pytest.approx(1.0, abs=0.01)  # the samples are holder 0's works


def test_weights_choose_the_component_of_the_uncalibrated_similarity(model):
    unet, scheduler, train, holder_index = model
    cfg = CopyrightConfig(w_semantic=0.0, w_perceptual=1.0)
    perceptual_only = compute_copyright_losses(
        unet, scheduler, _digits(500, 6), train, holder_index, H, cfg
    )
    np.testing.assert_allclose(
        perceptual_only.pair_similarity, perceptual_only.pair_perceptual, atol=1e-6
    )


def test_a_custom_encoder_replaces_the_unet_features(model):
    unet, scheduler, train, holder_index = model

    class PixelEncoder:
        name = "pixels"

        def encode(self, images: torch.Tensor) -> torch.Tensor:
            return images.flatten(1)

    assert isinstance(PixelEncoder(), Encoder)
    result = compute_copyright_losses(
        unet, scheduler, train[:3], train, holder_index, H, encoder=PixelEncoder()
    )
    assert result.calibration.encoder == "pixels"
    np.testing.assert_allclose(result.pair_semantic[np.arange(3), np.arange(3)], 1.0, atol=1e-5)


def test_a_passed_calibration_is_used_and_must_match_the_encoder(model, calibration):
    unet, scheduler, train, holder_index = model
    result = compute_copyright_losses(
        unet, scheduler, train[:2], train, holder_index, H, calibration=calibration
    )
    assert result.calibration is calibration

    class Other:
        name = "other"

        def encode(self, images: torch.Tensor) -> torch.Tensor:
            return images.flatten(1)

    with pytest.raises(ConfigError, match="encoder"):
        compute_copyright_losses(
            unet, scheduler, train[:2], train, holder_index, H, None, Other(), calibration
        )


# -------------------------------------------------------------------------- input validation


def test_images_outside_minus_one_to_one_are_rejected(model):
    unet, scheduler, train, holder_index = model
    with pytest.raises(DataError, match=r"\[-1, 1\]"):
        compute_copyright_losses(unet, scheduler, train[:2] * 3, train, holder_index, H)


@pytest.mark.parametrize(
    "holder_index, n_holders, exc",
    [
        (np.zeros(10, dtype=np.int64), H, DataError),  # wrong length
        (np.full(H * PER_HOLDER, H, dtype=np.int64), H, DataError),  # out of range
        (np.zeros(H * PER_HOLDER), H, DataError),  # float indices
        (np.zeros(H * PER_HOLDER, dtype=np.int64), 0, ConfigError),
    ],
)
def test_bad_holder_index_is_rejected(model, holder_index, n_holders, exc):
    unet, scheduler, train, _ = model
    with pytest.raises(exc):
        compute_copyright_losses(unet, scheduler, train[:2], train, holder_index, n_holders)


def test_mismatched_image_shapes_are_rejected(model):
    unet, scheduler, train, holder_index = model
    with pytest.raises(DataError, match="image shape"):
        compute_copyright_losses(unet, scheduler, train[:2, :, :8, :8], train, holder_index, H)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"w_semantic": 0.7, "w_perceptual": 0.7},
        {"w_semantic": -0.5, "w_perceptual": 1.5},
        {"ssim_win_size": 4},
        {"semantic_timestep": -1},
        {"tile_size": 0},
        {"calibration": {"n_anchors": 10}},
    ],
)
def test_bad_config_is_rejected(kwargs):
    with pytest.raises(ConfigError):
        CopyrightConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_anchors": 2},
        {"augmentations": ()},
        {"augmentations": ("noise", "noise")},
        {"augmentations": ("blur",)},
        {"test_fraction": 1.0},
        {"random_negatives": 0, "hard_negatives": False},
        {"copy_precision": 0.0},
        {"replication_recall": 1.5},
        {"prior": 0.0},
        {"prior": 1.0},
        {"l2": -1.0},
        {"fit_exclude": ("crop",), "augmentations": ("crop", "crop+jpeg")},
        {"fit_exclude": ("zoom",)},
    ],
)
def test_bad_calibration_config_is_rejected(kwargs):
    with pytest.raises(ConfigError):
        CalibrationConfig(**kwargs)


def test_encoder_rejects_unknown_layers_and_timesteps(model):
    unet, scheduler, _, _ = model
    with pytest.raises(ConfigError, match="layers"):
        UNetFeatureEncoder(unet, scheduler, layers=["no_such_block"])
    with pytest.raises(ConfigError, match="timestep"):
        UNetFeatureEncoder(unet, scheduler, timestep=1000)


# ------------------------------------------------------------------------------ similarities


def test_ssim_of_an_image_with_itself_is_one():
    images = _digits(0, 8)
    s = ssim_matrix(images, images)
    assert s.shape == (8, 8) and s.dtype == torch.float32
    np.testing.assert_allclose(torch.diagonal(s).numpy(), 1.0, atol=1e-6)
    assert float(s.max()) <= 1.0 + 1e-6


def test_ssim_matrix_matches_scikit_image():
    a, b = _digits(0, 5), _digits(100, 7)
    s = ssim_matrix(a, b)
    for m in range(5):
        for n in range(7):
            ref = structural_similarity(a[m, 0].numpy(), b[n, 0].numpy(), data_range=2.0)
            assert s[m, n].item() == pytest.approx(ref, abs=1e-5)


def test_ssim_matrix_matches_scikit_image_on_multichannel_images():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 12, 12, generator=gen) * 2 - 1
    b = torch.rand(3, 3, 12, 12, generator=gen) * 2 - 1
    s = ssim_matrix(a, b)
    ref = structural_similarity(a[1].numpy(), b[2].numpy(), data_range=2.0, channel_axis=0)
    assert s[1, 2].item() == pytest.approx(ref, abs=1e-5)


def test_ssim_is_chunked_without_changing_the_result():
    a, b = _digits(0, 4), _digits(50, 9)
    np.testing.assert_allclose(
        ssim_matrix(a, b, max_chunk_elements=1).numpy(), ssim_matrix(a, b).numpy(), atol=1e-7
    )


def test_ssim_rejects_images_smaller_than_the_window():
    with pytest.raises(DataError, match="smaller"):
        ssim_matrix(torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 5, 5))


def test_perceptual_similarity_clips_negative_ssim_to_zero():
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 - 0.5
    a = checker.float().view(1, 1, 16, 16)  # anti-correlated structure: SSIM(a, −a) ≈ −0.31
    s_raw = ssim_matrix(a, -a)
    assert s_raw.item() < -0.2
    assert s_raw.item() == pytest.approx(
        structural_similarity(a[0, 0].numpy(), -a[0, 0].numpy(), data_range=2.0), abs=1e-5
    )
    assert perceptual_similarity(a, -a).item() == 0.0


def test_semantic_similarity_is_one_for_identical_embeddings_and_clips_opposites():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    gen = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    s = semantic_similarity(gen, train)  # the train mean is 0 here
    assert s.shape == (2, 4)
    assert s[0, 0].item() == pytest.approx(1.0) and s[0, 2].item() == 0.0
    assert s[1, 2].item() == pytest.approx(1.0) and s[0, 1].item() == pytest.approx(0.0, abs=1e-7)


def test_unet_encoder_is_deterministic_and_restores_the_training_flag(model):
    unet, scheduler, train, _ = model
    encoder = UNetFeatureEncoder(unet, scheduler, batch_size=5)
    unet.train()
    try:
        e1, e2 = encoder.encode(train[:7]), encoder.encode(train[:7])
        assert unet.training
    finally:
        unet.eval()
    assert e1.shape == (7, 32 + 32)  # deepest down block (32 ch) + mid block (32 ch)
    assert torch.equal(e1, e2)
    assert encoder.name == "unet(t=20,layers=down_blocks.1+mid_block)"


def test_unet_encoder_stops_early_without_changing_the_features(model):
    """The early exit after the last hooked layer gives the features of a full forward pass."""
    unet, scheduler, train, _ = model
    encoder = UNetFeatureEncoder(unet, scheduler)
    captured = {}

    def hook(name):
        def _hook(_m, _i, out):
            captured[name] = (out[0] if isinstance(out, tuple) else out).mean(dim=(2, 3))

        return _hook

    handles = [dict(unet.named_modules())[n].register_forward_hook(hook(n)) for n in encoder.layers]
    try:
        gen = torch.Generator().manual_seed(0)
        noise = torch.randn((1, *train.shape[1:]), generator=gen)
        a = encoder.alpha_bar
        with torch.no_grad():
            out = unet(a**0.5 * train[:5] + (1 - a) ** 0.5 * noise, torch.full((5,), 20)).sample
    finally:
        for h in handles:
            h.remove()
    assert out.shape == train[:5].shape  # the full pass ran to the end
    ref = torch.cat([F.normalize(captured[n], dim=1) for n in encoder.layers], 1)
    torch.testing.assert_close(encoder.encode(train[:5]), ref, atol=1e-6, rtol=1e-5)


def test_unet_encoder_pool_grid_keeps_the_coarse_layout(model):
    unet, scheduler, train, _ = model
    encoder = UNetFeatureEncoder(unet, scheduler, pool_grid=2)
    assert encoder.encode(train[:3]).shape == (3, 4 * (32 + 32))
    assert encoder.name.endswith(",grid=2)")
    with pytest.raises(ConfigError, match="pool_grid"):
        UNetFeatureEncoder(unet, scheduler, pool_grid=0)


def test_calibration_and_pair_scores_work_at_round_scale_32_by_512(model):
    unet, scheduler, _, _ = model
    train = _digits(0, 512)
    generated = _digits(1000, 32)
    encoder = UNetFeatureEncoder(unet, scheduler)
    start = time.perf_counter()
    calibration = fit_calibration(encoder, train, np.arange(512) % 8)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    result = compute_copyright_losses(
        unet, scheduler, generated, train, np.arange(512) % 8, 8, None, encoder, calibration
    )
    score_s = time.perf_counter() - start
    assert result.pair_probability.shape == (32, 512)
    assert np.isfinite(result.pair_probability).all()
    # Speed is a benchmark figure (docs/copyright.md: fit ≈ 3–4 s, scores ≈ 0.6 s single
    # thread), not a test assertion; the record must say how long the fit took.
    assert 0 < calibration.fit_seconds <= fit_s + 0.5 and score_s > 0


# ------------------------------------------------------------------------------ tiled ℓ2


def _naive_tiled_l2(a: np.ndarray, b: np.ndarray, t: int) -> float:
    """max over t × t tiles of the per-tile RMSE, by loops."""
    c, h, w = a.shape
    worst = 0.0
    for y in range(0, h, t):
        for x in range(0, w, t):
            d = a[:, y : y + t, x : x + t].astype(np.float64) - b[:, y : y + t, x : x + t]
            worst = max(worst, float(np.sqrt(np.mean(d**2))))
    return worst


@pytest.mark.parametrize("tile_size, channels", [(4, 1), (8, 1), (2, 3), (16, 1)])
def test_tiled_l2_matrix_matches_a_naive_loop(tile_size, channels):
    gen = torch.Generator().manual_seed(tile_size)
    a = torch.rand(3, channels, 16, 16, generator=gen) * 2 - 1
    b = torch.rand(5, channels, 16, 16, generator=gen) * 2 - 1
    d = tiled_l2_matrix(a, b, tile_size=tile_size)
    assert d.shape == (3, 5) and d.dtype == torch.float32
    for m in range(3):
        for n in range(5):
            ref = _naive_tiled_l2(a[m].numpy(), b[n].numpy(), tile_size)
            assert d[m, n].item() == pytest.approx(ref, abs=1e-5)
    pairs = tiled_l2_pairs(a, b[:3], tile_size=tile_size)
    np.testing.assert_allclose(pairs.numpy(), torch.diagonal(d[:, :3]).numpy(), atol=1e-6)


def test_tiled_l2_is_zero_for_copies_chunks_exactly_and_sees_one_changed_tile():
    a = _digits(0, 6)
    d = tiled_l2_matrix(a, a)
    np.testing.assert_allclose(torch.diagonal(d).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(
        tiled_l2_matrix(a, _digits(9, 7), max_chunk_elements=1).numpy(),
        tiled_l2_matrix(a, _digits(9, 7)).numpy(),
        atol=1e-7,
    )
    # One 4 × 4 tile flipped in sign: the max-tile distance sees it, the global RMSE dilutes it.
    b = a[:1].clone()
    b[..., :4, :4] = -b[..., :4, :4]
    tiled = tiled_l2_matrix(a[:1], b).item()
    global_rmse = float(torch.sqrt(((a[:1] - b) ** 2).mean()))
    assert tiled == pytest.approx(4 * global_rmse, rel=1e-5)  # 1 of 16 tiles differs


def test_tiled_l2_rejects_tiles_that_do_not_divide_the_image():
    with pytest.raises(DataError, match="divide"):
        tiled_l2_matrix(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16), tile_size=5)
    with pytest.raises(ConfigError):
        tiled_l2_matrix(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16), tile_size=0)


def test_ssim_pairs_are_the_diagonal_of_the_ssim_matrix():
    a, b = _digits(0, 6), _digits(200, 6)
    np.testing.assert_allclose(
        ssim_pairs(a, b).numpy(), torch.diagonal(ssim_matrix(a, b)).numpy(), atol=1e-6
    )


def test_centered_cosine_paired_is_the_diagonal():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    mu = torch.randn(6, generator=gen)
    full = centered_cosine(a, b, mu)
    np.testing.assert_allclose(
        centered_cosine(a, b, mu, paired=True).numpy(), torch.diagonal(full).numpy(), atol=1e-6
    )
    assert float(full.min()) >= -1 and float(full.max()) <= 1


# ---------------------------------------------------------------------------- augmentations


@pytest.mark.parametrize("name", [*AUGMENTATIONS, "crop+flip+noise+colour+jpeg"])
def test_augmentations_are_deterministic_in_range_and_change_the_image(name):
    x = _digits(0, 8)
    y1, y2 = augment(x, name, seed=3), augment(x, name, seed=3)
    assert y1.shape == x.shape and y1.dtype == torch.float32
    assert torch.equal(y1, y2)
    assert float(y1.min()) >= -1.0 and float(y1.max()) <= 1.0
    assert (y1 - x).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every image changed
    if name != "flip":
        assert not torch.equal(augment(x, name, seed=4), y1)  # the seed matters


def test_flip_is_an_exact_mirror_and_jpeg_handles_rgb():
    x = _digits(0, 2)
    assert torch.equal(augment(x, "flip"), x.flip(-1))
    rgb = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = augment(rgb, "jpeg")
    assert y.shape == rgb.shape and float(y.abs().max()) <= 1.0


def test_augment_rejects_unknown_names_and_bad_shapes():
    with pytest.raises(ConfigError, match="unknown augmentation"):
        augment(_digits(0, 1), "blur")
    with pytest.raises(ConfigError):
        augment(_digits(0, 1), "")
    with pytest.raises(DataError):
        augment(torch.zeros(16, 16), "noise")


# ------------------------------------------------------------------------------ calibration


class _PixelEncoder:
    name = "pixels"

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


def _smooth_images(n: int, seed: int) -> torch.Tensor:
    """Unrelated smooth random images, float32 (n, 1, 16, 16) in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 4, 4, generator=gen) * 2 - 1
    return F.interpolate(low, size=16, mode="bicubic", align_corners=False).clamp(-1, 1)


_EASY = CalibrationConfig(
    n_anchors=32, augmentations=("noise", "jpeg", "colour", "flip"), fit_exclude=()
)


@pytest.fixture(scope="module")
def easy_calibration():
    works = _smooth_images(48, 0)
    cfg = CopyrightConfig(calibration=_EASY)
    return fit_calibration(_PixelEncoder(), works, np.arange(48) % 4, cfg), works


def _row(cal, group, threshold="replication", split="held-out"):
    rows = [
        r
        for r in cal.table
        if (r["split"], r["group"], r["threshold"]) == (split, group, threshold)
    ]
    assert len(rows) == 1
    return rows[0]


def test_calibration_on_an_easy_set_has_high_precision_and_recall(easy_calibration):
    cal, _ = easy_calibration
    for threshold in ("replication", "copy"):
        row = _row(cal, "overall", threshold)
        assert row["precision"] >= 0.95 and row["recall"] >= 0.9, row
    assert cal.average_precision["overall"] > 0.95
    assert cal.retrieval_top1 > 0.9
    assert cal.holder_level["replication"]["precision"] >= 0.95
    assert cal.n_pos == 16 * 4 and cal.n_neg > cal.n_pos
    assert cal.n_anchors == (16, 16) and cal.encoder == "pixels"


def test_calibrated_probability_is_monotone_in_every_feature(easy_calibration):
    cal, _ = easy_calibration
    signs = {"semantic": 1, "ssim": 1, "log_tiled_l2": -1, "log_relative_l2": -1}
    assert cal.feature_names == FEATURE_NAMES and set(FEATURE_NAMES) == set(signs)
    for w, name in zip(cal.coef, cal.feature_names, strict=True):
        assert w * signs[name] >= 0, (name, w)
    assert any(w != 0 for w in cal.coef)  # not constant
    grid = np.linspace(-1, 1, 21)
    base = {name: np.zeros(21) for name in FEATURE_NAMES}
    for name, sign in signs.items():
        p = cal.probability({**base, name: grid})
        assert np.all(np.diff(p) * sign >= 0), name
        assert np.all((p >= 0) & (p <= 1))


def test_calibration_thresholds_follow_the_documented_rules(easy_calibration):
    cal, _ = easy_calibration
    assert 0.0 <= cal.replication_threshold <= cal.copy_threshold <= 1.0
    assert cal.prior == 0.02
    assert "F1" in cal.rules["replication"] and "0.95" in cal.rules["copy"]


def test_choose_thresholds_by_hand():
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    y = np.array([1, 1, 0, 1, 0, 0, 0])
    # F1 per threshold: 0.5, 0.8, 0.67, 0.857 (t = 0.6), 0.75, ... → halfway to 0.5.
    rep, cp = choose_thresholds(p, y)
    assert rep == pytest.approx(0.55)
    # Precision ≥ 0.95 at 0.9 and 0.8, not at 0.7 → halfway between 0.8 and 0.7.
    assert cp == pytest.approx(0.75)
    rep_r, _ = choose_thresholds(p, y, replication_recall=1.0)
    assert rep_r == pytest.approx(0.55)  # the highest threshold with recall 1 is 0.6
    rep_r, _ = choose_thresholds(p, y, replication_recall=0.5)
    assert rep_r == pytest.approx(0.75)  # 2 of 3 positives from t = 0.8 on
    # A copy threshold is never below the replication threshold.
    rep2, cp2 = choose_thresholds(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0]))
    assert rep2 == pytest.approx(0.45) and cp2 == pytest.approx(0.45)
    # Unreachable precision (the top score is a negative): no copy threshold.
    assert choose_thresholds(np.array([0.9, 0.8]), np.array([0, 1]))[1] is None
    with pytest.raises(DataError):
        choose_thresholds(np.array([0.9, 0.8]), np.array([1, 1]))


def test_calibration_json_round_trip(easy_calibration, tmp_path):
    cal, works = easy_calibration
    path = cal.save(tmp_path / "calibration.json")
    loaded = Calibration.load(path)
    assert loaded.to_dict() == json.loads(json.dumps(cal.to_dict()))
    assert loaded.to_dict() == cal.to_dict()
    a = score_pairs(_PixelEncoder(), works[:5], works, cal).probability
    b = score_pairs(_PixelEncoder(), works[:5], works, loaded).probability
    np.testing.assert_array_equal(a, b)
    fields = json.loads(path.read_text())
    for key in (
        "feature_names",
        "coef",
        "intercept",
        "thresholds",
        "table",
        "n_pos",
        "n_neg",
        "encoder",
        "seed",
        "prior",
        "features",
        "augmentations",
    ):
        assert key in fields, key


def test_calibration_json_errors(easy_calibration, tmp_path):
    cal, _ = easy_calibration
    with pytest.raises(ConfigError, match="does not exist"):
        Calibration.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="JSON"):
        Calibration.load(bad)
    d = cal.to_dict()
    with pytest.raises(ConfigError, match="version"):
        Calibration.from_dict({**d, "version": 99})
    with pytest.raises(ConfigError):
        Calibration.from_dict({k: v for k, v in d.items() if k != "coef"})
    with pytest.raises(ConfigError):
        Calibration.from_dict({**d, "thresholds": {"replication": 0.9, "copy": 0.5}})


def test_calibration_is_deterministic():
    works = _smooth_images(24, 1)
    cfg = CopyrightConfig(calibration=CalibrationConfig(n_anchors=16, fit_exclude=()))
    a = fit_calibration(_PixelEncoder(), works, None, cfg).to_dict()
    b = fit_calibration(_PixelEncoder(), works, None, cfg).to_dict()
    a.pop("fit_seconds"), b.pop("fit_seconds")
    assert a == b
    assert a["holder_level"] is None


def test_duplicate_works_are_grouped_and_never_negatives_of_each_other():
    works = _smooth_images(20, 4)
    with_duplicates = torch.cat([works, works[:10], works[:3]])  # 33 works, 20 distinct
    cfg = CopyrightConfig(calibration=_EASY)
    cal = fit_calibration(_PixelEncoder(), with_duplicates, np.arange(33) % 3, cfg)
    assert cal.n_works == 33 and cal.n_distinct_works == 20
    assert sum(cal.n_anchors) == 20
    # A duplicate of the source would be a "negative" at distance 0, i.e. a false positive.
    for kind in ("nearest_tiled_l2", "nearest_ssim", "random"):
        assert _row(cal, f"negatives:{kind}")["fp"] == 0, kind
    assert cal.holder_level["replication"]["fp"] == 0


def test_calibration_with_external_negatives_reports_them():
    works, external = _smooth_images(24, 2), _smooth_images(20, 3)
    cfg = CopyrightConfig(calibration=_EASY)
    cal = fit_calibration(_PixelEncoder(), works, None, cfg, external=external)
    assert cal.n_external == 20
    assert any(r["group"] == "negatives:external" for r in cal.table)
    report = copyright_calibration_report(cal)
    assert "| held-out | overall | replication |" in report
    assert "negatives:external" in report and "copy p ≥" in report


@pytest.mark.parametrize(
    "works, holder_index, match",
    [
        (_smooth_images(5, 0), None, "distinct works"),  # too few works
        (_smooth_images(1, 0).repeat(20, 1, 1, 1), None, "distinct works"),  # one image
        (_smooth_images(20, 0) * 3, None, r"\[-1, 1\]"),  # out of range
        (_smooth_images(20, 0)[:, 0], None, "shape"),  # not 4-D
        (_smooth_images(20, 0), np.zeros(3, dtype=np.int64), "holder_index"),
    ],
)
def test_fit_calibration_rejects_degenerate_input(works, holder_index, match):
    with pytest.raises(DataError, match=match):
        fit_calibration(_PixelEncoder(), works, holder_index)


def test_fit_calibration_rejects_a_bad_encoder_output():
    class Broken:
        def encode(self, images: torch.Tensor) -> torch.Tensor:
            return torch.zeros(1, 3)

    with pytest.raises(DataError, match="encoder returned"):
        fit_calibration(Broken(), _smooth_images(20, 0))


def test_score_pairs_rejects_another_image_shape(easy_calibration):
    cal, _ = easy_calibration
    with pytest.raises(ConfigError, match="images"):
        score_pairs(_PixelEncoder(), torch.zeros(2, 1, 8, 8), torch.zeros(10, 1, 8, 8), cal)


# --------------------------------------------------------------------------------- encoders


def test_load_encoder_builds_the_unet_encoder(model):
    unet, scheduler, train, _ = model
    encoder = load_encoder("unet", unet, scheduler, timestep=30)
    assert isinstance(encoder, UNetFeatureEncoder) and encoder.timestep == 30


@pytest.mark.parametrize(
    "spec, match",
    [
        ("unet", "UNet"),
        ("torchscript:/no/such/model.pt", "does not exist"),
        ("hf:/no/such/folder", "does not exist"),
        ("torchscript:", "no path"),
        ("sscd", "unknown encoder"),
        ("", "non-empty"),
    ],
)
def test_load_encoder_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        load_encoder(spec)


def test_huggingface_encoder_without_transformers_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails
    with pytest.raises(ConfigError, match="pip install transformers"):
        load_encoder(f"hf:{tmp_path}")
    with pytest.raises(ConfigError, match="pip install transformers"):
        HuggingFaceEncoder(tmp_path)


class _TinyEncoder(torch.nn.Module):
    """A stand-in for SSCD: conv + global pool + linear, (B, 3, S, S) → (B, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).relu().mean(dim=(2, 3)))


class _Identity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_torchscript_encoder_runs_a_scripted_module(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(_TinyEncoder()), str(path))
    encoder = load_encoder(f"torchscript:{path}", input_size=32)
    assert isinstance(encoder, TorchScriptEncoder) and encoder.name.startswith("torchscript:tiny")
    x = _digits(0, 5)
    e1, e2 = encoder.encode(x), encoder.encode(x)
    assert e1.shape == (5, 8) and e1.dtype == torch.float32 and torch.equal(e1, e2)
    assert isinstance(encoder, Encoder)
    cal = fit_calibration(encoder, _digits(0, 24), None, CopyrightConfig(calibration=_EASY))
    assert cal.encoder == encoder.name


def test_torchscript_encoder_preprocessing(tmp_path):
    path = tmp_path / "identity.pt"
    torch.jit.save(torch.jit.script(_Identity()), str(path))
    x = _digits(0, 2)
    raw = TorchScriptEncoder(path, input_size=None, normalize="none").encode(x)
    # Grayscale repeated to 3 channels, [-1, 1] → [0, 1].
    torch.testing.assert_close(raw, ((x + 1) / 2).expand(-1, 3, -1, -1).flatten(1))
    norm = TorchScriptEncoder(path, input_size=8).encode(x)
    assert norm.shape == (2, 3 * 8 * 8)
    img = norm.view(2, 3, 8, 8)
    # A blank (−1) image maps to −mean/std per channel under ImageNet normalisation.
    blank = TorchScriptEncoder(path, input_size=8).encode(-torch.ones(1, 1, 16, 16))
    expect = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)])
    torch.testing.assert_close(blank.view(3, 64).mean(1), expect, atol=1e-5, rtol=1e-5)
    assert img.shape == (2, 3, 8, 8)


def test_torchscript_encoder_rejects_non_torchscript_files(tmp_path):
    path = tmp_path / "not_a_model.pt"
    path.write_bytes(b"hello")
    with pytest.raises(ConfigError, match="cannot load"):
        TorchScriptEncoder(path)
    with pytest.raises(ConfigError, match="normalize"):
        torch.jit.save(torch.jit.script(_Identity()), str(tmp_path / "id.pt"))
        TorchScriptEncoder(tmp_path / "id.pt", normalize="zscore")


# ------------------------------------------------------------------------ run_calibration


def test_run_calibration_writes_json_and_markdown_and_skips_when_present(tmp_path):
    from offchain.diffusion import DiffusionConfig, train_round

    digits = (load_digits().images[:40] * 16).clip(0, 255).astype(np.uint8)
    cfg = DiffusionConfig(train_steps=2, block_out_channels=(8, 16), batch_size=8, num_threads=1)
    ckpt = train_round(digits, tmp_path / "ckpt", cfg, progress=False)
    out = tmp_path / "cal"
    small = CopyrightConfig(calibration=CalibrationConfig(n_anchors=16))
    path = run_calibration(ckpt, digits, np.arange(40) % 4, out, image_size=16, cfg=small)
    assert path == out / "calibration.json"
    md = (out / "calibration.md").read_text()
    assert "| split | group | threshold |" in md and "Holder level" in md
    cal = Calibration.load(path)
    assert cal.encoder.startswith("unet(") and cal.n_works == 40
    mtime = path.stat().st_mtime_ns
    (out / "calibration.md").unlink()
    assert run_calibration(ckpt, digits, None, out) == path  # skipped: json present
    assert path.stat().st_mtime_ns == mtime and (out / "calibration.md").exists()
    with pytest.raises(StageError):
        run_calibration(tmp_path / "missing", digits, None, tmp_path / "other")


class _MeanColour:
    """A tiny weight-free encoder: each image's mean per channel, float32 (B, C)."""

    name = "mean-colour"

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().mean(dim=(2, 3))


def test_pixel_features_of_large_images_compare_64_px_views() -> None:
    from offchain.copyright.calibration import ReferenceSet
    from offchain.copyright.config import FeatureSettings

    gen = torch.Generator().manual_seed(0)
    works = torch.rand((6, 3, 128, 128), generator=gen) * 2 - 1
    queries = torch.cat([works[:2], torch.rand((2, 3, 128, 128), generator=gen) * 2 - 1])
    settings = FeatureSettings()
    assert settings.max_pixel_side == 64
    large = ReferenceSet(_MeanColour(), works, settings)
    assert tuple(large.pixels.shape) == (6, 3, 64, 64)
    got = large.matrices(queries, large.encode(queries))

    small = ReferenceSet(_MeanColour(), F.interpolate(works, size=(64, 64), mode="area"), settings)
    q64 = F.interpolate(queries, size=(64, 64), mode="area")
    want = small.matrices(q64, small.encode(q64))
    for name in ("ssim", "tiled_l2", "log_relative_l2"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
    assert got["ssim"][0, 0] == pytest.approx(1.0, abs=1e-5)  # an exact copy at 64 px
    # images at or below the side are compared whole (every built-in model's numbers unchanged)
    assert settings.pixel_view(q64) is q64
    with pytest.raises(ConfigError, match="max_pixel_side"):
        FeatureSettings(max_pixel_side=5)
