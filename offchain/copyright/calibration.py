"""A calibrated probability of substantial similarity, with documented decision thresholds.

Legal grounding (docs/copyright.md §1 "From the legal test to features"). Infringement needs
*access* (given: the work was in the training set) and *substantial similarity*, which US
(Ninth Circuit) practice splits into an **extrinsic** test (objective comparison of protected
expression) and an **intrinsic** test (the ordinary observer's impression of total concept and
feel). Per pair (query image q, training work x) four features stand in for them
(:mod:`offchain.copyright.similarity`):

================  ========================================================  ============
``semantic``      centered embedding cosine (extrinsic test), [−1, 1]        ↑ = similar
``ssim``          SSIM (intrinsic test: look and feel), [−1, 1]              ↑ = similar
``log_tiled_l2``  ln(tiled ℓ2 + ε), tiled ℓ2 = max per-tile RMSE in the      ↓ = similar
                  [−1, 1] pixel scale (Carlini et al. 2023: near-exact
                  copy), ε = 0.01: [ln 0.01, ln 2.01] = [−4.6, 0.70]
``log_relative``  ln((ℓ2 + ε) / mean of (ℓ2 + ε) over the query's k = 10    ↓ = similar
``_l2``           nearest distinct works): Carlini et al.'s normalisation
                  by the nearest training neighbours (close only counts if
                  much closer than the work's look-alikes), ≤ ~0.7
================  ========================================================  ============

With ``flip_invariant`` each feature is taken over both orientations of the work (max of the
similarities, min of the distance): a mirror image is still a reproduction. The logarithm lets
a linear model tell an exact copy (ℓ2 = 0) from a noisy one (ℓ2 ≈ 0.1) as sharply as a noisy
copy from an unrelated image (ℓ2 ≈ 0.5–1.5).

**Model.** ``P(substantially similar | q, x) = σ(b + Σ_f w_f · feature_f)``: logistic
regression with class-balanced weights, so that the fitted logit is the log likelihood ratio
of "copy" against "unrelated", plus ``logit(prior)`` (default prior 0.02, the replication
rate Somepalli et al. measured for Stable Diffusion: a generation is a priori unlikely to be a
copy). The standardized coefficients carry a small ridge penalty (finite p under separation)
and **sign constraints** (w_semantic ≥ 0, w_ssim ≥ 0, w_log_tiled_l2 ≤ 0, fitted by
L-BFGS-B), so that p never decreases when a pair becomes more similar in any feature.

**Calibration protocol** (:func:`fit_calibration`, seeded and deterministic):

1. Exact duplicate works (bitwise-equal images) are grouped; one work per group may be an
   anchor. ``n_anchors`` anchors are drawn and split by work into a training and a held-out
   part (``test_fraction``): no anchor's copies appear in both.
2. **Positives**: every anchor under every augmentation type of
   :mod:`offchain.copyright.augment` (crop+resize, flip, Gaussian noise, brightness/contrast,
   JPEG, two combinations) paired with the anchor itself. Types containing a step of
   ``fit_exclude`` (default: ``crop``) are evaluated but not fitted: the weight-free features
   are alignment-based and do not see crops (held-out recall 0 on MNIST, docs/copyright.md);
   fitted, such positives look exactly like negatives and only flatten the model.
3. **Negatives**, for each augmented query q of anchor j, against works that are neither j nor
   a duplicate of j: ``random`` (``random_negatives`` uniformly drawn works) and, with
   ``hard_negatives``, the *nearest* other work by each raw feature (``nearest_semantic``,
   ``nearest_ssim``, ``nearest_tiled_l2``): typically another image of the same class — a
   different "3" is not a copy of a "3" (ideas and genres are not protected; only expression
   is). Optionally ``external`` unrelated images (e.g. unseen images of the same domain),
   augmented the same way, paired with a random and their nearest works (kind ``external``).
   Hard negatives matter because the holder loss takes the *max* over a holder's works.
4. Fit on the training part; evaluate and choose thresholds on the held-out part.

**Threshold rules** (on held-out pairs; both mirror SSCD practice in Somepalli et al., CVPR
2023: cosine > 0.5 "replication", > 0.75 ≈ "copy" at 90 % precision):

- ``replication``: the candidate threshold maximizing F1 (ties → the highest), or, when
  ``replication_recall`` is set, the highest threshold keeping recall ≥ that target;
- ``copy``: the lowest threshold t such that precision ≥ ``copy_precision`` (0.95) at t and at
  every higher candidate threshold, raised to at least ``replication`` (a copy is always a
  replication); None when even the top-scoring held-out pair is a negative.

Candidates are the held-out probabilities; a pair passes when p ≥ threshold. The chosen
threshold is placed halfway between the selected held-out probability and the next lower
one, so it does not sit on a single sample (the held-out decisions are unchanged). Held-out
precision is measured at the held-out class balance (1 positive to 4 negatives, about 7 with
500 external images), not
at the prior. The held-out set includes the ``fit_exclude`` positives, so the recall reported
for them is honest.

**Validity.** A calibration is valid only for the encoder (and weights) it was fitted with:
the default UNet encoder changes every round, so the round's copyright stage fits a fresh
calibration on the round's own UNet and works (≈ 3–4 s single-threaded for N = 512 works of
16 × 16; ``Calibration.fit_seconds``). The probability is calibrated to the positives and
negatives above; it is not a legal finding.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize
from sklearn.metrics import average_precision_score
from torch import Tensor

from offchain.copyright.augment import AUGMENTATIONS, augment
from offchain.copyright.config import CalibrationConfig, CopyrightConfig, FeatureSettings
from offchain.copyright.encoders import Encoder, encoder_name, load_encoder
from offchain.copyright.similarity import (
    centered_cosine,
    ssim_matrix,
    tiled_l2_matrix,
)
from offchain.diffusion.backend import DenoisingModel
from offchain.diffusion.tensors import clamped_image_batch
from offchain.errors import ConfigError, DataError
from offchain.utils import atomic_write, read_json, write_json

__all__ = [
    "CALIBRATION_JSON",
    "CALIBRATION_MD",
    "FEATURE_NAMES",
    "NEGATIVE_KINDS",
    "Calibration",
    "PairScores",
    "ReferenceSet",
    "copyright_calibration_report",
    "choose_thresholds",
    "fit_calibration",
    "run_calibration",
    "score_pairs",
]

logger = logging.getLogger(__name__)

FEATURE_NAMES = ("semantic", "ssim", "log_tiled_l2", "log_relative_l2")
"""The logistic model's inputs, in coefficient order (see the module docstring)."""
_MINING = (("semantic", 1.0), ("ssim", 1.0), ("tiled_l2", -1.0))
"""Hard negatives: the nearest other work by each raw feature (sign: larger = nearer)."""
_SIGNS = (1.0, 1.0, -1.0, -1.0)
"""Sign constraint of each coefficient (similarities ↑, distance ↓)."""
NEGATIVE_KINDS = ("random", "nearest_semantic", "nearest_ssim", "nearest_tiled_l2", "external")
"""How a negative pair's work was chosen (see the module docstring)."""
CALIBRATION_JSON = "calibration.json"
CALIBRATION_MD = "calibration.md"
_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------- features


