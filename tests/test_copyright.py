"""Weight-free copyright loss: semantic (UNet features) and perceptual (SSIM) similarity."""

from __future__ import annotations

import os
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
    CopyrightConfig,
    CopyrightResult,
    Encoder,
    UNetFeatureEncoder,
    compute_copyright_losses,
    perceptual_similarity,
    semantic_similarity,
    ssim_matrix,
)
from offchain.errors import ConfigError, DataError

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
    result, _ = copies_of_holder_0
    others = result.loss[1:]
    assert result.loss[0] > others.max() + 0.15, result.loss
    assert result.perceptual[0] > result.perceptual[1:].max() + 0.15, result.perceptual
    assert result.semantic[0] > result.semantic[1:].max(), result.semantic


def test_copied_pairs_have_similarity_one_and_point_at_the_copied_work(copies_of_holder_0):
    result, copied = copies_of_holder_0
    rows = np.arange(len(copied))
    np.testing.assert_allclose(result.pair_similarity[rows, copied], 1.0, atol=1e-5)
    np.testing.assert_allclose(result.pair_semantic[rows, copied], 1.0, atol=1e-5)
    np.testing.assert_allclose(result.pair_perceptual[rows, copied], 1.0, atol=1e-5)
    assert result.closest_work[0, rows].tolist() == copied.tolist()


def test_result_has_documented_shapes_dtypes_and_ranges(copies_of_holder_0):
    result, _ = copies_of_holder_0
    assert isinstance(result, CopyrightResult)
    m, n = 16, H * PER_HOLDER
    for name in ("loss", "semantic", "perceptual"):
        value = getattr(result, name)
        assert value.shape == (H,) and value.dtype == np.float64, name
        assert np.all((value >= 0) & (value <= 1)), name
    for name in ("pair_similarity", "pair_semantic", "pair_perceptual"):
        value = getattr(result, name)
        assert value.shape == (m, n) and value.dtype == np.float32, name
        assert np.all((value >= 0) & (value <= 1)), name
    np.testing.assert_allclose(
        result.pair_similarity, 0.5 * result.pair_semantic + 0.5 * result.pair_perceptual, atol=1e-6
    )
    assert result.closest_work.shape == (H, m)
    holder_index = np.repeat(np.arange(H), PER_HOLDER)
    for h in range(H):
        assert np.all(holder_index[result.closest_work[h]] == h)


def test_holder_loss_is_the_mean_over_samples_of_the_max_over_its_works(copies_of_holder_0):
    result, _ = copies_of_holder_0
    s = result.pair_similarity
    for h in range(H):
        cols = slice(h * PER_HOLDER, (h + 1) * PER_HOLDER)
        assert result.loss[h] == pytest.approx(s[:, cols].max(axis=1).mean(), abs=1e-6)


def test_holder_without_works_has_zero_loss(model):
    unet, scheduler, train, holder_index = model
    result = compute_copyright_losses(
        unet, scheduler, train[:4].numpy(), train, holder_index, H + 1, CopyrightConfig()
    )
    assert result.loss.shape == (H + 1,)
    assert result.loss[H] == 0.0 and result.semantic[H] == 0.0 and result.perceptual[H] == 0.0
    assert np.all(result.closest_work[H] == -1)
    assert result.loss[0] == pytest.approx(1.0, abs=1e-5)  # the samples are holder 0's works


def test_weights_choose_the_component(model):
    unet, scheduler, train, holder_index = model
    generated = _digits(500, 6)
    perceptual_only = compute_copyright_losses(
        unet,
        scheduler,
        generated,
        train,
        holder_index,
        H,
        CopyrightConfig(w_semantic=0.0, w_perceptual=1.0),
    )
    np.testing.assert_allclose(perceptual_only.loss, perceptual_only.perceptual, atol=1e-6)


def test_a_custom_encoder_replaces_the_unet_features(model):
    unet, scheduler, train, holder_index = model

    class PixelEncoder:
        def encode(self, images: torch.Tensor) -> torch.Tensor:
            return images.flatten(1)

    assert isinstance(PixelEncoder(), Encoder)
    result = compute_copyright_losses(
        unet, scheduler, train[:3], train, holder_index, H, encoder=PixelEncoder()
    )
    np.testing.assert_allclose(result.pair_semantic[np.arange(3), np.arange(3)], 1.0, atol=1e-5)


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
    ],
)
def test_bad_config_is_rejected(kwargs):
    with pytest.raises(ConfigError):
        CopyrightConfig(**kwargs)


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


def test_pair_similarities_for_32_by_512_take_seconds_not_minutes(model):
    unet, scheduler, _, _ = model
    train = _digits(0, 512)
    generated = _digits(1000, 32)
    start = time.perf_counter()
    result = compute_copyright_losses(
        unet, scheduler, generated, train, np.arange(512) % 8, 8, CopyrightConfig()
    )
    elapsed = time.perf_counter() - start
    assert result.pair_similarity.shape == (32, 512)
    assert elapsed < 10, f"{elapsed:.1f} s"
