"""Fréchet distance between feature Gaussians (FID) and the per-round quality report.

FID (Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to a local Nash
equilibrium", NeurIPS) fits a Gaussian N(μ, Σ) to the features of each image set and reports
the Fréchet (2-Wasserstein) distance between them::

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})

The computation follows pytorch-fid (``pytorch_fid.fid_score.calculate_frechet_distance``):
``scipy.linalg.sqrtm`` of Σ₁Σ₂, retried with ε·I added to both covariances when the root is not
finite or not accurate, small imaginary parts dropped. Units: squared feature units (features
of the reference classifier's penultimate layer, or Inception pool3 features), so values are
only comparable for the same feature extractor.

Features come from the project's reference classifier (:mod:`offchain.quality.classifier`);
:class:`TorchScriptFeatureExtractor` plugs in an Inception TorchScript file given by local
path.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from offchain.diffusion.model import preprocess
from offchain.errors import ConfigError, DataError
from offchain.quality.classifier import (
    ClassifierConfig,
    ReferenceClassifier,
    features,
    image_channels,
    load_reference_classifier,
    predict_proba,
    train_reference_classifier,
)
from offchain.quality.held_out import split_reference
from offchain.utils import atomic_write, sha256_file

__all__ = [
    "QUALITY_METRIC",
    "FeatureStats",
    "QualityReference",
    "TorchScriptFeatureExtractor",
    "feature_stats",
    "fid",
    "frechet_distance",
    "images_hash",
    "prepare_reference",
    "quality_report",
    "reference_stats",
    "reference_stats_path",
]

logger = logging.getLogger(__name__)

QUALITY_METRIC = "fid_reference_classifier"
"""``metric`` field of :func:`quality_report`."""

_SQRTM_REL_ERROR = 1e-3
"""sqrtm results with ‖X·X − A‖_F / ‖A‖_F above this are retried with the ε offset."""


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """Gaussian summary of a set of feature vectors.

    Attributes:
        mu: float64 (D,) mean.
        sigma: float64 (D, D) unbiased sample covariance (``np.cov``, divisor n − 1).
        n: number of feature vectors (≥ 2).
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self.mu.shape[0])

    @classmethod
    def from_features(cls, feats: np.ndarray) -> FeatureStats:
        """Mean and covariance of float (n, D) features.

        Raises:
            DataError: not 2-D, fewer than 2 rows (no covariance), or non-finite values.
        """
        feats = np.asarray(feats, dtype=np.float64)
        if feats.ndim != 2 or feats.shape[1] < 1:
            raise DataError(f"features must have shape (n, D), got {feats.shape}")
        if feats.shape[0] < 2:
            raise DataError(f"a covariance needs at least 2 feature vectors, got {feats.shape[0]}")
        if not np.isfinite(feats).all():
            raise DataError("features contain NaN or infinite values")
        sigma = np.atleast_2d(np.cov(feats, rowvar=False))
        return cls(mu=feats.mean(axis=0), sigma=sigma, n=int(feats.shape[0]))

    def save(self, path: Path, **meta: str) -> Path:
        """Write an ``.npz`` (``mu``, ``sigma``, ``n`` and string ``meta`` entries) atomically."""
        arrays: dict[str, Any] = {"mu": self.mu, "sigma": self.sigma, "n": np.int64(self.n)}
        arrays.update({k: np.str_(v) for k, v in meta.items()})

        def _write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        return atomic_write(path, _write)

    @classmethod
    def load(cls, path: Path) -> FeatureStats:
        """Read an ``.npz`` written by :meth:`save`.

        Raises:
            DataError: missing or unreadable file, or missing keys.
        """
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                return cls(
                    mu=np.asarray(data["mu"], np.float64),
                    sigma=np.asarray(data["sigma"], np.float64),
                    n=int(data["n"]),
                )
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"cannot read feature statistics {path}: {exc}") from exc

    @staticmethod
    def load_meta(path: Path) -> dict[str, str]:
        """The string entries of an ``.npz`` written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            return {k: str(data[k]) for k in data.files if k not in ("mu", "sigma", "n")}


def feature_stats(
    model: Any,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> FeatureStats:
    """:class:`FeatureStats` of ``features(model, images, device=device)`` (float32
    (B, C, S, S) in [−1, 1]).

    Raises:
        DataError: bad images, or B < 2.
    """
    n = len(images)
    if n < 2:
        raise DataError(f"FID needs at least 2 images for a covariance, got {n}")
    return FeatureStats.from_features(
        features(model, images, batch_size=batch_size, device=device)
    )


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = 1e-6,
) -> float:
    """Fréchet distance d² between N(mu1, sigma1) and N(mu2, sigma2).

    ``‖μ₁ − μ₂‖² + Tr(Σ₁) + Tr(Σ₂) − 2 Tr((Σ₁Σ₂)^{1/2})`` (Dowson & Landau 1982; FID of
    Heusel et al. 2017). The root comes from ``scipy.linalg.sqrtm``; when it is not finite or
    its relative residual exceeds 1e-3 (near-singular covariances, e.g. fewer samples than
    dimensions), ``eps·I`` is added to both covariances and the root recomputed, as in
    pytorch-fid; if that fails too, the trace is taken from the eigenvalues of
    Σ₁^{1/2} Σ₂ Σ₁^{1/2} (negative ones clipped). Imaginary parts of the root are dropped when
    they are small (≤ 1e-3 × its largest diagonal entry), else the retry path is taken.

    Args:
        mu1, mu2: float (D,) means.
        sigma1, sigma2: float (D, D) symmetric positive semi-definite covariances.
        eps: diagonal offset of the retry.

    Returns:
        d² ≥ 0 (tiny negative rounding results are clipped to 0), in squared feature units.

    Raises:
        DataError: mismatched or wrong shapes, non-finite values, or a non-symmetric covariance.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise DataError(f"means must both have shape (D,), got {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (d, d):
            raise DataError(
                f"{name} must have shape ({d}, {d}) to match the means, got {sigma.shape}"
            )
        scale = max(1.0, float(np.abs(sigma).max()))
        if not np.allclose(sigma, sigma.T, rtol=0.0, atol=1e-8 * scale):
            raise DataError(f"{name} is not symmetric: not a covariance matrix")
    for name, arr in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(arr).all():
            raise DataError(f"{name} contains NaN or infinite values")

    diff = mu1 - mu2
    tr_covmean = _trace_sqrt_product(sigma1, sigma2)
    if tr_covmean is None:
        logger.info(
            "FID: sqrtm of the covariance product is inaccurate; adding %g to the diagonals", eps
        )
        offset = np.eye(d) * eps
        tr_covmean = _trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    if tr_covmean is None:
        logger.warning("FID: sqrtm failed with the eps offset too; using the eigenvalue form")
        tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(value, 0.0)


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float | None:
    """Tr((Σ₁Σ₂)^{1/2}) by scipy's sqrtm, or None when the root is unusable."""
    product = sigma1 @ sigma2
    norm = np.linalg.norm(product)
    if norm == 0.0:
        return 0.0
    covmean = scipy.linalg.sqrtm(product)
    if not np.isfinite(covmean).all():
        return None
    if np.iscomplexobj(covmean):
        diag = np.diagonal(covmean)
        tol = 1e-3 * max(1.0, float(np.abs(diag.real).max()))
        if np.abs(diag.imag).max() > tol:
            return None
        covmean = covmean.real
    residual = np.linalg.norm(covmean @ covmean - product) / norm
    if residual > _SQRTM_REL_ERROR:
        return None
    return float(np.trace(covmean))


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((Σ₁Σ₂)^{1/2}) = Σ √λ(Σ₁^{1/2} Σ₂ Σ₁^{1/2}) for symmetric PSD Σ (negatives clipped)."""
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = root1 @ sigma2 @ root1
    lam = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    return float(np.sqrt(np.clip(lam, 0.0, None)).sum())


def fid(
    generated: np.ndarray | torch.Tensor,
    reference: FeatureStats,
    model: Any,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> float:
    """FID of generated images against reference statistics, in ``model``'s feature space.

    With M ≤ D samples the covariance is rank-deficient and FID is strongly biased upwards;
    compare FIDs only at equal M (see docs/quality.md for the spread per M).

    Args:
        generated: float32 (M, C, S, S) in [−1, 1], M ≥ 2 (e.g.
            :func:`offchain.diffusion.generate_samples`).
        reference: statistics of real held-out images in the same feature space
            (:func:`reference_stats`).
        model: the feature extractor (:class:`ReferenceClassifier` or
            :class:`TorchScriptFeatureExtractor`).
        batch_size: images per forward pass.
        device: where the classifier runs (None: the CPU).

    Returns:
        FID ≥ 0 in squared feature units.

    Raises:
        DataError: bad images, M < 2, or feature dimension ≠ the reference's.
    """
    stats = feature_stats(model, generated, batch_size=batch_size, device=device)
    if stats.dim != reference.dim:
        raise DataError(
            f"generated features have dimension {stats.dim}, the reference statistics "
            f"{reference.dim}: not the same feature extractor"
        )
    return frechet_distance(stats.mu, stats.sigma, reference.mu, reference.sigma)


def images_hash(images: np.ndarray) -> str:
    """Hex SHA-256 of uint8 (N, H, W) or (N, H, W, 3) images: the shape joined by ``x``
    (``"<N>x<H>x<W>:"``, ``"<N>x<H>x<W>x3:"``) + row-major pixel bytes."""
    digest = hashlib.sha256(("x".join(map(str, images.shape)) + ":").encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    return digest.hexdigest()


def reference_stats(
    classifier_dir: Path,
    images: np.ndarray,
    model: Any | None = None,
    extractor_id: str | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> FeatureStats:
    """Feature statistics of real held-out reference images, cached next to the classifier.

    The cache file is ``<classifier_dir>/reference_stats_<key>.npz`` with ``key`` the first 16
    hex digits of SHA-256 over the images' :func:`images_hash` and the extractor's identity
    (the classifier's weight SHA-256, or ``extractor_id``); it also stores both as strings.
    A present file with that key is read instead of recomputing.

    Args:
        classifier_dir: folder of the reference classifier (the cache lives there).
        images: uint8 (N, H, W) grayscale or (N, H, W, 3) RGB real images, N ≥ 2, none of
            them a holder's; resized to the model's S by :func:`offchain.diffusion.preprocess`
            (S = 16 when the model takes any size) with the model's channels (its
            ``in_channels``, else the images').
        model: feature extractor; None loads the classifier in ``classifier_dir``.
        extractor_id: identity of a non-classifier ``model`` for the cache key (e.g.
            :attr:`TorchScriptFeatureExtractor.sha256`); default: the classifier's weight hash.
        batch_size: images per forward pass.
        device: where the model runs (None: the CPU).

    Raises:
        StageError: no classifier in ``classifier_dir`` (when ``model`` is None).
        DataError: bad images or N < 2.
        ConfigError: ``model`` has no recorded hash and no ``extractor_id`` is given.
    """
    classifier_dir = Path(classifier_dir)
    if model is None:
        model = load_reference_classifier(classifier_dir)
    if extractor_id is None:
        extractor_id = getattr(model, "metadata", {}).get("weights_sha256") or getattr(
            model, "sha256", None
        )
        if extractor_id is None:
            raise ConfigError("extractor_id is required for a model without a recorded hash")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or not (
        images.ndim == 3 or (images.ndim == 4 and images.shape[3] == 3)
    ):
        raise DataError(
            "reference images must be a uint8 array of shape (N, H, W) or (N, H, W, 3), got "
            f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
        )
    data = images_hash(images)
    path = reference_stats_path(classifier_dir, data, extractor_id)
    if path.is_file():
        meta = FeatureStats.load_meta(path)
        if meta.get("images_hash") == data and meta.get("extractor_id") == extractor_id:
            logger.debug("reference statistics from cache %s", path)
            return FeatureStats.load(path)
    size = getattr(model, "image_size", None) or 16
    channels = getattr(model, "in_channels", None) or image_channels(images)
    stats = feature_stats(
        model, preprocess(images, size, channels=channels), batch_size=batch_size, device=device
    )
    stats.save(path, images_hash=data, extractor_id=extractor_id)
    logger.info("reference statistics of %d images written to %s", stats.n, path)
    return stats


def reference_stats_path(classifier_dir: Path, images_digest: str, extractor_id: str) -> Path:
    """``<classifier_dir>/reference_stats_<key>.npz``, key = first 16 hex digits of
    ``sha256("<images_digest>:<extractor_id>")`` (see :func:`reference_stats`)."""
    key = hashlib.sha256(f"{images_digest}:{extractor_id}".encode()).hexdigest()[:16]
    return Path(classifier_dir) / f"reference_stats_{key}.npz"


class TorchScriptFeatureExtractor:
    """Inception (or any) features from a TorchScript file given by local path.

    Meant for the ``inception-2015-12-05.pt`` TorchScript of NVIDIA's StyleGAN2-ADA metrics,
    also used by clean-fid: ``module(x, return_features=True)`` on float (B, 3, 299, 299) with
    pixels in [0, 255] returns (B, 2048) pool3 features. Nothing is downloaded: pass the file.

    Inputs (B, 1, S, S) grayscale or (B, 3, S, S) RGB in [−1, 1] are mapped to
    ``lo + (x + 1)/2 · (hi − lo)`` for ``input_range = (lo, hi)``, grayscale repeated to 3
    channels, and resized bilinearly to
    ``resize_to`` × ``resize_to`` (None: kept). The module is called with
    ``return_features=True`` and, if it does not take that argument, without it; a tuple or
    list output gives its first element; the output is flattened to (B, D).

    Attributes:
        path: the file; sha256: its hex SHA-256 (cache key of :func:`reference_stats`);
        image_size: None (any input side).

    Raises:
        ConfigError: the file does not exist or is not loadable TorchScript.
    """

    image_size = None

    def __init__(
        self,
        path: Path,
        resize_to: int | None = 299,
        input_range: tuple[float, float] = (0.0, 255.0),
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(
                f"TorchScript feature extractor {self.path} does not exist; pass the local path "
                "of e.g. inception-2015-12-05.pt (nothing is downloaded)"
            )
        try:
            self.module = torch.jit.load(str(self.path), map_location="cpu")
        except (RuntimeError, ValueError, OSError) as exc:
            raise ConfigError(f"{self.path} is not a loadable TorchScript file: {exc}") from exc
        self.module.eval()
        self.sha256 = sha256_file(self.path)
        self.resize_to = resize_to
        self.input_range = input_range
        self._with_flag: bool | None = None

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features (b, D) of float32 (b, 1 or 3, S, S) images in [−1, 1]."""
        lo, hi = self.input_range
        x = lo + (x + 1.0) * 0.5 * (hi - lo)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if self.resize_to is not None and tuple(x.shape[-2:]) != (self.resize_to,) * 2:
            x = F.interpolate(
                x, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False
            )
        out = self._call(x)
        if isinstance(out, tuple | list):
            out = out[0]
        return torch.flatten(out, 1)

    def _call(self, x: torch.Tensor) -> Any:
        if self._with_flag is not False:
            try:
                out = self.module(x, return_features=True)
                self._with_flag = True
                return out
            except (RuntimeError, TypeError) as exc:
                if self._with_flag:
                    raise
                logger.debug("%s takes no return_features argument (%s)", self.path, exc)
                self._with_flag = False
        return self.module(x)


def quality_report(
    samples: np.ndarray | torch.Tensor,
    classifier_dir: Path,
    reference: FeatureStats | np.ndarray | Path,
    model: ReferenceClassifier | None = None,
    inception: TorchScriptFeatureExtractor | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Quality of one round's samples, as the dict the round writes to ``quality.json``.

    Args:
        samples: float32 (M, C, S, S) in [−1, 1], M ≥ 2 (the round's ``samples.npy``), C the
            classifier's channels (1 grayscale, 3 RGB).
        classifier_dir: the reference classifier's folder.
        reference: the real reference: uint8 (N, H, W) or (N, H, W, 3) held-out images (statistics cached by
            :func:`reference_stats`), a :class:`FeatureStats`, or the path of its ``.npz``.
        model: the loaded classifier (None: loaded from ``classifier_dir``).
        inception: also report ``fid_inception`` with this extractor; needs ``reference`` as
            images.
        batch_size: images per forward pass.
        device: where the classifier runs (None: the CPU; the Inception extractor stays on
            the CPU).

    Returns:
        A JSON-able dict::

            metric                      "fid_reference_classifier"
            fid                         FID in the classifier's feature space (≥ 0)
            n_samples                   M
            n_reference                 N (images behind the reference statistics)
            feature_dim                 D
            rank_deficient              M ≤ D (sample covariance singular; FID biased up)
            classifier_val_accuracy     held-out validation accuracy of the classifier
            classifier_data_hash        data hash the classifier was trained on
            classifier_weights_sha256   SHA-256 of its weights file
            classes                     class labels, in column order
            class_histogram             samples per predicted class (argmax), length K
            class_entropy_bits          entropy of that histogram (bits; max log2 K = diverse)
            class_entropy_max_bits      log2 K
            mean_confidence             mean over samples of the top softmax probability
            fid_inception               (only with ``inception``) FID in its feature space

    Raises:
        StageError: no classifier in ``classifier_dir``.
        DataError: bad samples, M < 2, bad reference, or dimension mismatch.
        ConfigError: ``inception`` without reference images.
    """
    classifier_dir = Path(classifier_dir)
    model = model if model is not None else load_reference_classifier(classifier_dir)
    if isinstance(reference, FeatureStats):
        ref = reference
    elif isinstance(reference, np.ndarray):
        ref = reference_stats(
            classifier_dir, reference, model=model, batch_size=batch_size, device=device
        )
    else:
        ref = FeatureStats.load(Path(reference))
    value = fid(samples, ref, model, batch_size=batch_size, device=device)
    proba = predict_proba(model, samples, batch_size=batch_size, device=device)
    k = proba.shape[1]
    hist = np.bincount(proba.argmax(axis=1), minlength=k)
    p = hist / hist.sum()
    entropy = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    meta = model.metadata
    report: dict[str, Any] = {
        "metric": QUALITY_METRIC,
        "fid": value,
        "n_samples": int(len(proba)),
        "n_reference": ref.n,
        "feature_dim": ref.dim,
        "rank_deficient": bool(len(proba) <= ref.dim),
        "classifier_val_accuracy": meta.get("val_accuracy"),
        "classifier_data_hash": meta.get("data_hash"),
        "classifier_weights_sha256": meta.get("weights_sha256"),
        "classes": meta.get("classes"),
        "class_histogram": [int(c) for c in hist],
        "class_entropy_bits": entropy,
        "class_entropy_max_bits": math.log2(k),
        "mean_confidence": float(proba.max(axis=1).mean()),
    }
    if inception is not None:
        if not isinstance(reference, np.ndarray):
            raise ConfigError(
                "fid_inception needs the reference as uint8 images (N, H, W) or (N, H, W, 3)"
            )
        inc_ref = reference_stats(
            classifier_dir,
            reference,
            model=inception,
            extractor_id=inception.sha256,
            batch_size=batch_size,
        )
        report["fid_inception"] = fid(samples, inc_ref, inception, batch_size=batch_size)
    return report


@dataclass(frozen=True)
class QualityReference:
    """What :func:`prepare_reference` made: pass both to :func:`quality_report`."""

    classifier_dir: Path
    """Folder of the trained reference classifier."""
    stats_path: Path
    """``.npz`` of the reference part's feature statistics (in ``classifier_dir``)."""
    n_classifier: int
    """Images the classifier was trained (and validated) on."""
    n_reference: int
    """Images behind the reference statistics (disjoint from the classifier's)."""


def prepare_reference(
    images: np.ndarray,
    labels: np.ndarray,
    out_dir: Path,
    cfg: ClassifierConfig | None = None,
    classifier_fraction: float = 0.5,
    seed: int = 0,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> QualityReference:
    """Train the reference classifier and cache the reference statistics, in one call.

    Splits the held-out images with :func:`offchain.quality.held_out.split_reference`
    (stratified, seeded): ``classifier_fraction`` trains :func:`train_reference_classifier`
    in ``out_dir``, the rest gives :func:`reference_stats`. Both steps are skipped when their
    outputs exist for the same inputs. Typical use for the MNIST demo::

        images, labels = held_out_images(holders, "mnist")
        ref = prepare_reference(images, labels, run_dir / "quality_reference")
        report = quality_report(samples, ref.classifier_dir, ref.stats_path)

    Args:
        images: uint8 (N, H, W) or (N, H, W, 3) held-out real images (no holder's; see
            :func:`offchain.quality.held_out.held_out_images`).
        labels: integer (N,) labels.
        out_dir: classifier folder (created).
        cfg: classifier hyperparameters; None: :class:`ClassifierConfig` defaults.
        classifier_fraction: share of each class for the classifier, in (0, 1).
        seed: seed of the split.
        progress: tqdm progress bar while training.
        device: where the reference statistics' features are computed (None: the CPU; the
            classifier trains on the CPU).

    Raises:
        ConfigError, DataError, StageError: as :func:`split_reference`,
            :func:`train_reference_classifier` and :func:`reference_stats`.
    """
    (clf_images, clf_labels), (ref_images, _) = split_reference(
        images, labels, classifier_fraction, seed=seed
    )
    out_dir = train_reference_classifier(clf_images, clf_labels, out_dir, cfg, progress=progress)
    model = load_reference_classifier(out_dir)
    stats = reference_stats(out_dir, ref_images, model=model, device=device)
    return QualityReference(
        classifier_dir=Path(out_dir),
        stats_path=reference_stats_path(
            out_dir, images_hash(ref_images), model.metadata["weights_sha256"]
        ),
        n_classifier=int(len(clf_images)),
        n_reference=stats.n,
    )
