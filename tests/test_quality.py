"""Quality metric: Fréchet distance, reference classifier, held-out split, FID, report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from offchain.data.datasets import load_dataset
from offchain.data.holders import image_hash, mnist_holders
from offchain.diffusion import preprocess
from offchain.errors import ConfigError, DataError, StageError
from offchain.quality import (
    QUALITY_METRIC,
    ClassifierConfig,
    FeatureStats,
    TorchScriptFeatureExtractor,
    exclude_images,
    features,
    fid,
    frechet_distance,
    held_out_images,
    load_reference_classifier,
    prepare_reference,
    quality_report,
    reference_stats,
    split_reference,
    train_reference_classifier,
)
from offchain.quality.classifier import CLASSIFIER_JSON, CLASSIFIER_WEIGHTS

FAST = ClassifierConfig(channels=(16, 32), feature_dim=32, epochs=8, num_threads=1)


# ---------------------------------------------------------------------------------------------
# Fréchet distance
# ---------------------------------------------------------------------------------------------


def _random_spd(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / (rank or d)


def test_frechet_diagonal_closed_form() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    v1, v2 = rng.uniform(0.1, 3.0, 5), rng.uniform(0.1, 3.0, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    got = frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # 1-D: (μ₁ − μ₂)² + (σ₁ − σ₂)²
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)


def test_frechet_identical_zero_and_symmetric() -> None:
    rng = np.random.default_rng(1)
    mu, s1, s2 = rng.standard_normal(8), _random_spd(rng, 8), _random_spd(rng, 8)
    assert frechet_distance(mu, s1, mu, s1) == pytest.approx(0.0, abs=1e-8)
    mu2 = mu + 0.5
    assert frechet_distance(mu, s1, mu2, s2) == pytest.approx(
        frechet_distance(mu2, s2, mu, s1), rel=1e-8
    )


def test_frechet_matches_scipy_on_random_spd() -> None:
    rng = np.random.default_rng(2)
    for d in (2, 16, 64):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
        root1 = scipy.linalg.sqrtm(s1).real
        expected = (
            np.sum((mu1 - mu2) ** 2)
            + np.trace(s1 + s2)
            - 2 * np.trace(scipy.linalg.sqrtm(root1 @ s2 @ root1).real)
        )
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_frechet_rank_deficient_covariances_are_finite() -> None:
    # Fewer samples than dimensions: singular covariances (as with M ≤ D generated samples).
    rng = np.random.default_rng(3)
    d = 64
    s1, s2 = _random_spd(rng, d, rank=10), _random_spd(rng, d, rank=20)
    value = frechet_distance(np.zeros(d), s1, np.zeros(d), s2)
    assert math.isfinite(value) and value >= 0.0
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    lam = np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)
    expected = np.trace(s1) + np.trace(s2) - 2 * np.sqrt(lam).sum()
    assert value == pytest.approx(expected, rel=1e-3, abs=1e-3)
    # both zero covariances
    assert frechet_distance(np.ones(3), np.zeros((3, 3)), np.zeros(3), np.zeros((3, 3))) == 3.0


def test_frechet_bad_inputs() -> None:
    eye = np.eye(3)
    with pytest.raises(DataError, match="shape"):
        frechet_distance(np.zeros(3), eye, np.zeros(4), np.eye(4))
    with pytest.raises(DataError, match="sigma2"):
        frechet_distance(np.zeros(3), eye, np.zeros(3), np.eye(2))
    with pytest.raises(DataError, match="symmetric"):
        frechet_distance(np.zeros(2), [[1, 0.5], [0, 1]], np.zeros(2), np.eye(2))
    with pytest.raises(DataError, match="NaN"):
        frechet_distance(np.array([np.nan, 0, 0]), eye, np.zeros(3), eye)


def test_feature_stats(tmp_path) -> None:
    rng = np.random.default_rng(4)
    feats = rng.standard_normal((50, 4))
    stats = FeatureStats.from_features(feats)
    np.testing.assert_allclose(stats.mu, feats.mean(0))
    np.testing.assert_allclose(stats.sigma, np.cov(feats, rowvar=False))
    assert stats.n == 50 and stats.dim == 4
    path = stats.save(tmp_path / "s.npz", note="x")
    back = FeatureStats.load(path)
    np.testing.assert_array_equal(back.sigma, stats.sigma)
    assert back.n == 50 and FeatureStats.load_meta(path) == {"note": "x"}
    with pytest.raises(DataError, match="at least 2"):
        FeatureStats.from_features(feats[:1])
    with pytest.raises(DataError, match="shape"):
        FeatureStats.from_features(feats[0])
    with pytest.raises(DataError, match="cannot read"):
        FeatureStats.load(tmp_path / "missing.npz")


# ---------------------------------------------------------------------------------------------
# Held-out data
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_split():
    """Held-out MNIST (no image of the default demo holders): a stratified ~2,000-image
    classifier part and a disjoint real part."""
    holders = mnist_holders()
    images, labels = held_out_images(holders, "mnist")
    (ci, cl), (ri, rl) = split_reference(images, labels, 0.5, seed=0)
    sub = np.random.default_rng(0).permutation(len(ci))[:2000]
    return holders, (ci[sub], cl[sub]), (ri, rl)


def test_held_out_excludes_holder_images(mnist_split) -> None:
    holders, (ci, _), (ri, _) = mnist_split
    holder_hashes = {h for holder in holders for h in holder.image_hashes}
    assert len(holder_hashes) == sum(h.n_images for h in holders)
    for part in (ci, ri):
        assert not holder_hashes & {image_hash(im) for im in part}
    images, _ = held_out_images(holders, "mnist")
    assert len(images) <= 10000 - len(holder_hashes)
    assert not holder_hashes & {image_hash(im) for im in images}
    # classifier and reference parts are disjoint
    assert not {image_hash(im) for im in ci} & {image_hash(im) for im in ri}


def test_exclude_and_split() -> None:
    images = np.arange(6 * 4, dtype=np.uint8).reshape(6, 2, 2)
    labels = np.array([0, 0, 0, 1, 1, 1])
    kept, kept_labels = exclude_images(images, labels, [image_hash(images[1])])
    assert len(kept) == 5 and kept_labels.tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(DataError, match="nothing is held out"):
        exclude_images(images, labels, [image_hash(im) for im in images])
    (a, al), (b, bl) = split_reference(images, labels, 0.5, seed=1)
    assert len(a) + len(b) == 6 and set(al) == set(bl) == {0, 1}
    with pytest.raises(ConfigError):
        split_reference(images, labels, 1.0)
    with pytest.raises(DataError, match="labels"):
        split_reference(images, labels[:3])


def test_reference_datasets() -> None:
    digits, dl = load_dataset("digits")
    assert digits.dtype == np.uint8 and digits.shape == (1797, 8, 8) and digits.max() == 255
    assert sorted(set(dl.tolist())) == list(range(10))
    lfw, ll = load_dataset("lfw")
    assert lfw.dtype == np.uint8 and lfw.shape == (200, 25, 25)
    assert ll[:100].tolist() == [1] * 100 and ll[100:].tolist() == [0] * 100
    with pytest.raises(ConfigError, match="unknown"):
        load_dataset("cifar")


# ---------------------------------------------------------------------------------------------
# Reference classifier
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier_dir(mnist_split, tmp_path_factory):
    _, (ci, cl), _ = mnist_split
    out = tmp_path_factory.mktemp("clf") / "classifier"
    return train_reference_classifier(ci, cl, out, FAST, progress=False)


def test_classifier_trains_to_high_accuracy(classifier_dir, mnist_split) -> None:
    meta = json.loads((classifier_dir / CLASSIFIER_JSON).read_text())
    assert meta["val_accuracy"] >= 0.9
    assert meta["classes"] == list(range(10)) and meta["feature_dim"] == 32
    assert meta["n_train"] + meta["n_val"] == 2000
    model = load_reference_classifier(classifier_dir)
    _, _, (ri, rl) = mnist_split
    with torch.no_grad():
        pred = model(preprocess(ri[:500], 16)).argmax(1).numpy()
    assert (pred == rl[:500]).mean() >= 0.9  # unseen real images
    feats = features(model, preprocess(ri[:7], 16))
    assert feats.shape == (7, 32) and feats.dtype == np.float64


def test_classifier_cache_skip_and_mismatch(classifier_dir, mnist_split) -> None:
    _, (ci, cl), _ = mnist_split
    weights = classifier_dir / CLASSIFIER_WEIGHTS
    before = (weights.stat().st_mtime_ns, (classifier_dir / CLASSIFIER_JSON).read_text())
    # same data and config (thread count is not part of the key) → skipped
    cfg = ClassifierConfig(**{**FAST.__dict__, "num_threads": 2})
    train_reference_classifier(ci, cl, classifier_dir, cfg, progress=False)
    assert (weights.stat().st_mtime_ns, (classifier_dir / CLASSIFIER_JSON).read_text()) == before
    with pytest.raises(StageError, match="other data"):
        train_reference_classifier(ci[:-1], cl[:-1], classifier_dir, FAST, progress=False)
    other = ClassifierConfig(**{**FAST.__dict__, "epochs": 5})
    with pytest.raises(StageError, match="another config"):
        train_reference_classifier(ci, cl, classifier_dir, other, progress=False)


def test_classifier_is_deterministic(tmp_path) -> None:
    images, labels = load_dataset("digits")
    cfg = ClassifierConfig(channels=(8, 16), feature_dim=16, epochs=15, num_threads=1)
    a = train_reference_classifier(images[:600], labels[:600], tmp_path / "a", cfg, False)
    b = train_reference_classifier(images[:600], labels[:600], tmp_path / "b", cfg, False)
    ma, mb = (
        json.loads((a / CLASSIFIER_JSON).read_text()),
        json.loads((b / CLASSIFIER_JSON).read_text()),
    )
    assert ma["weights_sha256"] == mb["weights_sha256"]
    assert ma["val_accuracy"] >= 0.8  # 8×8 digits upscaled to 16×16, 540 training images


def test_load_errors(classifier_dir, tmp_path) -> None:
    with pytest.raises(StageError, match="no complete reference classifier"):
        load_reference_classifier(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in (CLASSIFIER_JSON, CLASSIFIER_WEIGHTS):
        (broken / name).write_bytes((classifier_dir / name).read_bytes())
    (broken / CLASSIFIER_WEIGHTS).write_bytes(b"garbage")
    with pytest.raises(StageError, match="sha256"):
        load_reference_classifier(broken)


def test_classifier_bad_inputs(tmp_path) -> None:
    images = np.zeros((6, 8, 8), np.uint8)
    with pytest.raises(DataError, match=">= 2 classes"):
        train_reference_classifier(images, np.zeros(6, int), tmp_path / "a", FAST, False)
    with pytest.raises(DataError, match=">= 2 images"):
        train_reference_classifier(
            images, np.array([0, 0, 0, 0, 0, 1]), tmp_path / "b", FAST, False
        )
    with pytest.raises(DataError, match="labels"):
        train_reference_classifier(images, np.zeros(5, int), tmp_path / "c", FAST, False)
    with pytest.raises(DataError, match="uint8"):
        train_reference_classifier(
            images.astype(float), np.zeros(6, int), tmp_path / "d", FAST, False
        )
    with pytest.raises(ConfigError, match="image_size"):
        train_reference_classifier(
            images, np.zeros(6, int), tmp_path / "e", ClassifierConfig(image_size=10), False
        )


# ---------------------------------------------------------------------------------------------
# FID
# ---------------------------------------------------------------------------------------------


def test_fid_real_halves_far_below_noise(classifier_dir, mnist_split) -> None:
    _, _, (ri, _) = mnist_split
    model = load_reference_classifier(classifier_dir)
    half_a, half_b = preprocess(ri[:300], 16), preprocess(ri[300:1500], 16)
    ref = FeatureStats.from_features(features(model, half_b))
    real = fid(half_a, ref, model)
    noise = torch.rand((300, 1, 16, 16), generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert fid(noise, ref, model) > 10 * real
    assert fid(half_b, ref, model) == pytest.approx(0.0, abs=1e-6)


def test_fid_bad_inputs(classifier_dir) -> None:
    model = load_reference_classifier(classifier_dir)
    ref = FeatureStats(mu=np.zeros(32), sigma=np.eye(32), n=10)
    good = np.zeros((4, 1, 16, 16), np.float32)
    with pytest.raises(DataError, match="shape"):
        fid(np.zeros((4, 16, 16), np.float32), ref, model)
    with pytest.raises(DataError, match=r"\[-1, 1\]"):
        fid(good + 255.0, ref, model)
    with pytest.raises(DataError, match="float"):
        fid(np.zeros((4, 1, 16, 16), np.uint8), ref, model)
    with pytest.raises(DataError, match="16×16"):
        fid(np.zeros((4, 1, 28, 28), np.float32), ref, model)
    with pytest.raises(DataError, match="at least 2"):
        fid(good[:1], ref, model)
    with pytest.raises(DataError, match="NaN"):
        fid(np.full((4, 1, 16, 16), np.nan, np.float32), ref, model)
    with pytest.raises(DataError, match="dimension"):
        fid(good, FeatureStats(mu=np.zeros(3), sigma=np.eye(3), n=10), model)


def test_reference_stats_cached_and_quality_report(classifier_dir, mnist_split) -> None:
    _, _, (ri, _) = mnist_split
    ref_images = ri[500:1500]
    stats = reference_stats(classifier_dir, ref_images)
    files = list(classifier_dir.glob("reference_stats_*.npz"))
    assert len(files) == 1 and stats.n == 1000 and stats.dim == 32
    mtime = files[0].stat().st_mtime_ns
    again = reference_stats(classifier_dir, ref_images)
    assert files[0].stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.sigma, stats.sigma)

    samples = preprocess(ri[:200], 16).numpy()
    report = quality_report(samples, classifier_dir, ref_images)
    assert report["metric"] == QUALITY_METRIC
    assert report["n_samples"] == 200 and report["n_reference"] == 1000
    assert report["feature_dim"] == 32 and report["rank_deficient"] is False
    assert sum(report["class_histogram"]) == 200 and len(report["class_histogram"]) == 10
    assert 0 < report["class_entropy_bits"] <= report["class_entropy_max_bits"]
    assert report["class_entropy_max_bits"] == pytest.approx(math.log2(10))
    assert 0.5 < report["mean_confidence"] <= 1.0
    assert report["classifier_val_accuracy"] >= 0.9
    json.dumps(report)  # JSON-able
    by_path = quality_report(samples, classifier_dir, files[0])
    assert by_path["fid"] == pytest.approx(report["fid"])
    with pytest.raises(ConfigError, match="extractor_id"):
        reference_stats(classifier_dir, ref_images, model=object())


# ---------------------------------------------------------------------------------------------
# TorchScript extractor
# ---------------------------------------------------------------------------------------------


class _WithFlag(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))  # (B, 3)
        return torch.cat([pooled, x.amax(dim=(2, 3))], 1) if return_features else pooled


class _NoFlag(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def test_torchscript_extractor(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        TorchScriptFeatureExtractor(tmp_path / "inception-2015-12-05.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not torchscript")
    with pytest.raises(ConfigError, match="TorchScript"):
        TorchScriptFeatureExtractor(junk)
    images = torch.rand((5, 1, 16, 16), generator=torch.Generator().manual_seed(0)) * 2 - 1
    for module, dim in ((_WithFlag(), 6), (_NoFlag(), 3)):
        path = tmp_path / f"{type(module).__name__}.pt"
        torch.jit.save(torch.jit.script(module), str(path))
        extractor = TorchScriptFeatureExtractor(path, resize_to=32)
        feats = features(extractor, images)
        assert feats.shape == (5, dim) and feats.dtype == np.float64
        # pixels mapped to [0, 255]: a mean over a resized [-1, 1] image lands inside it
        assert 0.0 <= feats[:, :3].min() and feats[:, :3].max() <= 255.0
    assert len(extractor.sha256) == 64


def test_prepare_reference_digits(tmp_path) -> None:
    images, labels = load_dataset("digits")
    ref = prepare_reference(images, labels, tmp_path / "digits", FAST, progress=False)
    assert ref.stats_path.is_file() and ref.n_classifier + ref.n_reference == len(images)
    mtime = ref.stats_path.stat().st_mtime_ns
    again = prepare_reference(images, labels, tmp_path / "digits", FAST, progress=False)
    assert again == ref and ref.stats_path.stat().st_mtime_ns == mtime
    (_, _), (real, _) = split_reference(images, labels, 0.5, seed=0)
    samples = preprocess(real[:100], 16).numpy()
    report = quality_report(samples, ref.classifier_dir, ref.stats_path)
    assert report["classifier_val_accuracy"] >= 0.8 and report["n_reference"] == ref.n_reference
    noise = np.random.default_rng(0).uniform(-1, 1, (100, 1, 16, 16)).astype(np.float32)
    assert quality_report(noise, ref.classifier_dir, ref.stats_path)["fid"] > 5 * report["fid"]


# ---------------------------------------------------------------------------------------------
# Color (RGB) images
# ---------------------------------------------------------------------------------------------


def _equal_luma_colors(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 12, 12, 3) images of two classes whose colors have (almost) the same gray:
    class 0 a magenta-ish, class 1 a green-ish square on white, with pixel noise."""
    rng = np.random.default_rng(seed)
    colors = np.array([[200, 80, 120], [60, 150, 90]], np.float64)  # luma 120.4 and 116.3
    labels = rng.integers(0, 2, n)
    images = np.full((n, 12, 12, 3), 255.0)
    for i, label in enumerate(labels):
        top, left = rng.integers(0, 5, 2)
        images[i, top : top + 7, left : left + 7] = colors[label]
    images += rng.normal(0, 12, images.shape)
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def test_rgb_classifier_reads_color_and_reports_quality(tmp_path) -> None:
    images, labels = _equal_luma_colors(400, seed=0)
    cfg = ClassifierConfig(image_size=8, channels=(8, 16), feature_dim=8, epochs=6, num_threads=1)
    ref = prepare_reference(images, labels, tmp_path / "rgb", cfg, progress=False)
    model = load_reference_classifier(ref.classifier_dir)
    assert model.in_channels == 3 and model.metadata["in_channels"] == 3
    assert model.metadata["val_accuracy"] >= 0.9  # the colors differ in hue, not in gray
    fresh, fresh_labels = _equal_luma_colors(100, seed=1)
    x = preprocess(fresh, 8, channels=3)
    assert x.shape == (100, 3, 8, 8)
    with torch.no_grad():
        assert (model(x).argmax(1).numpy() == fresh_labels).mean() >= 0.9
    report = quality_report(x.numpy(), ref.classifier_dir, ref.stats_path, device="cpu")
    assert report["n_samples"] == 100 and report["feature_dim"] == 8
    noise = np.random.default_rng(0).uniform(-1, 1, (100, 3, 8, 8)).astype(np.float32)
    assert quality_report(noise, ref.classifier_dir, ref.stats_path)["fid"] > 5 * report["fid"]
    with pytest.raises(DataError, match=r"\(B >= 1, 3, S, S\)"):  # gray samples, RGB model
        features(model, preprocess(fresh[..., 0], 8).numpy())
    stats = reference_stats(ref.classifier_dir, fresh)  # RGB reference images are accepted
    assert stats.n == 100 and stats.dim == 8


def test_held_out_excludes_rgb_holder_images_by_hash() -> None:
    images, labels = _equal_luma_colors(30, seed=2)
    kept, kept_labels = exclude_images(images, labels, [image_hash(images[3]), image_hash(images[7])])
    assert len(kept) == 28 and kept.shape[1:] == (12, 12, 3)
    assert not any(np.array_equal(k, images[3]) or np.array_equal(k, images[7]) for k in kept)
    gray = images[..., 0]  # the same bytes as a grayscale image hash differently
    assert image_hash(gray[3]) != image_hash(images[3])