def _encode(encoder: Encoder, images: Tensor, what: str) -> Tensor:
    emb = encoder.encode(images)
    if not isinstance(emb, Tensor):
        raise DataError(f"encoder returned {type(emb).__name__} for the {what}, not a tensor")
    if emb.ndim != 2 or emb.shape[0] != images.shape[0] or not torch.isfinite(emb).all():
        raise DataError(
            f"encoder returned {tuple(emb.shape)} for {images.shape[0]} {what} images "
            "(need finite (B, D))"
        )
    return emb.detach().to("cpu", torch.float32)


class ReferenceSet:
    """The training works, their embeddings (and mirror images) — encoded once, compared often.

    Args:
        encoder: any :class:`~offchain.copyright.encoders.Encoder`.
        works: float (N, C, S, S) in [−1, 1].
        settings: :class:`FeatureSettings`.

    Raises:
        DataError: bad images, images smaller than the SSIM window, a tile size that does not
            divide S, or an encoder output of the wrong shape.
    """

    def __init__(self, encoder: Encoder, works: Tensor, settings: FeatureSettings) -> None:
        self.images = clamped_image_batch(works, "works")
        self.pixels = settings.pixel_view(self.images)
        """The works as the pixel features see them (at most ``max_pixel_side`` px)."""
        s = tuple(self.pixels.shape[2:])
        if min(s) < settings.ssim_win_size:
            raise DataError(f"images {s} are smaller than the SSIM window")
        if s[0] % settings.tile_size or s[1] % settings.tile_size:
            raise DataError(f"tile_size {settings.tile_size} must divide the image size {s}")
        self.encoder = encoder
        self.settings = settings
        self.group = _distinct_groups(self.images)
        """int64 (N,): exact-duplicate group of each work (first occurrence order)."""
        self._representatives = np.unique(self.group, return_index=True)[1]
        self.emb = _encode(encoder, self.images, "works")
        n = self.images.shape[0]
        self.mean = self.emb.mean(0) if settings.center_embeddings and n >= 2 else None
        if settings.flip_invariant:
            self.emb_flip = _encode(encoder, self.images.flip(-1), "mirrored works")
            self.pixels_flip = self.pixels.flip(-1)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def encode(self, queries: Tensor) -> Tensor:
        """Embeddings of query images (checked like the works')."""
        return _encode(self.encoder, queries, "query")

    def matrices(self, queries: Tensor, q_emb: Tensor) -> dict[str, np.ndarray]:
        """Features of every (query, work) pair, float64 (M, N) each: ``semantic``, ``ssim``,
        ``tiled_l2``, ``log_tiled_l2`` and ``log_relative_l2``."""
        st = self.settings
        if queries.shape[1:] != self.images.shape[1:]:
            raise DataError(
                f"query images {tuple(queries.shape[1:])} and works "
                f"{tuple(self.images.shape[1:])} differ in shape"
            )
        sem = centered_cosine(q_emb, self.emb, self.mean).double()
        q_pix = st.pixel_view(queries)
        ssim = ssim_matrix(q_pix, self.pixels, data_range=2.0, win_size=st.ssim_win_size)
        tl2 = tiled_l2_matrix(q_pix, self.pixels, tile_size=st.tile_size)
        if st.flip_invariant:
            sem = torch.maximum(sem, centered_cosine(q_emb, self.emb_flip, self.mean).double())
            ssim = torch.maximum(
                ssim,
                ssim_matrix(q_pix, self.pixels_flip, data_range=2.0, win_size=st.ssim_win_size),
            )
            tl2 = torch.minimum(
                tl2, tiled_l2_matrix(q_pix, self.pixels_flip, tile_size=st.tile_size)
            )
        d = tl2.numpy().astype(np.float64) + st.distance_eps
        # Mean (distance + ε) to the query's k nearest *distinct* works (duplicates counted
        # once, else a memorized, duplicated work would be its own dense neighbourhood).
        distinct = d[:, self._representatives]
        k = min(st.relative_k, distinct.shape[1])
        knn = np.partition(distinct, k - 1, axis=1)[:, :k].mean(axis=1, keepdims=True)
        return {
            "semantic": sem.numpy().astype(np.float64),
            "ssim": ssim.numpy().astype(np.float64),
            "tiled_l2": tl2.numpy().astype(np.float64),
            "log_tiled_l2": np.log(d),
            "log_relative_l2": np.log(d / knn),
        }


# ------------------------------------------------------------------------------ calibration


