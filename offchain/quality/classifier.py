"""The reference classifier whose penultimate layer is the feature space of the quality FID.

FID (Heusel et al. 2017) is usually computed on Inception-v3 pool features, whose weights
cannot be fetched offline. As is common for MNIST-scale generators, the project instead trains
a small CNN on held-out real images with labels, at the diffusion model's input resolution
(S × S in [−1, 1], :func:`offchain.diffusion.preprocess`: grayscale for MNIST, RGB for the
emoji art), and measures FID in its penultimate layer.

Architecture (``channels = (c1, c2)``, ``feature_dim = D``, K classes, C input channels: 1 for
grayscale training images, 3 for RGB ones, recorded as ``in_channels``)::

    x (B, C, S, S) → conv3×3(C→c1) → ReLU → maxpool2 → conv3×3(c1→c2) → ReLU → maxpool2
      → flatten (c2 · (S/4)²) → linear(→D)  = features (pre-activation, float)
      → ReLU → linear(D→K) = logits

The features are taken *before* the ReLU so that no unit is identically zero on a region of
inputs (a dead unit would make the covariance singular).

A trained classifier lives in a folder::

    <dir>/reference_classifier.safetensors   state_dict (safetensors)
    <dir>/reference_classifier.json          config, classes, accuracy, data hash (written last)
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from offchain.diffusion.model import preprocess, torch_threads
from offchain.errors import ConfigError, DataError, StageError
from offchain.utils import atomic_write, read_json, sha256_file, write_json

__all__ = [
    "CLASSIFIER_JSON",
    "CLASSIFIER_WEIGHTS",
    "ClassifierConfig",
    "ReferenceClassifier",
    "check_model_images",
    "data_hash",
    "features",
    "image_channels",
    "load_reference_classifier",
    "predict_proba",
    "train_reference_classifier",
]

logger = logging.getLogger(__name__)

CLASSIFIER_WEIGHTS = "reference_classifier.safetensors"
CLASSIFIER_JSON = "reference_classifier.json"
FORMAT = "offchain.quality.reference_classifier/1"

_PIXEL_TOLERANCE = 1e-4
"""Pixels may exceed [−1, 1] by this much (float rounding) before they are rejected."""

_NON_SEMANTIC_FIELDS = frozenset({"num_threads"})
"""Config fields that do not change what is trained; ignored when matching a cached classifier."""


@dataclass
class ClassifierConfig:
    """Hyperparameters of the reference classifier and its training.

    The defaults train on ~5,000 MNIST digits at 16×16 in well under a minute on one CPU thread
    and reach about 97–98 % validation accuracy (see docs/quality.md).
    """

    image_size: int = 16
    """Input side S in pixels; images are resized by :func:`offchain.diffusion.preprocess`. Must
    equal the diffusion model's ``image_size`` and be a multiple of 4, ≥ 4."""
    channels: tuple[int, int] = (32, 64)
    """Output channels (c1, c2) of the two conv layers."""
    feature_dim: int = 64
    """D, the width of the penultimate (feature) layer."""
    epochs: int = 10
    """Passes over the training part."""
    batch_size: int = 64
    """Images per optimizer step."""
    learning_rate: float = 3e-3
    """Peak Adam learning rate; decays linearly to 0 over training."""
    weight_decay: float = 1e-4
    """Adam L2 weight decay."""
    val_fraction: float = 0.1
    """Share of each class held out for the validation accuracy (stratified)."""
    seed: int = 0
    """Seed of initialisation, split and batch order."""
    num_threads: int | None = None
    """torch intra-op threads while training (restored afterwards); None keeps torch's setting.
    Not part of the cache key."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first out-of-range field.

        Called on construction, and again before training (the dataclass is mutable).
        """
        if self.image_size < 4 or self.image_size % 4:
            raise ConfigError(f"image_size must be a multiple of 4, >= 4, got {self.image_size}")
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise ConfigError(f"channels must be two positive ints, got {self.channels}")
        for name in ("feature_dim", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise ConfigError("learning_rate must be > 0 and weight_decay >= 0")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1 or None, got {self.num_threads}")

    def to_json(self) -> dict[str, Any]:
        """The config as JSON-able dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["channels"] = list(self.channels)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ClassifierConfig:
        """Inverse of :meth:`to_json`; unknown keys raise :class:`ConfigError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(obj) - names
        if unknown:
            raise ConfigError(f"unknown ClassifierConfig keys {sorted(unknown)}")
        kwargs = dict(obj)
        if "channels" in kwargs:
            kwargs["channels"] = tuple(int(c) for c in kwargs["channels"])
        return cls(**kwargs)

    def cache_key(self) -> dict[str, Any]:
        """The fields that define the trained weights (everything but ``num_threads``)."""
        return {k: v for k, v in self.to_json().items() if k not in _NON_SEMANTIC_FIELDS}


class ReferenceClassifier(nn.Module):
    """The small CNN of the module docstring.

    ``forward(x)`` → logits (B, K); :meth:`extract_features` ``(x)`` → features (B, D); x is
    float32 (B, C, S, S) in [−1, 1], C = ``in_channels`` (1 grayscale, 3 RGB). After
    :func:`load_reference_classifier`, ``metadata`` holds the classifier's JSON record.
    """

    def __init__(
        self,
        image_size: int,
        channels: tuple[int, int],
        feature_dim: int,
        n_classes: int,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if image_size < 4 or image_size % 4:
            raise ConfigError(f"image_size must be a multiple of 4, >= 4, got {image_size}")
        if n_classes < 2:
            raise ConfigError(f"a classifier needs >= 2 classes, got {n_classes}")
        if in_channels not in (1, 3):
            raise ConfigError(f"in_channels must be 1 or 3, got {in_channels}")
        c1, c2 = channels
        self.image_size = int(image_size)
        self.in_channels = int(in_channels)
        self.feature_dim = int(feature_dim)
        self.n_classes = int(n_classes)
        self.metadata: dict[str, Any] = {}
        self.conv1 = nn.Conv2d(in_channels, c1, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3, padding=1)
        self.fc = nn.Linear(c2 * (image_size // 4) ** 2, feature_dim)
        self.head = nn.Linear(feature_dim, n_classes)

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features (B, D), before the ReLU."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, K)."""
        return self.head(F.relu(self.extract_features(x)))


def data_hash(images: np.ndarray, labels: np.ndarray) -> str:
    """Hex SHA-256 of a labelled dataset: ``"images:<N>x<H>x<W>:"`` (``…x3:`` for RGB) +
    pixel bytes (uint8, row-major) + ``"labels:"`` + labels as little-endian int64 bytes."""
    digest = hashlib.sha256(("images:" + "x".join(map(str, images.shape)) + ":").encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(b"labels:")
    digest.update(np.ascontiguousarray(np.asarray(labels).astype("<i8")).tobytes())
    return digest.hexdigest()


def train_reference_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    out_dir: Path,
    cfg: ClassifierConfig | None = None,
    progress: bool = True,
) -> Path:
    """Train the reference classifier on held-out real images and save it to ``out_dir``.

    A stratified, seeded ``cfg.val_fraction`` of each class is kept out of training and gives
    the validation accuracy. Training: Adam (``cfg.learning_rate`` decaying linearly to 0,
    ``cfg.weight_decay``), cross-entropy, ``cfg.epochs`` passes in seeded random order.
    Initialisation and batch order come from ``cfg.seed`` only (torch's global RNG state is
    restored afterwards): same data, config and thread count → same weights.

    The weights are written first, the JSON record last, each atomically; a folder with both is
    complete. If ``out_dir`` already holds a complete classifier for the same data hash and
    config (ignoring ``num_threads``), nothing is trained.

    Args:
        images: uint8 (N, H, W) grayscale or (N, H, W, 3) RGB real images, none of them a
            data holder's (see :func:`offchain.quality.held_out.held_out_images`); resized to
            S × S, the classifier takes as many channels as they have (1 or 3).
        labels: integer (N,) labels; the sorted distinct values are the classes (≥ 2, each
            with ≥ 2 images).
        out_dir: folder to write (created).
        cfg: hyperparameters; None: :class:`ClassifierConfig` defaults.
        progress: show a tqdm progress bar.

    Returns:
        ``out_dir``.

    Raises:
        DataError: bad images or labels (dtype, shape, fewer than 2 classes, a class with one
            image).
        ConfigError: ``cfg`` is out of range.
        StageError: ``out_dir`` holds a complete classifier for other data or another config
            (remove it, or use another folder).
    """
    cfg = cfg if cfg is not None else ClassifierConfig()
    cfg.validate()
    out_dir = Path(out_dir)
    x_all, labels, classes, targets = _check_training_data(images, labels, cfg.image_size)
    digest = data_hash(images, labels)
    if _has_matching_classifier(out_dir, digest, cfg):
        logger.info("reference classifier %s is complete; skipping training", out_dir)
        return out_dir

    x_train, y_train, x_val, y_val = _split_train_val(x_all, targets, len(classes), cfg)
    model, loss_value, train_acc, val_acc, seconds = _train_and_score(
        x_train, y_train, x_val, y_val, len(classes), cfg, progress
    )
    weights_path = _write_weights(model, out_dir / CLASSIFIER_WEIGHTS)
    meta = _classifier_record(
        cfg,
        classes,
        n_images=len(images),
        in_channels=int(x_all.shape[1]),
        n_train=int(len(x_train)),
        n_val=int(len(x_val)),
        train_acc=train_acc,
        val_acc=val_acc,
        loss_value=loss_value,
        digest=digest,
        weights_path=weights_path,
        seconds=seconds,
    )
    write_json(out_dir / CLASSIFIER_JSON, meta)
    return out_dir


def _check_training_data(
    images: np.ndarray, labels: np.ndarray, image_size: int
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """(x float32 (N, C, S, S) in [−1, 1] (C = 1 for grayscale, 3 for RGB images), labels as
    ndarray (N,), classes int64 (K,) sorted, targets int (N,) class indices 0..K−1); raises
    :class:`DataError` on bad images or labels."""
    x_all = preprocess(images, image_size, channels=image_channels(images))
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"labels must be integers of shape ({len(images)},), got {labels.dtype} {labels.shape}"
        )
    classes, targets = np.unique(labels.astype(np.int64), return_inverse=True)
    counts = np.bincount(targets, minlength=len(classes))
    if len(classes) < 2:
        raise DataError(f"the classifier needs >= 2 classes, labels hold {classes.tolist()}")
    if counts.min() < 2:
        raise DataError(
            f"every class needs >= 2 images (one for validation), class "
            f"{int(classes[counts.argmin()])} has {int(counts.min())}"
        )
    return x_all, labels, classes, targets


def _has_matching_classifier(out_dir: Path, digest: str, cfg: ClassifierConfig) -> bool:
    """True if ``out_dir`` holds a complete classifier for this data hash and config, False if
    it holds no complete one; raises :class:`StageError` if it holds one for other data/config."""
    json_path = out_dir / CLASSIFIER_JSON
    if not (json_path.is_file() and (out_dir / CLASSIFIER_WEIGHTS).is_file()):
        return False
    meta = read_json(json_path)
    if meta.get("data_hash") != digest:
        raise StageError(
            f"{out_dir} holds a reference classifier trained on other data "
            f"(data hash {meta.get('data_hash')}, now {digest}); remove it to retrain"
        )
    cached = {k: v for k, v in meta.get("config", {}).items() if k not in _NON_SEMANTIC_FIELDS}
    if cached != cfg.cache_key():
        raise StageError(
            f"{out_dir} holds a reference classifier with another config ({cached}, now "
            f"{cfg.cache_key()}); remove it to retrain"
        )
    return True


def _split_train_val(
    x_all: torch.Tensor, targets: np.ndarray, n_classes: int, cfg: ClassifierConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_val, y_val): x float32 (n, C, S, S), y int64 (n,); a stratified
    split seeded by ``cfg.seed``, ≥ 1 image of each class on each side."""
    rng = np.random.default_rng(cfg.seed)
    is_val = np.zeros(len(targets), dtype=bool)
    for k in range(n_classes):
        idx = rng.permutation(np.flatnonzero(targets == k))
        n_val = min(max(int(round(cfg.val_fraction * len(idx))), 1), len(idx) - 1)
        is_val[idx[:n_val]] = True
    y_all = torch.from_numpy(targets.astype(np.int64))
    return x_all[~is_val], y_all[~is_val], x_all[is_val], y_all[is_val]


def _train_and_score(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    n_classes: int,
    cfg: ClassifierConfig,
    progress: bool,
) -> tuple[ReferenceClassifier, float, float, float, float]:
    """(model in eval mode, final batch loss, train accuracy, validation accuracy, seconds taken);
    seeded by ``cfg.seed`` with torch's global RNG state restored afterwards; logs the result."""
    start = time.perf_counter()
    with torch_threads(cfg.num_threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = ReferenceClassifier(
            cfg.image_size, cfg.channels, cfg.feature_dim, n_classes, int(x_train.shape[1])
        )
        loss_value = _fit(model, x_train, y_train, cfg, progress)
        model.eval()
        train_acc = _accuracy(model, x_train, y_train)
        val_acc = _accuracy(model, x_val, y_val)
    seconds = time.perf_counter() - start
    logger.info(
        "reference classifier: %d classes, train acc %.4f, validation acc %.4f (%d images), %.1f s",
        n_classes,
        train_acc,
        val_acc,
        len(x_val),
        seconds,
    )
    return model, loss_value, train_acc, val_acc, seconds


def _fit(
    model: ReferenceClassifier,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    cfg: ClassifierConfig,
    progress: bool,
) -> float:
    """The last batch's cross-entropy loss (float) after training ``model`` in place: Adam with
    linear decay to 0, ``cfg.epochs`` passes in an order seeded by ``cfg.seed``."""
    generator = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - step / total)
    )
    model.train()
    bar = tqdm(total=total, desc="reference classifier", disable=not progress, leave=False)
    loss_value = float("nan")
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for b in range(steps_per_epoch):
            batch = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_value = loss.detach().item()
            bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{loss_value:.3f}")
    bar.close()
    return loss_value


def _write_weights(model: ReferenceClassifier, weights_path: Path) -> Path:
    """``weights_path``, after atomically writing the model's state_dict there (safetensors)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write(weights_path, lambda tmp: save_file(state, str(tmp)))
    return weights_path


def _classifier_record(
    cfg: ClassifierConfig,
    classes: np.ndarray,
    *,
    n_images: int,
    in_channels: int,
    n_train: int,
    n_val: int,
    train_acc: float,
    val_acc: float,
    loss_value: float,
    digest: str,
    weights_path: Path,
    seconds: float,
) -> dict[str, Any]:
    """The classifier's JSON record (dict, key order as written), hashing the weights file."""
    return {
        "format": FORMAT,
        "config": cfg.to_json(),
        "classes": [int(c) for c in classes],
        "n_classes": len(classes),
        "image_size": cfg.image_size,
        "in_channels": in_channels,
        "feature_dim": cfg.feature_dim,
        "n_images": n_images,
        "n_train": n_train,
        "n_val": n_val,
        "train_accuracy": train_acc,
        "val_accuracy": val_acc,
        "final_loss": loss_value,
        "data_hash": digest,
        "seed": cfg.seed,
        "weights_file": CLASSIFIER_WEIGHTS,
        "weights_sha256": sha256_file(weights_path),
        "train_seconds": round(seconds, 3),
        "torch_version": torch.__version__,
        "num_threads": torch.get_num_threads() if cfg.num_threads is None else cfg.num_threads,
    }


def load_reference_classifier(classifier_dir: Path) -> ReferenceClassifier:
    """Load a classifier saved by :func:`train_reference_classifier` (eval mode, CPU, float32).

    Returns:
        The model, with its JSON record in ``model.metadata``.

    Raises:
        StageError: the folder, its JSON or its weights are missing, the weights' SHA-256 differs
            from the record, or the weights do not fit the recorded architecture.
    """
    classifier_dir = Path(classifier_dir)
    json_path = classifier_dir / CLASSIFIER_JSON
    weights_path = classifier_dir / CLASSIFIER_WEIGHTS
    if not json_path.is_file() or not weights_path.is_file():
        raise StageError(
            f"no complete reference classifier in {classifier_dir} (needs {CLASSIFIER_JSON} and "
            f"{CLASSIFIER_WEIGHTS}); train one with train_reference_classifier"
        )
    meta = read_json(json_path)
    if meta.get("format") != FORMAT:
        raise StageError(f"{json_path}: unknown format {meta.get('format')!r}, expected {FORMAT}")
    actual = sha256_file(weights_path)
    if actual != meta.get("weights_sha256"):
        raise StageError(
            f"{weights_path}: sha256 {actual} differs from the record's {meta.get('weights_sha256')}"
        )
    try:
        cfg = ClassifierConfig.from_json(meta["config"])
    except ConfigError as exc:
        raise StageError(f"{json_path}: {exc}") from exc
    from safetensors.torch import load_file

    model = ReferenceClassifier(  # records before RGB support have no in_channels: grayscale
        cfg.image_size, cfg.channels, cfg.feature_dim, meta["n_classes"],
        int(meta.get("in_channels", 1)),
    )
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except (RuntimeError, OSError) as exc:
        raise StageError(f"cannot load {weights_path}: {exc}") from exc
    model.eval()
    model.metadata = meta
    return model


def image_channels(images: np.ndarray) -> int:
    """Channels of uint8 images as a model takes them: 1 for (N, H, W), 3 for (N, H, W, 3)."""
    return 3 if getattr(images, "ndim", 0) == 4 else 1


def check_model_images(
    images: np.ndarray | torch.Tensor, image_size: int | None, channels: int | None = None
) -> torch.Tensor:
    """Validate model inputs and return them as a float32 CPU tensor.

    Args:
        images: float (B, C, S, S) array or tensor, C = 1 (grayscale) or 3 (RGB), pixels in
            [−1, 1] (±1e-4), B ≥ 1.
        image_size: required S, or None for any.
        channels: required C, or None for 1 or 3.

    Raises:
        DataError: not 4-D with 1 or 3 (or ``channels``) channels, wrong side, empty,
            non-finite or out-of-range pixels (e.g. uint8 0..255 passed by mistake).
    """
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    allowed = (1, 3) if channels is None else (channels,)
    if x.ndim != 4 or x.shape[1] not in allowed or x.shape[0] == 0:
        wanted = " or ".join(str(c) for c in allowed)
        raise DataError(
            f"images must have shape (B >= 1, {wanted}, S, S) for this model, got "
            f"{tuple(x.shape)}"
        )
    if not torch.is_floating_point(x):
        raise DataError(
            f"images must be float in [-1, 1] (see offchain.diffusion.preprocess), got {x.dtype}"
        )
    if image_size is not None and tuple(x.shape[2:]) != (image_size, image_size):
        raise DataError(
            f"images must be {image_size}×{image_size} for this model, got {tuple(x.shape[2:])}"
        )
    x = x.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():
        raise DataError("images contain NaN or infinite pixels")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.0 - _PIXEL_TOLERANCE or hi > 1.0 + _PIXEL_TOLERANCE:
        raise DataError(f"pixels must lie in [-1, 1], got range [{lo:.4g}, {hi:.4g}]")
    return x.clamp(-1.0, 1.0)


def _on_device(model: Any, device: torch.device | str | None) -> torch.device:
    """Move ``model`` (an ``nn.Module``; other extractors stay where they are) to ``device``
    (None: the CPU); the device its inputs go to."""
    target = torch.device(device) if device is not None else torch.device("cpu")
    if isinstance(model, nn.Module):
        model.to(target)
        return target
    return torch.device("cpu")


def features(
    model: Any,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Feature vectors of images: the penultimate layer of a :class:`ReferenceClassifier`, or
    whatever ``model.extract_features`` returns (e.g.
    :class:`offchain.quality.fid.TorchScriptFeatureExtractor`).

    Args:
        model: an object with ``extract_features(x: Tensor (b, C, S, S)) → Tensor (b, …)``, an
            ``image_size`` attribute (int, or None for any size) and optionally
            ``in_channels`` (the C it takes; absent: 1 or 3).
        images: float32 (B, C, S, S) in [−1, 1].
        batch_size: images per forward pass.
        device: where a :class:`ReferenceClassifier` runs (it is moved there; None: the CPU);
            the features are float64 on the CPU either way.

    Returns:
        float64 (B, D) numpy array.

    Raises:
        DataError: bad images (see :func:`check_model_images`).
    """
    x = check_model_images(
        images, getattr(model, "image_size", None), getattr(model, "in_channels", None)
    )
    target = _on_device(model, device)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            feats = model.extract_features(x[start : start + batch_size].to(target))
            out.append(torch.flatten(feats, 1).to("cpu", torch.float64))
    if was_training:
        model.train()
    return torch.cat(out).numpy()


def predict_proba(
    model: ReferenceClassifier,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Softmax class probabilities float64 (B, K) of images float32 (B, C, S, S) in [−1, 1];
    column k is class ``model.metadata["classes"][k]``. ``device``: where the model runs (it
    is moved there; None: the CPU).

    Raises:
        DataError: bad images (see :func:`check_model_images`).
    """
    x = check_model_images(images, model.image_size, model.in_channels)
    target = _on_device(model, device)
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size].to(target))
            out.append(torch.softmax(logits, dim=1).to("cpu", torch.float64))
    return torch.cat(out).numpy()


def _accuracy(model: ReferenceClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        correct = sum(
            int((model(x[s : s + 512]).argmax(1) == y[s : s + 512]).sum())
            for s in range(0, len(x), 512)
        )
    return correct / max(len(x), 1)