@dataclass
class Calibration:
    """A fitted ``P(substantially similar | features)`` with its thresholds and evaluation.

    JSON fields (:meth:`to_dict`): ``version``, ``feature_names``, ``coef`` (per feature, on
    the raw feature scale), ``intercept``, ``thresholds`` {``replication``, ``copy`` (or
    null)}, ``rules`` (the threshold rules in words), ``features`` (:class:`FeatureSettings`),
    ``encoder`` (its name), ``image_shape`` [C, S, S], ``seed``, ``augmentations``,
    ``n_pos``/``n_neg`` (training pairs), ``n_pos_test``/``n_neg_test`` (held-out pairs),
    ``n_works``, ``n_distinct_works``, ``n_anchors`` [train, test], ``n_external``, ``table``
    (held-out precision/recall rows, see :func:`copyright_calibration_report`), ``average_precision``
    (per group), ``holder_level`` (or null), ``retrieval_top1`` (or null), ``brier``,
    ``fit_seconds``, ``config`` (the :class:`CalibrationConfig`).
    """

    coef: tuple[float, ...]
    intercept: float
    replication_threshold: float
    copy_threshold: float | None
    features: FeatureSettings
    encoder: str
    image_shape: tuple[int, ...]
    seed: int = 0
    prior: float = 0.5
    feature_names: tuple[str, ...] = FEATURE_NAMES
    augmentations: tuple[str, ...] = AUGMENTATIONS
    n_pos: int = 0
    n_neg: int = 0
    n_pos_test: int = 0
    n_neg_test: int = 0
    n_works: int = 0
    n_distinct_works: int = 0
    n_anchors: tuple[int, int] = (0, 0)
    n_external: int = 0
    table: list[dict[str, Any]] = field(default_factory=list)
    average_precision: dict[str, float] = field(default_factory=dict)
    holder_level: dict[str, Any] | None = None
    retrieval_top1: float | None = None
    brier: float | None = None
    fit_seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    rules: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.feature_names) != FEATURE_NAMES:
            raise ConfigError(f"feature_names must be {FEATURE_NAMES}, got {self.feature_names}")
        if len(self.coef) != len(FEATURE_NAMES) or not all(map(math.isfinite, self.coef)):
            raise ConfigError(f"coef must be {len(FEATURE_NAMES)} finite numbers: {self.coef}")
        if not math.isfinite(self.intercept):
            raise ConfigError(f"intercept must be finite, got {self.intercept}")
        if not 0.0 <= self.replication_threshold <= 1.0:
            raise ConfigError(f"replication threshold {self.replication_threshold} not in [0, 1]")
        if self.copy_threshold is not None and not (
            self.replication_threshold <= self.copy_threshold <= 1.0
        ):
            raise ConfigError(
                f"copy threshold {self.copy_threshold} must be in [replication "
                f"{self.replication_threshold}, 1]"
            )

    # ---- model

    def logit(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        """``b + Σ_f w_f · feats[f]`` (float64, the shape of the feature arrays)."""
        missing = [f for f in self.feature_names if f not in feats]
        if missing:
            raise DataError(f"missing features {missing}")
        z = np.full(np.shape(feats[self.feature_names[0]]), self.intercept, dtype=np.float64)
        for w, name in zip(self.coef, self.feature_names, strict=True):
            z = z + w * np.asarray(feats[name], dtype=np.float64)
        return z

    def probability(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        """P(substantially similar) = σ(logit), float64 in [0, 1]."""
        return _sigmoid(self.logit(feats))

    # ---- JSON

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (see the class docstring for the fields)."""
        return {
            "version": _FORMAT_VERSION,
            "feature_names": list(self.feature_names),
            "coef": [float(c) for c in self.coef],
            "intercept": float(self.intercept),
            "thresholds": {
                "replication": float(self.replication_threshold),
                "copy": None if self.copy_threshold is None else float(self.copy_threshold),
            },
            "rules": dict(self.rules),
            "features": asdict(self.features),
            "encoder": self.encoder,
            "image_shape": [int(s) for s in self.image_shape],
            "seed": int(self.seed),
            "prior": float(self.prior),
            "augmentations": list(self.augmentations),
            "n_pos": int(self.n_pos),
            "n_neg": int(self.n_neg),
            "n_pos_test": int(self.n_pos_test),
            "n_neg_test": int(self.n_neg_test),
            "n_works": int(self.n_works),
            "n_distinct_works": int(self.n_distinct_works),
            "n_anchors": [int(x) for x in self.n_anchors],
            "n_external": int(self.n_external),
            "table": self.table,
            "average_precision": self.average_precision,
            "holder_level": self.holder_level,
            "retrieval_top1": self.retrieval_top1,
            "brier": self.brier,
            "fit_seconds": float(self.fit_seconds),
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: a missing field, another format version, or inconsistent values.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"calibration must be a JSON object, got {type(d).__name__}")
        if d.get("version") != _FORMAT_VERSION:
            raise ConfigError(f"unsupported calibration version {d.get('version')!r}")
        try:
            thresholds = d["thresholds"]
            return cls(
                coef=tuple(float(c) for c in d["coef"]),
                intercept=float(d["intercept"]),
                replication_threshold=float(thresholds["replication"]),
                copy_threshold=None if thresholds["copy"] is None else float(thresholds["copy"]),
                features=FeatureSettings(**d["features"]),
                encoder=str(d["encoder"]),
                image_shape=tuple(int(s) for s in d["image_shape"]),
                seed=int(d["seed"]),
                prior=float(d["prior"]),
                feature_names=tuple(d["feature_names"]),
                augmentations=tuple(d["augmentations"]),
                n_pos=int(d["n_pos"]),
                n_neg=int(d["n_neg"]),
                n_pos_test=int(d["n_pos_test"]),
                n_neg_test=int(d["n_neg_test"]),
                n_works=int(d["n_works"]),
                n_distinct_works=int(d["n_distinct_works"]),
                n_anchors=tuple(int(x) for x in d["n_anchors"]),
                n_external=int(d["n_external"]),
                table=list(d["table"]),
                average_precision=dict(d["average_precision"]),
                holder_level=d["holder_level"],
                retrieval_top1=d["retrieval_top1"],
                brier=d["brier"],
                fit_seconds=float(d["fit_seconds"]),
                config=dict(d["config"]),
                rules=dict(d["rules"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed calibration: {exc!r}") from exc

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON atomically."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration JSON (ConfigError when missing or malformed)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"calibration file {path} does not exist")
        try:
            return cls.from_dict(read_json(path))
        except ValueError as exc:  # JSONDecodeError
            raise ConfigError(f"calibration file {path} is not valid JSON: {exc}") from exc


def _sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


# ------------------------------------------------------------------------------ fitting


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Class-balanced, sign-constrained, ridge-penalized logistic regression.

    Minimizes Σ_k c_k·[log(1 + e^{z_k}) − y_k z_k] / Σ_k c_k + λ/2·‖w‖², z = b + Z w, on the
    standardized features Z, with class weights c making both classes weigh the same and the
    bounds sign(w_f) = ``_SIGNS[f]`` (or 0). Returns (coef, intercept) on the raw scale.
    """
    mu = x.mean(0)
    sd = x.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    z_x = (x - mu) / sd
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    c = np.where(y > 0.5, 0.5 / n_pos, 0.5 / n_neg)  # Σ c = 1

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        z = z_x @ w + b
        p = _sigmoid(z)
        loss = float(np.sum(c * (np.logaddexp(0.0, z) - y * z))) + 0.5 * l2 * float(w @ w)
        g = c * (p - y)
        return loss, np.concatenate([z_x.T @ g + l2 * w, [g.sum()]])

    bounds = [(0.0, None) if s > 0 else (None, 0.0) for s in _SIGNS] + [(None, None)]
    theta0 = np.zeros(x.shape[1] + 1)
    res = minimize(objective, theta0, jac=True, method="L-BFGS-B", bounds=bounds)
    w, b = res.x[:-1], float(res.x[-1])
    coef = w / sd
    intercept = b - float(np.sum(w * mu / sd))
    return coef, intercept


def _pr_at(p: np.ndarray, y: np.ndarray, thr: float | None) -> dict[str, Any]:
    """Confusion counts and precision/recall/F1 of ``p ≥ thr`` (thr None: nothing passes)."""
    pred = np.zeros_like(y, dtype=bool) if thr is None else p >= thr
    pos = y > 0.5
    tp, fp = int(np.sum(pred & pos)), int(np.sum(pred & ~pos))
    fn = int(np.sum(~pred & pos))
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    n_neg = int(np.sum(~pos))
    return {
        "n_pos": int(pos.sum()),
        "n_neg": n_neg,
        "tp": tp,
        "fp": fp,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "fpr": fp / n_neg if n_neg else None,
    }


def _midpoint_below(scores: np.ndarray, t: float) -> float:
    """Halfway between ``t`` and the largest score below it (``t`` when there is none)."""
    below = scores[scores < t]
    return float(t) if below.size == 0 else float((t + below.max()) / 2.0)


def choose_thresholds(
    p: np.ndarray,
    y: np.ndarray,
    copy_precision: float = 0.95,
    replication_recall: float | None = None,
) -> tuple[float, float | None]:
    """The ``replication`` and ``copy`` thresholds by the rules of the module docstring.

    Args:
        p: float (K,) held-out probabilities in [0, 1].
        y: (K,) labels in {0, 1}, both present.
        copy_precision: precision target of ``copy``.
        replication_recall: None → ``replication`` maximizes F1; else the highest threshold
            with recall ≥ this.

    Returns:
        (replication, copy or None), with copy ≥ replication.

    Raises:
        DataError: shapes differ or a class is missing.
    """
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y).astype(np.float64)
    if p.shape != y.shape or p.ndim != 1:
        raise DataError(f"p and y must be equal 1-D arrays, got {p.shape} and {y.shape}")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise DataError("threshold selection needs held-out positives and negatives")
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    # Candidate thresholds: the distinct scores; "p ≥ t" selects every item up to t's last tie.
    distinct = np.flatnonzero(np.r_[ps[1:] != ps[:-1], True])  # last index of each tie group
    tp = np.cumsum(ys)[distinct]
    k = distinct + 1.0
    precision = tp / k
    recall = tp / n_pos
    cand = ps[distinct]  # descending
    if replication_recall is None:
        f1 = 2 * tp / (k + n_pos)
        best = int(np.flatnonzero(f1 == f1.max())[0])  # first = highest threshold among ties
    else:
        best = int(np.flatnonzero(recall >= replication_recall - 1e-12)[0])
    replication = _midpoint_below(p, cand[best])
    ok = precision >= copy_precision - 1e-12
    if not ok[0]:
        return replication, None
    last = int(np.flatnonzero(~ok)[0]) - 1 if (~ok).any() else len(ok) - 1
    copy = max(_midpoint_below(p, cand[last]), replication)
    return replication, copy


def _distinct_groups(works: Tensor) -> np.ndarray:
    """Group id (N,) of exact duplicates (bitwise-equal float32 images), numbered by first
    occurrence (O(N log N))."""
    flat = np.ascontiguousarray(works.detach().cpu().flatten(1).numpy())
    _, first, inverse = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse.reshape(-1)]


def _check_holder_index(holder_index: object, n: int) -> np.ndarray | None:
    if holder_index is None:
        return None
    idx = np.asarray(holder_index)
    if idx.shape != (n,) or not np.issubdtype(idx.dtype, np.integer):
        raise DataError(f"holder_index must be int ({n},), got {idx.dtype} {idx.shape}")
    if idx.size and idx.min() < 0:
        raise DataError("holder_index must be ≥ 0")
    return idx.astype(np.int64)


def _check_calibration_inputs(
    works: object, holder_index: object, external: object, ccfg: CalibrationConfig
) -> tuple[Tensor, np.ndarray | None, np.ndarray, int, Tensor | None]:
    """(works (N, C, S, S), holder index (N,) or None, duplicate group (N,), distinct works,
    external images (E, C, S, S) or None), checked."""
    works_t = clamped_image_batch(works, "works")
    n = works_t.shape[0]
    hidx = _check_holder_index(holder_index, n)
    group = _distinct_groups(works_t)
    n_distinct = int(group.max()) + 1
    if n_distinct < ccfg.min_works:
        raise DataError(
            f"calibration needs ≥ {ccfg.min_works} distinct works, got {n_distinct} (of {n})"
        )
    ext_t = None
    if external is not None:
        ext_t = clamped_image_batch(external, "external")
        if ext_t.shape[1:] != works_t.shape[1:]:
            raise DataError(
                f"external images {tuple(ext_t.shape[1:])} differ from works "
                f"{tuple(works_t.shape[1:])}"
            )
    return works_t, hidx, group, n_distinct, ext_t


def _pick_anchors(
    rng: np.random.Generator, group: np.ndarray, n_distinct: int, ccfg: CalibrationConfig
) -> tuple[np.ndarray, np.ndarray, int]:
    """(anchor work indices (A,), held-out flag (A,), number held out): one representative
    per duplicate group, split by work (two draws from ``rng``)."""
    reps = np.unique(group, return_index=True)[1]
    n_anchor = min(ccfg.n_anchors, n_distinct)
    anchors = rng.choice(reps, size=n_anchor, replace=False)
    n_test = min(max(2, round(ccfg.test_fraction * n_anchor)), n_anchor - 2)
    is_test_anchor = np.zeros(n_anchor, dtype=bool)
    is_test_anchor[rng.permutation(n_anchor)[:n_test]] = True
    return anchors, is_test_anchor, n_test


def _external_queries(
    ext_t: Tensor,
    augs: tuple[str, ...],
    ccfg: CalibrationConfig,
    seed: int,
    rng: np.random.Generator,
) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """(augmented external images (E', C, S, S), augmentation type (E',), held-out flag
    (E',)) for at most ``max_external`` picked images (two draws from ``rng``)."""
    n_ext = min(ccfg.max_external, ext_t.shape[0])
    pick = np.sort(rng.choice(ext_t.shape[0], size=n_ext, replace=False))
    ext_aug = np.arange(n_ext) % len(augs)
    ext_imgs = torch.empty((n_ext, *ext_t.shape[1:]), dtype=torch.float32)
    for k, name in enumerate(augs):
        sel = np.flatnonzero(ext_aug == k)
        if sel.size:
            ext_imgs[sel] = augment(ext_t[pick[sel]], name, seed=seed + 1)
    ext_test = np.zeros(n_ext, dtype=bool)
    ext_test[rng.permutation(n_ext)[: round(ccfg.test_fraction * n_ext)]] = True
    return ext_imgs, ext_aug, ext_test


def _build_queries(
    works_t: Tensor,
    ext_t: Tensor | None,
    anchors: np.ndarray,
    is_test_anchor: np.ndarray,
    ccfg: CalibrationConfig,
    seed: int,
    rng: np.random.Generator,
) -> tuple[Tensor, np.ndarray, np.ndarray, np.ndarray, int]:
    """(queries (Q, C, S, S), source work (Q,) or −1 for external, augmentation type (Q,),
    held-out flag (Q,), number of external queries): every anchor under every augmentation
    (seeded per type), then the external images."""
    augs = tuple(ccfg.augmentations)
    n_anchor = anchors.size
    q_imgs, q_src, q_aug, q_test = [], [], [], []
    for k, name in enumerate(augs):
        q_imgs.append(augment(works_t[anchors], name, seed=seed))
        q_src.append(anchors)
        q_aug.append(np.full(n_anchor, k))
        q_test.append(is_test_anchor)
    n_ext = 0
    if ext_t is not None and ccfg.max_external > 0:
        ext_imgs, ext_aug, ext_test = _external_queries(ext_t, augs, ccfg, seed, rng)
        n_ext = ext_aug.size
        q_imgs.append(ext_imgs)
        q_src.append(np.full(n_ext, -1))
        q_aug.append(ext_aug)
        q_test.append(ext_test)
    queries = torch.cat(q_imgs)
    src = np.concatenate(q_src)
    aug_of = np.concatenate(q_aug)
    test_q = np.concatenate(q_test)
    return queries, src, aug_of, test_q, n_ext


def _build_pairs(
    feats: dict[str, np.ndarray],
    group: np.ndarray,
    src: np.ndarray,
    ccfg: CalibrationConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(query row (P,), work column (P,), label (P,) float 1/0, pair kind (P,) object): the
    positives, then random and (optionally) hard negatives among eligible works."""
    n_q, n = src.size, group.size
    eligible = np.ones((n_q, n), dtype=bool)  # works that are not the source or its duplicate
    has_src = src >= 0
    eligible[has_src] = group[None, :] != group[src[has_src]][:, None]
    rows, cols, labels, kinds = [], [], [], []

    def add(r: np.ndarray, c: np.ndarray, label: int, kind: str) -> None:
        rows.append(r)
        cols.append(c)
        labels.append(np.full(r.size, label))
        kinds.append(np.full(r.size, kind, dtype=object))

    pos_rows = np.flatnonzero(has_src)
    add(pos_rows, src[pos_rows], 1, "positive")
    all_rows = np.arange(n_q)
    for _ in range(ccfg.random_negatives):
        # A uniformly random eligible work per query (random keys, masked argmax).
        keys = np.where(eligible, rng.random((n_q, n)), -1.0)
        add(all_rows, keys.argmax(1), 0, "random")
    if ccfg.hard_negatives:
        for name, sign in _MINING:
            masked = np.where(eligible, sign * feats[name], -np.inf)
            add(all_rows, masked.argmax(1), 0, f"nearest_{name}")
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    y = np.concatenate(labels).astype(np.float64)
    kind = np.concatenate(kinds)
    kind[(y == 0) & (src[r] < 0)] = "external"
    return r, c, y, kind


def _split_pairs(
    y: np.ndarray,
    aug_r: np.ndarray,
    test_r: np.ndarray,
    augs: tuple[str, ...],
    ccfg: CalibrationConfig,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(fitted-pair mask (P,), held-out mask (P,), augmentation types left out of the fit);
    raises DataError when a split lacks either class."""
    excluded_types = [
        k for k, a in enumerate(augs) if any(st in ccfg.fit_exclude for st in a.split("+"))
    ]
    train, test = ~test_r, test_r
    fit_mask = train & ~((y == 1) & np.isin(aug_r, excluded_types))
    for split_name, mask in (("training", fit_mask), ("held-out", test)):
        n_pos_split = int(y[mask].sum())
        if n_pos_split == 0 or n_pos_split == int(mask.sum()):
            raise DataError(f"the {split_name} split needs positives and negatives")
    return fit_mask, test, excluded_types


def _evaluation_table(
    p_all: np.ndarray,
    y: np.ndarray,
    fit_mask: np.ndarray,
    test: np.ndarray,
    aug_r: np.ndarray,
    kind: np.ndarray,
    excluded_types: list[int],
    augs: tuple[str, ...],
    rep: float,
    cp: float | None,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """(precision/recall rows per split, group and threshold; average precision per group)
    of the pair probabilities (P,)."""
    table: list[dict[str, Any]] = []
    ap: dict[str, float] = {}

    def rows_for(group_name: str, mask: np.ndarray, split: str = "held-out") -> None:
        pp, yy = p_all[mask], y[mask]
        for thr_name, thr in (("replication", rep), ("copy", cp)):
            table.append(
                {"split": split, "group": group_name, "threshold": thr_name, **_pr_at(pp, yy, thr)}
            )
        if 0 < yy.sum() < yy.size:
            ap[group_name if split == "held-out" else f"{split}:{group_name}"] = float(
                average_precision_score(yy, pp)
            )

    rows_for("overall", fit_mask, split="training")  # the fitted pairs
    rows_for("overall", test)
    if excluded_types:
        unfitted = (y == 1) & np.isin(aug_r, excluded_types)
        rows_for("overall (fitted types)", test & ~unfitted)
    for k, name in enumerate(augs):
        rows_for(name, test & (aug_r == k))
    for neg_kind in NEGATIVE_KINDS:
        mask = test & (kind == neg_kind)
        if mask.any():
            rows_for(f"negatives:{neg_kind}", mask)
    return table, ap


def _retrieval_and_holders(
    feats: dict[str, np.ndarray],
    coef: np.ndarray,
    intercept: float,
    test_rows: np.ndarray,
    src: np.ndarray,
    group: np.ndarray,
    hidx: np.ndarray | None,
    rep: float,
    cp: float | None,
) -> tuple[float, dict[str, Any] | None]:
    """(top-1 retrieval accuracy of the held-out augmented queries against every work,
    holder-level evaluation or None without a holder index)."""
    p_q = _sigmoid(
        intercept + sum(w * feats[f][test_rows] for w, f in zip(coef, FEATURE_NAMES, strict=True))
    )
    top = p_q.argmax(1)
    retrieval = float(np.mean(group[top] == group[src[test_rows]]))
    holder_level = None
    if hidx is not None:
        holder_level = _holder_level(p_q, src[test_rows], group, hidx, rep, cp)
    return retrieval, holder_level


def _fit_and_evaluate(
    feats: dict[str, np.ndarray],
    group: np.ndarray,
    src: np.ndarray,
    aug_of: np.ndarray,
    test_q: np.ndarray,
    hidx: np.ndarray | None,
    ccfg: CalibrationConfig,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """The fitted and evaluated fields of a :class:`Calibration` (coef, intercept, thresholds,
    pair counts, table, average precision, holder level, retrieval, Brier score)."""
    augs = tuple(ccfg.augmentations)
    r, c, y, kind = _build_pairs(feats, group, src, ccfg, rng)
    x = np.stack([feats[f][r, c] for f in FEATURE_NAMES], axis=1)
    fit_mask, test, excluded_types = _split_pairs(y, aug_of[r], test_q[r], augs, ccfg)

    # Fit, then thresholds and evaluation on the held-out split.
    coef, intercept = _fit_logistic(x[fit_mask], y[fit_mask], ccfg.l2)
    intercept += math.log(ccfg.prior / (1.0 - ccfg.prior))  # even odds → prior π
    z_all = intercept + x @ coef
    p_all = _sigmoid(z_all)
    p_test, y_test = p_all[test], y[test]
    rep, cp = choose_thresholds(p_test, y_test, ccfg.copy_precision, ccfg.replication_recall)
    table, ap = _evaluation_table(
        p_all, y, fit_mask, test, aug_of[r], kind, excluded_types, augs, rep, cp
    )
    brier = float(np.mean((p_test - y_test) ** 2))

    # Retrieval and holder level: held-out augmented queries against every work.
    test_rows = np.flatnonzero(test_q & (src >= 0))
    retrieval, holder_level = _retrieval_and_holders(
        feats, coef, intercept, test_rows, src, group, hidx, rep, cp
    )
    return {
        "coef": tuple(float(v) for v in coef),
        "intercept": float(intercept),
        "replication_threshold": rep,
        "copy_threshold": cp,
        "n_pos": int(y[fit_mask].sum()),
        "n_neg": int((1 - y[fit_mask]).sum()),
        "n_pos_test": int(y_test.sum()),
        "n_neg_test": int((1 - y_test).sum()),
        "table": table,
        "average_precision": ap,
        "holder_level": holder_level,
        "retrieval_top1": retrieval,
        "brier": brier,
    }


def fit_calibration(
    encoder: Encoder,
    works: Tensor | np.ndarray,
    holder_index: np.ndarray | None = None,
    cfg: CopyrightConfig | None = None,
    external: Tensor | np.ndarray | None = None,
) -> Calibration:
    """Fit P(substantially similar | features) on augmented copies vs unrelated works.

    See the module docstring for the protocol, the model and the threshold rules. Runtime is
    dominated by the SSIM matrix of the (n_anchors · n_augmentations) queries against the N
    works (×2 with ``flip_invariant``) and the encoder passes: ≈ 3–4 s single-threaded for
    N = 512 works of 16 × 16 with the defaults (672 augmented queries, 240 fitted positives —
    the 96 training crops are left out — and 1,344 fitted negatives; measured 2.5–3.8 s).

    Args:
        encoder: the :class:`~offchain.copyright.encoders.Encoder` the scores will use (e.g.
            the round's :class:`~offchain.copyright.encoders.UNetFeatureEncoder`).
        works: float (N, C, S, S) in [−1, 1], the holders' works (the round's training set).
        holder_index: optional int (N,) holder of each work; adds the holder-level evaluation
            (``Calibration.holder_level``).
        cfg: :class:`~offchain.copyright.config.CopyrightConfig`: its feature fields
            (``feature_settings()``), ``seed`` and ``calibration`` (a
            :class:`CalibrationConfig`); None: defaults.
        external: optional float (E, C, S, S) in [−1, 1], unrelated images used as extra
            negatives (at most ``cfg.calibration.max_external``).

    Returns:
        :class:`Calibration`.

    Raises:
        DataError: bad images (shape, range, non-finite), fewer than ``min_works`` distinct
            works, a bad ``holder_index``, a held-out split without both classes, or an encoder
            output of the wrong shape.
        ConfigError: bad settings.
    """
    start_time = time.perf_counter()
    cfg = cfg if cfg is not None else CopyrightConfig()
    ccfg = cfg.calibration
    settings = cfg.feature_settings()
    works_t, hidx, group, n_distinct, ext_t = _check_calibration_inputs(
        works, holder_index, external, ccfg
    )
    rng = np.random.default_rng(cfg.seed)
    ref = ReferenceSet(encoder, works_t, settings)
    anchors, is_test_anchor, n_test = _pick_anchors(rng, group, n_distinct, ccfg)
    queries, src, aug_of, test_q, n_ext = _build_queries(
        works_t, ext_t, anchors, is_test_anchor, ccfg, cfg.seed, rng
    )
    feats = ref.matrices(queries, ref.encode(queries))  # every query against every work
    fitted = _fit_and_evaluate(feats, group, src, aug_of, test_q, hidx, ccfg, rng)
    elapsed = time.perf_counter() - start_time
    counts = (int(works_t.shape[0]), n_distinct, anchors.size - n_test, n_test, n_ext)
    return _make_calibration(encoder, works_t, cfg, settings, fitted, counts, elapsed)


def _make_calibration(
    encoder: Encoder,
    works_t: Tensor,
    cfg: CopyrightConfig,
    settings: FeatureSettings,
    fitted: dict[str, Any],
    counts: tuple[int, int, int, int, int],
    elapsed: float,
) -> Calibration:
    """The :class:`Calibration` from the fitted fields and (works, distinct works, fitted
    anchors, held-out anchors, external queries) counts; logs a summary."""
    ccfg = cfg.calibration
    n, n_distinct, n_train_anchor, n_test, n_ext = counts
    cal = Calibration(
        **fitted,
        features=settings,
        encoder=encoder_name(encoder),
        image_shape=tuple(int(s) for s in works_t.shape[1:]),
        seed=int(cfg.seed),
        prior=float(ccfg.prior),
        augmentations=tuple(ccfg.augmentations),
        n_works=int(n),
        n_distinct_works=n_distinct,
        n_anchors=(int(n_train_anchor), int(n_test)),
        n_external=int(n_ext),
        fit_seconds=round(elapsed, 3),
        config={k: list(v) if isinstance(v, tuple) else v for k, v in asdict(ccfg).items()},
        rules=_rules(ccfg),
    )
    logger.info(
        "copyright calibration (%s): %d/%d train pos/neg, thresholds %.3f / %s, %.1f s",
        cal.encoder,
        cal.n_pos,
        cal.n_neg,
        cal.replication_threshold,
        "none" if cal.copy_threshold is None else f"{cal.copy_threshold:.3f}",
        elapsed,
    )
    return cal


def _rules(ccfg: CalibrationConfig) -> dict[str, str]:
    rep = (
        "threshold maximizing F1 on the held-out pairs (ties: the highest)"
        if ccfg.replication_recall is None
        else f"highest threshold with held-out recall >= {ccfg.replication_recall}"
    )
    return {
        "replication": rep + "; placed halfway to the next lower held-out probability",
        "copy": (
            f"lowest threshold with held-out precision >= {ccfg.copy_precision} there and at "
            "every higher threshold, at least the replication threshold; null if unreachable"
        ),
        "probability": (
            "class-balanced, sign-constrained logistic regression (log likelihood ratio) plus "
            f"logit(prior = {ccfg.prior}); positives of augmentations containing "
            f"{list(ccfg.fit_exclude)} are evaluated but not fitted"
        ),
    }


def _holder_level(
    p_q: np.ndarray,
    src: np.ndarray,
    group: np.ndarray,
    hidx: np.ndarray,
    rep: float,
    cp: float | None,
) -> dict[str, Any]:
    """Per held-out query and holder g: score max_{i∈g} p, label "g owns the source".

    Works duplicating the source are left out of the other holders' maxima (they are copies
    too, of a work the other holder also holds)."""
    order = np.argsort(hidx, kind="stable")
    sorted_h = hidx[order]
    starts = np.flatnonzero(np.r_[True, sorted_h[1:] != sorted_h[:-1]])
    holders = sorted_h[starts]
    src_holder = hidx[src]
    # Duplicates of the source held by *another* holder are copies too: left out.
    masked = np.where(
        (group[None, :] == group[src][:, None]) & (hidx[None, :] != src_holder[:, None]),
        -np.inf,
        p_q,
    )
    best = np.maximum.reduceat(masked[:, order], starts, axis=1)  # (Q, holders)
    label = (holders[None, :] == src_holder[:, None]).astype(np.float64)
    keep = np.isfinite(best)
    s, lab = best[keep], label[keep]
    out: dict[str, Any] = {
        "n_queries": int(p_q.shape[0]),
        "n_holders": int(holders.size),
        "replication": _pr_at(s, lab, rep),
        "copy": _pr_at(s, lab, cp),
    }
    if 0 < lab.sum() < lab.size:
        out["average_precision"] = float(average_precision_score(lab, s))
    return out


# ------------------------------------------------------------------------------ scoring


@dataclass(frozen=True)
class PairScores:
    """Calibrated scores of every (generated sample m, work i) pair; all float64 (M, N)."""

    probability: np.ndarray
    """P(substantially similar) in [0, 1]."""
    logit: np.ndarray
    """log-odds of ``probability`` (unsaturated; use it to rank)."""
    semantic: np.ndarray
    """centered embedding cosine in [−1, 1]."""
    ssim: np.ndarray
    """SSIM in [−1, 1]."""
    tiled_l2: np.ndarray
    """tiled ℓ2 distance in [0, 2] (pixel scale [−1, 1])."""


def score_pairs(
    encoder: Encoder,
    generated: Tensor | np.ndarray,
    works: Tensor | np.ndarray | ReferenceSet,
    calibration: Calibration,
) -> PairScores:
    """Features and calibrated probability of every (generated, work) pair.

    The features are computed with the calibration's :class:`FeatureSettings` (the model is
    only valid for those).

    Args:
        encoder: the encoder the calibration was fitted with (checked by name).
        generated: float (M, C, S, S) in [−1, 1].
        works: float (N, C, S, S) in [−1, 1], or a :class:`ReferenceSet` built with the
            calibration's settings.
        calibration: a :class:`Calibration`.

    Raises:
        ConfigError: the encoder's name or the image shape differ from the calibration's.
        DataError: bad images or encoder outputs.
    """
    name = encoder_name(encoder)
    if name != calibration.encoder:
        raise ConfigError(
            f"calibration was fitted for encoder {calibration.encoder!r}, not {name!r}"
        )
    gen = clamped_image_batch(generated, "generated")
    if tuple(gen.shape[1:]) != tuple(calibration.image_shape):
        raise ConfigError(
            f"calibration was fitted on images {tuple(calibration.image_shape)}, got "
            f"{tuple(gen.shape[1:])}"
        )
    ref = (
        works
        if isinstance(works, ReferenceSet)
        else ReferenceSet(encoder, clamped_image_batch(works, "works"), calibration.features)
    )
    if ref.settings != calibration.features:
        raise ConfigError("the reference set's feature settings differ from the calibration's")
    feats = ref.matrices(gen, ref.encode(gen))
    z = calibration.logit(feats)
    return PairScores(
        probability=_sigmoid(z),
        logit=z,
        semantic=feats["semantic"],
        ssim=feats["ssim"],
        tiled_l2=feats["tiled_l2"],
    )


# ------------------------------------------------------------------------------ reporting


def _fmt(v: object, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def copyright_calibration_report(calibration: Calibration, title: str | None = None) -> str:
    """A markdown report: model, thresholds with their rules, and the held-out table.

    The table has one row per group and threshold: ``overall`` (held-out; plus the fitted
    training pairs for comparison), each augmentation type (its positives against the negatives whose
    query had the same augmentation), and each negative kind (false-positive rate only), with
    TP, FP, precision, recall, F1 and the average precision (area under the PR curve) per
    group; then the holder-level and retrieval figures when present.
    """
    c = calibration
    lines = [f"# {title or 'Copyright calibration'}", ""]
    coef = ", ".join(f"{w:+.3f}·{f}" for w, f in zip(c.coef, c.feature_names, strict=True))
    lines += [
        f"- encoder: `{c.encoder}`; images {list(c.image_shape)}; seed {c.seed}; "
        f"features {asdict(c.features)}",
        f"- model: P(substantially similar) = σ({c.intercept:+.3f} {coef}) (prior {c.prior})",
        f"- works: {c.n_works} ({c.n_distinct_works} distinct); anchors train/held-out "
        f"{c.n_anchors[0]}/{c.n_anchors[1]}; external images {c.n_external}",
        f"- pairs: training {c.n_pos} positive / {c.n_neg} negative; held-out "
        f"{c.n_pos_test} / {c.n_neg_test}",
        f"- thresholds: replication p ≥ {c.replication_threshold:.3f} "
        f"({c.rules.get('replication', '')}); copy p ≥ {_fmt(c.copy_threshold)} "
        f"({c.rules.get('copy', '')})",
        f"- held-out Brier score {_fmt(c.brier, 4)}; top-1 retrieval of the source work "
        f"{_fmt(c.retrieval_top1)}; fit time {c.fit_seconds:.1f} s",
        "",
        "| split | group | threshold | pos | neg | TP | FP | precision | recall | F1 | FPR | AP |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in c.table:
        key = row["group"] if row["split"] == "held-out" else f"{row['split']}:{row['group']}"
        ap = c.average_precision.get(key)
        lines.append(
            f"| {row['split']} | {row['group']} | {row['threshold']} | {row['n_pos']} | "
            f"{row['n_neg']} | {row['tp']} | {row['fp']} | {_fmt(row['precision'])} | "
            f"{_fmt(row['recall'])} | {_fmt(row['f1'])} | {_fmt(row['fpr'])} | "
            f"{_fmt(ap) if row['threshold'] == 'replication' else ''} |"
        )
    if c.holder_level:
        h = c.holder_level
        lines += [
            "",
            f"Holder level ({h['n_queries']} held-out augmented copies × {h['n_holders']} "
            "holders; score = max over the holder's works, positive = the holder owns the "
            f"source; AP {_fmt(h.get('average_precision'))}):",
            "",
            "| threshold | pos | neg | TP | FP | precision | recall | FPR |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for thr in ("replication", "copy"):
            r = h[thr]
            lines.append(
                f"| {thr} | {r['n_pos']} | {r['n_neg']} | {r['tp']} | {r['fp']} | "
                f"{_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['fpr'])} |"
            )
    return "\n".join(lines) + "\n"


def run_calibration(
    checkpoint_dir: Path,
    works: np.ndarray,
    holder_index: np.ndarray | None,
    out_dir: Path,
    image_size: int = 16,
    encoder_spec: str = "unet",
    seed: int = 0,
    external: np.ndarray | None = None,
    cfg: CopyrightConfig | None = None,
    backend: Any | None = None,
) -> Path:
    """Calibrate on a trained round checkpoint and holder works; write JSON + markdown.

    Writes ``out_dir/calibration.json`` (:meth:`Calibration.to_dict`) and
    ``out_dir/calibration.md`` (:func:`copyright_calibration_report`) atomically. Skips the fit when
    ``calibration.json`` exists (the markdown is rewritten from it if missing).

    Args:
        checkpoint_dir: a round checkpoint (``offchain.diffusion.load_checkpoint``, or the
            ``backend``'s).
        works: uint8 holder works, (N, H, W) grayscale or (N, H, W, 3) RGB (resized to the
            model's side).
        holder_index: optional int (N,) holder of each work.
        out_dir: output folder (created).
        image_size: side S the works are resized to (the ddpm model's; ignored with
            ``backend``).
        encoder_spec: ``"unet"``, ``"torchscript:<path>"`` or ``"hf:<path>"``
            (:func:`~offchain.copyright.encoders.load_encoder`).
        seed: seed of the anchors, augmentations, negatives and the UNet encoder's noise.
        external: optional uint8 (E, H, W) or (E, H, W, 3) unrelated images (extra negatives).
        cfg: :class:`~offchain.copyright.config.CopyrightConfig` (its ``seed`` is replaced by
            ``seed``); None: defaults.
        backend: the round's :class:`~offchain.diffusion.backend.ModelBackend` (e.g. the
            ``text-unet`` backend of an emoji round): it loads the checkpoint and preprocesses
            the images (its channels and side); the UNet encoder runs a conditional model with
            the null caption, and a latent model (``sd-lora``) on the works' latents
            (``encode_images``). None: the ``ddpm`` functions with ``image_size``.

    Returns:
        The path of ``calibration.json``.

    Raises:
        StageError: the checkpoint is missing or incomplete.
        DataError, ConfigError: as :func:`fit_calibration` / :func:`load_encoder`.
    """
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / CALIBRATION_JSON, out_dir / CALIBRATION_MD
    if json_path.exists():
        if not md_path.exists():
            cal = Calibration.load(json_path)
            atomic_write(md_path, lambda tmp: tmp.write_text(copyright_calibration_report(cal)))
        logger.info("calibration %s exists; skipping", json_path)
        return json_path
    cfg = replace(cfg if cfg is not None else CopyrightConfig(), seed=seed)
    model, prep = _checkpoint_model(Path(checkpoint_dir), image_size, backend)
    encoder = load_encoder(
        encoder_spec,
        model.unet,
        model.scheduler,
        timestep=cfg.semantic_timestep,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        encode_images=model.encode_images,
    )
    x = prep(works)
    ext = prep(external) if external is not None else None
    cal = fit_calibration(encoder, x, holder_index, cfg, external=ext)
    title = f"Copyright calibration of {Path(checkpoint_dir).name}"
    atomic_write(md_path, lambda tmp: tmp.write_text(copyright_calibration_report(cal, title)))
    cal.save(json_path)
    return json_path


def _checkpoint_model(
    checkpoint_dir: Path, image_size: int, backend: Any | None
) -> tuple[DenoisingModel, Callable[[np.ndarray], Tensor]]:
    """``(model, preprocess(uint8 images) → pixels float32 (N, C, S, S) in [−1, 1])`` of a
    checkpoint: the backend's (a latent model's ``encode_images`` maps the pixels to the
    latents its UNet denoises), or the ddpm functions at ``image_size``."""
    if backend is not None:
        return backend.load(checkpoint_dir), backend.preprocess
    # diffusers (behind offchain.diffusion.model) is heavy: imported only when calibrating
    from offchain.diffusion import load_checkpoint, preprocess

    unet, scheduler = load_checkpoint(checkpoint_dir)
    return DenoisingModel(unet, scheduler), lambda images: preprocess(images, image_size)
