"""TRAK attribution of a round's generated samples to the training images, and per-holder sums.

TRAK (Park et al., "TRAK: Attributing Model Behavior at Scale", ICML 2023, arXiv 2303.14186)
with the D-TRAK output function for diffusion models (Zheng et al., "Intriguing Properties of
Data Attribution on Diffusion Models", ICLR 2024, arXiv 2311.00500), see
:mod:`offchain.attribution.model_output`. For one checkpoint θ:

    φ(z)  = Pᵀ ∇_θ f(z; θ) / sqrt(p)        projected gradient, P ~ N(0, 1)^{p × proj_dim}
    Φ     = [φ(z_1); …; φ(z_N)]            (N, proj_dim), the training features
    τ(z') = φ(z')ᵀ (ΦᵀΦ + λ I)⁻¹ Φᵀ · Q    (N,), Q = I for D-TRAK

so ``scores[m, i]`` is the (linearised) influence of training image i on target m. Positive
means "training on i made the model's output on target m larger", i.e. i supports m.

The pipeline is ours; traker (MadryLab, ``traker==0.3.2``) supplies the projector classes:

- Featurize (:mod:`offchain.attribution.featurize`): per-example gradients with ``torch.func``
  one batch at a time, projected with a matrix generated once — bit for bit the matrix of
  traker's default CPU path (normal entries, 100-column blocks, same seeds), which regenerates
  every block for every batch — or traker's ``CudaProjector`` on a GPU with ``fast_jl``
  (untested). Features go to a resumable store under ``save_dir/features/``.
- Kernel and scores (:mod:`offchain.attribution.kernel`): float64, Cholesky solve, no
  renormalisation. τ is in the units of the linearised output function, so scores of different
  checkpoints/seeds can be averaged (:func:`compute_trak_ensemble`) and compared.
- λ > 0 is required: with ``proj_dim ≥ N`` the Gram matrix ΦᵀΦ is singular. Its scale depends
  on the model size, the output function and the training state (median eigenvalue ~1e-5 on the
  demo model, where an absolute λ = 1e-2 swamps it and halves self-attribution accuracy). By
  default ``lambda_reg`` is therefore *relative*: λ = ``lambda_reg · tr(ΦᵀΦ) / proj_dim`` (the
  mean eigenvalue). Measured on digits (N = 512, proj_dim 512, D-TRAK, K = 4): a training image
  used as a target ranks its own entry in the top 5 for 100 % of 32 targets at relative
  1e-3…1e-2, 88 % at 1e-1, 53 % at 1; absolute 1e-2 gives ~50 %. (That was one model; the
  rate depends on training: the slow test's barely trained 20-step (32, 64) UNet gives 41 %,
  against 1 % by chance.) ``lambda_relative=False``
  uses ``lambda_reg`` as the absolute λ (traker's convention).
- Noise: training examples use noise stream 0, targets stream 1 (both from ``cfg.seed``), so a
  target that happens to equal a training image does not reuse its noise.
- Captions (text-conditioned models): each example's caption token ids travel with it and the
  output function differentiates ε_θ(x_t, t, c) (see :mod:`offchain.attribution.model_output`);
  every parameter of the network passed in — for the ``text-unet`` backend the UNet and the
  caption encoder — is differentiated.

Artifacts in ``save_dir``::

    features/train.npy, train.done.npy, train.json      Φ (N, proj_dim) float32 + done-mask
    features/target.npy, target.done.npy, target.json   Φ' (M, proj_dim) float32 + done-mask
    meta.json     identity of the request, λ_abs, projector, timings (written before scores)
    scores.npy    τ float32 (M, N), written atomically last

Resuming: when ``scores.npy`` exists and ``meta.json`` matches the request the saved scores are
returned without recomputing (a different request: :class:`StageError`). Otherwise the feature
stores are reopened and only their missing rows are computed (batches on a fixed grid, noise per
global index: the final scores are bit-identical to an uninterrupted run's with the same config
and thread count). The stores record what they are of (model fingerprint, image hashes, the hash of
the caption token ids for a conditional model, output function, K, seed, projector); a store of a different request raises :class:`StageError` rather
than being discarded — remove the folder to recompute. ``lambda_reg``/``lambda_relative`` and
``batch_size`` are not part of a store's identity: to try another λ, delete ``scores.npy`` and
``meta.json`` and call again; only the kernel is recomputed. A ``traker/`` folder left by the
previous traker-driven version is ignored.

Measured with ``bench/featurize.py`` (2-core AMD EPYC shared with other jobs, load 2–3, 1 torch
thread; demo UNet of 651k parameters trained 40 steps; N = 512 MNIST digits, M = 64 targets,
K = 4, batch 32), against traker's default ``TRAKer`` CPU path with the same λ:

    proj_dim  projection  ours ex/s  traker ex/s  featurize ×  total ×  Spearman   peak RSS MiB
    512       float32        34.5       18.0         1.9–2.2   1.9–2.2   1.00000   2799 vs 1984
    512       bfloat16       44.4       17.3         2.6       2.6       0.9994    2139
    2048      float32        14.1        6.0         2.3       2.4       1.00000   6602 vs 1995
    2048      bfloat16       23.4        6.1         3.9       4.0       0.9993    4050

Both paths share the per-example gradient cost (≈ one forward + backward of B·K images,
~0.5 s per batch here, 60 % of ours at proj_dim 512); traker's extra cost is redrawing its
100-column blocks every batch (~0.17 s each), so the gain grows with proj_dim. Swapping the
attention processor made no measurable difference (see :mod:`offchain.attribution.featurize`).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from offchain.attribution.base import SCORES_FILE
from offchain.attribution.defaults import (
    DEFAULT_LAMBDA_REG,
    DEFAULT_PROJ_DIM,
    DEFAULT_TRAK_OUTPUT,
    DEFAULT_TRAK_TIMESTEPS,
)
from offchain.attribution.featurize import (
    TRAKER_CPU_BLOCK_SIZE,
    BatchHook,
    FeatureStore,
    GradientFeaturizer,
    choose_projector_kind,
    featurize_into,
    projector_proj_type,
    select_projector,
)
from offchain.attribution.kernel import absolute_lambda, gram_matrix, kernel_scores
from offchain.attribution.model_output import (
    OUTPUT_NAMES,
    TARGET_STREAM,
    TRAIN_STREAM,
    make_model_output,
)
from offchain.diffusion.device import select_device
from offchain.diffusion.tensors import image_batch
from offchain.errors import ConfigError, DataError, StageError
from offchain.utils import read_json, write_json, write_npy

__all__ = [
    "TrakConfig",
    "compute_trak_ensemble",
    "compute_trak_scores",
    "ensemble_member_dir",
    "featurize_trak",
    "holder_contributions",
    "resolve_device",
]

logger = logging.getLogger(__name__)

META_FILE = "meta.json"
FEATURES_DIR = "features"
_PROJ_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
PIPELINE = "offchain-trak/2"
"""Version tag of the featurization + kernel pipeline (part of the feature stores' identity)."""


@dataclass(frozen=True)
class TrakConfig:
    """Settings of one TRAK attribution run (validated on construction: :class:`ConfigError`)."""

    proj_dim: int = DEFAULT_PROJ_DIM
    """Dimension of the random projection of the per-example gradients (≥ 1)."""
    num_timesteps: int = DEFAULT_TRAK_TIMESTEPS
    """K (the settings' ``trak_timesteps``): fixed timesteps t_k = k·⌊T/K⌋ the output function averages over (≥ 1)."""
    lambda_reg: float = DEFAULT_LAMBDA_REG
    """Ridge term λ > 0 added to ΦᵀΦ before inversion; relative to tr(ΦᵀΦ)/proj_dim unless
    ``lambda_relative`` is False."""
    lambda_relative: bool = True
    """Scale ``lambda_reg`` by the mean eigenvalue of ΦᵀΦ (True) or pass it as is (False)."""
    batch_size: int = 32
    """Examples per vmapped per-example-gradient batch (≥ 1); memory grows with it."""
    seed: int = 0
    """Seed (≥ 0) of the fixed noise (train and target streams) and of the projection matrix."""
    output: str = DEFAULT_TRAK_OUTPUT
    """Model output function: ``"dtrak"`` (‖ε_θ‖², D-TRAK) or ``"loss"`` (denoising loss)."""
    proj_dtype: str = "float32"
    """Precision of the CPU projection matmul: ``"float32"`` (default; features equal traker's)
    or ``"bfloat16"`` (opt-in: half the matrix memory and ~2× faster projection on CPUs with
    AVX512-BF16/AMX, much slower without; ~3e-3 relative error per feature, measured Spearman
    0.9994 against float32 scores). See :class:`~offchain.attribution.featurize.MatrixProjector`."""

    def __post_init__(self) -> None:
        if not isinstance(self.proj_dim, int) or self.proj_dim < 1:
            raise ConfigError(f"proj_dim must be an int ≥ 1, got {self.proj_dim!r}")
        if not isinstance(self.num_timesteps, int) or self.num_timesteps < 1:
            raise ConfigError(f"num_timesteps must be an int ≥ 1, got {self.num_timesteps!r}")
        if not (isinstance(self.lambda_reg, int | float) and math.isfinite(self.lambda_reg)):
            raise ConfigError(f"lambda_reg must be a finite number, got {self.lambda_reg!r}")
        if self.lambda_reg <= 0:
            raise ConfigError(
                f"lambda_reg must be > 0 (got {self.lambda_reg}): without it ΦᵀΦ is singular "
                "when proj_dim ≥ the number of training images"
            )
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be an int ≥ 1, got {self.batch_size!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an int ≥ 0, got {self.seed!r}")
        if self.output not in OUTPUT_NAMES:
            raise ConfigError(f"output must be one of {OUTPUT_NAMES}, got {self.output!r}")
        if self.proj_dtype not in _PROJ_DTYPES:
            raise ConfigError(
                f"proj_dtype must be one of {tuple(_PROJ_DTYPES)}, got {self.proj_dtype!r}"
            )


def _check_pair(train: Tensor, targets: Tensor) -> None:
    if train.shape[1:] != targets.shape[1:]:
        raise DataError(
            f"train_images {tuple(train.shape[1:])} and target_images "
            f"{tuple(targets.shape[1:])} differ in image shape"
        )


def _sha256_tensor(t: Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


def _sha256_ids(ids: Tensor | None) -> str | None:
    """SHA-256 of caption token ids int64 (n, L), shape included; None without captions."""
    if ids is None:
        return None
    h = hashlib.sha256(f"{tuple(ids.shape)}".encode())
    h.update(ids.numpy().tobytes())
    return h.hexdigest()


def _checked_caption_ids(ids: Tensor | np.ndarray | None, n: int, name: str) -> Tensor | None:
    """``ids`` as a contiguous int64 CPU tensor (n, L), L ≥ 1, entries ≥ 0; None stays None.

    Raises:
        DataError: another shape or row count, a non-integer dtype, or a negative id.
    """
    if ids is None:
        return None
    t = ids if isinstance(ids, Tensor) else torch.from_numpy(np.asarray(ids))
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise DataError(f"{name} must be integer token ids, got {t.dtype}")
    t = t.detach().to("cpu", torch.int64).contiguous()
    if t.ndim != 2 or t.shape[0] != n or t.shape[1] < 1:
        raise DataError(f"{name} must have shape ({n}, L ≥ 1), got {tuple(t.shape)}")
    if t.numel() and int(t.min()) < 0:
        raise DataError(f"{name} contains negative token ids")
    return t


def _model_fingerprint(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` → CPU; a setting string (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:<i>"``) →
    :func:`~offchain.diffusion.device.select_device`; a ``torch.device`` as given (CUDA checked).
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str):
        return select_device(device)
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    return resolved


class _LazyFeaturizer:
    """Builds the projector (the expensive part) on first use and times it."""

    def __init__(self, model, output, grad_dim, cfg, device, model_id, kind) -> None:
        self._args = (model, output, grad_dim, cfg, device, model_id, kind)
        self.featurizer: GradientFeaturizer | None = None
        self.seconds = 0.0

    def __call__(self) -> GradientFeaturizer:
        if self.featurizer is None:
            model, output, grad_dim, cfg, device, model_id, kind = self._args
            t0 = time.perf_counter()
            projector = select_projector(
                grad_dim,
                cfg.proj_dim,
                cfg.seed,
                device,
                model_id=model_id,
                kind=kind,
                dtype=_PROJ_DTYPES[cfg.proj_dtype],
            )
            self.featurizer = GradientFeaturizer(model, output, projector, model_id=model_id)
            self.seconds = time.perf_counter() - t0
        return self.featurizer

    def release(self) -> None:
        if self.featurizer is not None:
            self.featurizer.release()
            self.featurizer = None


def compute_trak_scores(
    unet: torch.nn.Module,
    scheduler: Any,
    train_images: Tensor | np.ndarray,
    target_images: Tensor | np.ndarray,
    save_dir: str | Path,
    cfg: TrakConfig | None = None,
    progress: bool = True,
    *,
    model_id: int = 0,
    device: str | torch.device | None = None,
    on_batch: BatchHook | None = None,
    train_caption_ids: Tensor | np.ndarray | None = None,
    target_caption_ids: Tensor | np.ndarray | None = None,
) -> np.ndarray:
    """TRAK scores τ of every target against every training image (one checkpoint).

    Args:
        unet: the round's ε-prediction network (not modified: a float32 copy on ``device`` is
            used): a ``diffusers.UNet2DModel``, or a conditional backend's module
            ``unet(x_t, t, caption_ids=None)``; every one of its parameters is differentiated.
        scheduler: its ``DDPMScheduler`` (only ``alphas_cumprod``, float (T,), is read).
        train_images: float32 (N, C, S, S) in [-1, 1], the training set in holder order.
        target_images: float32 (M, C, S, S) in [-1, 1], usually the round's generated samples.
        save_dir: folder for the artifacts (created); see the module docstring.
        cfg: :class:`TrakConfig`; defaults when None.
        progress: show progress bars (featurize train, featurize targets, kernel).
        model_id: checkpoint id ≥ 0 (traker's convention): shifts the projection seeds, so the
            members of an ensemble over checkpoints get independent projections.
        device: ``None``/``"cpu"`` (default), ``"auto"`` (CUDA when available) or a torch
            device. On CUDA the projector is traker's ``CudaProjector`` when ``fast_jl``
            imports (untested), else the same normal matrix as on CPU.
        on_batch: ``hook(name, rows_done, n_rows)`` after every stored feature batch (``name``
            ``"train"`` or ``"target"``); an exception from it aborts the run, leaving a
            resumable store (used by the tests to simulate a crash).
        train_caption_ids: int64 (N, L), the token ids of each training image's caption
            (a conditional model's ``encode_captions``), or None: the model is called without
            captions. Given, the output function differentiates ε_θ(x_t, t, c) with the
            example's own caption; the ids' hash is part of the request (and of the train
            feature store's identity), so other captions are another request.
        target_caption_ids: int64 (M, L), the targets' captions (their prompts), or None.
        float32 (M, N): ``scores[m, i]`` = τ(target m, training image i), in units of the
        linearised output function (see :mod:`offchain.attribution.kernel`).

    Raises:
        DataError: bad shapes, non-finite inputs, or caption ids that are not int64 (N, L) /
            (M, L).
        ConfigError: ``num_timesteps`` beyond the scheduler's T, bad ``model_id`` or device.
        StageError: ``save_dir`` holds scores or features of a different request (model,
            images, captions or config), or TRAK produced non-finite or degenerate features or
            scores.
    """
    t_start = time.perf_counter()
    cfg = cfg or TrakConfig()
    request = _Request.of(
        unet, scheduler, train_images, target_images, Path(save_dir), cfg, model_id, device,
        train_caption_ids, target_caption_ids,
    )
    scores_path, meta_path = request.save_dir / SCORES_FILE, request.save_dir / META_FILE
    if scores_path.exists():
        return _load_existing(scores_path, meta_path, request.meta)

    common, lazy, jobs = request.featurization()
    train_store, target_store = (job[0] for job in jobs)
    t_setup = time.perf_counter() - t_start
    timing, computed = _featurize_stores(lazy, jobs, cfg, progress, on_batch)
    scores, lambda_abs, timing["kernel"] = _scores_from_stores(
        train_store, target_store, cfg, progress, request.meta
    )
    timing["setup"] = t_setup
    timing["total"] = time.perf_counter() - t_start
    meta, dev = request.meta, request.device
    _save_results(meta_path, scores_path, meta, scores, lambda_abs, common, dev, computed, timing)
    _log_run(meta, cfg, timing, computed)
    return scores


def featurize_trak(
    unet: torch.nn.Module,
    scheduler: Any,
    train_images: Tensor | np.ndarray,
    target_images: Tensor | np.ndarray,
    save_dir: str | Path,
    cfg: TrakConfig | None = None,
    progress: bool = True,
    *,
    model_id: int = 0,
    device: str | torch.device | None = None,
    train_caption_ids: Tensor | np.ndarray | None = None,
    target_caption_ids: Tensor | np.ndarray | None = None,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Fill the feature stores :func:`compute_trak_scores` would fill with the same arguments,
    sharing the work among ``world_size`` processes, without the kernel or scores.

    Every process calls it with the same arguments and its ``rank``; ``barrier`` blocks until
    all have reached it (e.g. accelerate's ``wait_for_everyone``). The main process (rank 0)
    creates or reopens the stores (merging the rank done-masks of a killed run), then each
    process computes every ``world_size``-th missing batch of the fixed batch grid into the
    shared memmaps (:func:`~offchain.attribution.featurize.featurize_into` with ``shard``) and,
    after a barrier, the main process merges the done-masks. A later
    :func:`compute_trak_scores` with the same arguments in one process finds every row done and
    only computes the kernel and the scores. Rows are bit-identical to a one-process run's on
    the same device and thread count (each batch has the same composition and noise); so are
    the scores computed from them.

    Args:
        unet, scheduler, train_images, target_images, save_dir, cfg, progress, model_id,
            device, train_caption_ids, target_caption_ids: as in :func:`compute_trak_scores`
            (``device``: this process's device).
        rank: this process's index, 0 ≤ rank < world_size.
        world_size: the number of processes (≥ 1).
        barrier: the processes' barrier; None only when ``world_size`` is 1.

    Returns:
        Rows this process computed per store (``{"train": n, "target": m}``); empty when
        ``save_dir`` already holds this request's scores.

    Raises:
        ConfigError: a bad rank, world size or missing barrier; as :func:`compute_trak_scores`
            otherwise (DataError, StageError).
    """
    if not 0 <= rank < world_size or (world_size > 1 and barrier is None):
        raise ConfigError(
            f"featurize_trak needs 0 ≤ rank < world_size and a barrier for several processes, "
            f"got rank {rank}, world_size {world_size}"
        )
    wait = barrier or (lambda: None)
    cfg = cfg or TrakConfig()
    request = _Request.of(
        unet, scheduler, train_images, target_images, Path(save_dir), cfg, model_id, device,
        train_caption_ids, target_caption_ids,
    )
    scores_path = request.save_dir / SCORES_FILE
    if scores_path.exists():
        _load_existing(scores_path, request.save_dir / META_FILE, request.meta)
        return {}
    if rank == 0:
        _, lazy, jobs = request.featurization(writer=0)
    wait()  # the stores exist and the masks of a killed run are merged
    if rank != 0:
        _, lazy, jobs = request.featurization(writer=rank)
    _, computed = _featurize_stores(
        lazy, jobs, cfg, progress and rank == 0, None, shard=(rank, world_size)
    )
    wait()  # every shard is written (a process that failed ends the launch instead)
    if rank == 0:
        for job in jobs:
            job[0].merge()
    wait()
    return computed


@dataclass
class _Request:
    """One checkpoint's TRAK request, checked: inputs on the CPU, the frozen float32 model copy
    on its device, its identity (``meta``) and ``save_dir``."""

    model: torch.nn.Module
    alphas_cumprod: Tensor
    train: Tensor
    targets: Tensor
    train_ids: Tensor | None
    target_ids: Tensor | None
    model_id: int
    device: torch.device
    cfg: TrakConfig
    meta: dict[str, Any]
    save_dir: Path

    @classmethod
    def of(cls, unet, scheduler, train_images, target_images, save_dir: Path, cfg: TrakConfig,
           model_id, device, train_caption_ids, target_caption_ids) -> _Request:
        """Check the arguments of :func:`compute_trak_scores` (its errors)."""
        train, targets, model_id, dev = _checked_inputs(
            train_images, target_images, model_id, device
        )
        train_ids = _checked_caption_ids(train_caption_ids, train.shape[0], "train_caption_ids")
        target_ids = _checked_caption_ids(
            target_caption_ids, targets.shape[0], "target_caption_ids"
        )
        alphas_cumprod = _checked_alphas_cumprod(scheduler, cfg)
        model = copy.deepcopy(unet).to("cpu").float().eval()
        meta = _request_meta(cfg, model, train, targets, model_id, train_ids, target_ids)
        return cls(model, alphas_cumprod, train, targets, train_ids, target_ids, model_id, dev,
                   cfg, meta, save_dir)

    def featurization(
        self, writer: int | None = None
    ) -> tuple[dict[str, Any], _LazyFeaturizer, tuple[tuple[FeatureStore, Tensor, int, Any], ...]]:
        """``(the stores' common identity, the lazy featurizer, the (store, images, noise
        stream, caption ids) jobs)``: the model moved to the device and the stores opened (as
        ``writer``, see :class:`~offchain.attribution.featurize.FeatureStore`)."""
        model, grad_dim, kind = _frozen_on_device(self.model, self.device)
        cfg = self.cfg
        common = _store_identity(self.meta, cfg, self.model_id, kind, grad_dim)
        train_store, target_store = _open_feature_stores(
            self.save_dir / FEATURES_DIR, self.meta, common, cfg, writer
        )
        output = make_model_output(cfg.output, self.alphas_cumprod, cfg.num_timesteps)
        lazy = _LazyFeaturizer(model, output, grad_dim, cfg, self.device, self.model_id, kind)
        jobs = (
            (train_store, self.train, TRAIN_STREAM, self.train_ids),
            (target_store, self.targets, TARGET_STREAM, self.target_ids),
        )
        return common, lazy, jobs


def _checked_inputs(
    train_images: Tensor | np.ndarray,
    target_images: Tensor | np.ndarray,
    model_id: int,
    device: str | torch.device | None,
) -> tuple[Tensor, Tensor, int, torch.device]:
    """``(train (N, C, S, S), targets (M, C, S, S), model_id, device)``, validated; float32 CPU."""
    train = image_batch(train_images, "train_images")
    targets = image_batch(target_images, "target_images")
    _check_pair(train, targets)
    if not isinstance(model_id, int | np.integer) or model_id < 0:
        raise ConfigError(f"model_id must be an int ≥ 0, got {model_id!r}")
    return train, targets, int(model_id), resolve_device(device)


def _checked_alphas_cumprod(scheduler: Any, cfg: TrakConfig) -> Tensor:
    """The scheduler's ᾱ as float32 (T,), checked to cover ``cfg.num_timesteps``."""
    alphas_cumprod = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float32)
    if cfg.num_timesteps > alphas_cumprod.numel():
        raise ConfigError(
            f"num_timesteps {cfg.num_timesteps} exceeds the scheduler's "
            f"{alphas_cumprod.numel()} training timesteps"
        )
    return alphas_cumprod


def _request_meta(
    cfg: TrakConfig,
    model: torch.nn.Module,
    train: Tensor,
    targets: Tensor,
    model_id: int,
    train_ids: Tensor | None = None,
    target_ids: Tensor | None = None,
) -> dict[str, Any]:
    """The identity of the request (the :data:`_IDENTITY_KEYS` of ``meta.json``) as a dict;
    the caption hashes are None without captions (as in a ``meta.json`` written before them)."""
    return {
        "config": asdict(cfg),
        "n_train": int(train.shape[0]),
        "n_targets": int(targets.shape[0]),
        "sample_shape": [int(s) for s in train.shape[1:]],
        "model_sha256": _model_fingerprint(model),
        "train_sha256": _sha256_tensor(train),
        "targets_sha256": _sha256_tensor(targets),
        "model_id": model_id,
        "train_captions_sha256": _sha256_ids(train_ids),
        "targets_captions_sha256": _sha256_ids(target_ids),
    }


def _frozen_on_device(
    model: torch.nn.Module, dev: torch.device
) -> tuple[torch.nn.Module, int, str]:
    """``(model on dev without requires_grad, its parameter count p, projector kind)``."""
    model = model.to(dev)
    for p in model.parameters():
        p.requires_grad_(False)
    grad_dim = sum(int(p.numel()) for p in model.parameters())
    return model, grad_dim, choose_projector_kind(dev, grad_dim)


def _store_identity(
    meta: dict[str, Any], cfg: TrakConfig, model_id: int, kind: str, grad_dim: int
) -> dict[str, Any]:
    """The identity both feature stores share (model, output function, K, seed, projector)."""
    return {
        "pipeline": PIPELINE,
        "model_sha256": meta["model_sha256"],
        "sample_shape": meta["sample_shape"],
        "output": cfg.output,
        "num_timesteps": cfg.num_timesteps,
        "seed": cfg.seed,
        "model_id": model_id,
        "projector": kind,
        "proj_type": projector_proj_type(kind),
        "proj_dtype": cfg.proj_dtype if kind == "matrix" else "float32",
        "grad_dim": grad_dim,
    }


def _open_feature_stores(
    folder: Path,
    meta: dict[str, Any],
    common: dict[str, Any],
    cfg: TrakConfig,
    writer: int | None = None,
) -> tuple[FeatureStore, FeatureStore]:
    """``(train store (N, proj_dim), target store (M, proj_dim))``, reopened when present.

    A store of captioned examples also records their ids' hash (``captions_sha256``); a store
    without captions has no such key, so its identity is the one written before captions."""

    def identity(data_key: str, captions_key: str, stream: int) -> dict[str, Any]:
        ident = {**common, "data_sha256": meta[data_key], "noise_stream": stream}
        if meta[captions_key] is not None:
            ident["captions_sha256"] = meta[captions_key]
        return ident

    train_store = FeatureStore(
        folder,
        "train",
        meta["n_train"],
        cfg.proj_dim,
        identity("train_sha256", "train_captions_sha256", TRAIN_STREAM),
        writer,
    )
    target_store = FeatureStore(
        folder,
        "target",
        meta["n_targets"],
        cfg.proj_dim,
        identity("targets_sha256", "targets_captions_sha256", TARGET_STREAM),
        writer,
    )
    return train_store, target_store


def _featurize_stores(
    lazy: _LazyFeaturizer,
    jobs: Sequence[tuple[FeatureStore, Tensor, int, Tensor | None]],
    cfg: TrakConfig,
    progress: bool,
    on_batch: BatchHook | None,
    shard: tuple[int, int] = (0, 1),
) -> tuple[dict[str, float], dict[str, int]]:
    """``(timing_s, rows computed per store)`` after filling each store's missing rows (this
    process's ``shard`` of them)."""
    timing: dict[str, float] = {}
    computed: dict[str, int] = {}
    try:
        for store, images, stream, caption_ids in jobs:
            t0 = time.perf_counter()
            projector_before = lazy.seconds
            computed[store.name] = featurize_into(
                store,
                lazy,
                images,
                batch_size=cfg.batch_size,
                num_timesteps=cfg.num_timesteps,
                seed=cfg.seed,
                stream=stream,
                progress=progress,
                on_batch=on_batch,
                caption_ids=caption_ids,
                shard=shard,
            )
            spent_on_projector = lazy.seconds - projector_before
            timing[f"featurize_{store.name}"] = time.perf_counter() - t0 - spent_on_projector
    finally:
        lazy.release()
    timing["projector"] = lazy.seconds
    return timing, computed


def _scores_from_stores(
    train_store: FeatureStore,
    target_store: FeatureStore,
    cfg: TrakConfig,
    progress: bool,
    meta: dict[str, Any],
) -> tuple[np.ndarray, float, float]:
    """``(τ float32 (M, N), λ_abs, seconds)`` from the features; StageError if unusable."""
    t0 = time.perf_counter()
    phi, phi_target = train_store.array(), target_store.array()
    gram = gram_matrix(phi)
    lambda_abs = absolute_lambda(gram, float(cfg.lambda_reg), cfg.lambda_relative)
    scores64 = kernel_scores(phi, phi_target, lambda_abs, gram=gram, progress=progress)
    scores = np.ascontiguousarray(scores64, dtype=np.float32)
    seconds = time.perf_counter() - t0
    if scores.shape != (meta["n_targets"], meta["n_train"]) or not np.isfinite(scores).all():
        raise StageError(
            f"TRAK produced unusable scores (shape {scores.shape}, "
            f"finite={bool(np.isfinite(scores).all())}); try a larger lambda_reg"
        )
    return scores, lambda_abs, seconds


def _save_results(
    meta_path: Path,
    scores_path: Path,
    meta: dict[str, Any],
    scores: np.ndarray,
    lambda_abs: float,
    common: dict[str, Any],
    dev: torch.device,
    computed: dict[str, int],
    timing: dict[str, float],
) -> None:
    """None; completes ``meta`` and writes ``meta.json``, then ``scores.npy`` (atomically, last)."""
    kind = common["projector"]
    meta.update(
        {
            "lambda_abs": lambda_abs,
            "projector": {
                "kind": kind,
                "proj_type": projector_proj_type(kind),
                "block_size": TRAKER_CPU_BLOCK_SIZE if kind == "matrix" else None,
                "dtype": common["proj_dtype"],
                "grad_dim": common["grad_dim"],
                "device": str(dev),
            },
            "score_units": "linearised output function (no renormalisation)",
            "rows_computed": computed,
            "timing_s": {k: round(v, 3) for k, v in timing.items()},
        }
    )
    write_json(meta_path, meta)
    write_npy(scores_path, scores)


def _log_run(
    meta: dict[str, Any], cfg: TrakConfig, timing: dict[str, float], computed: dict[str, int]
) -> None:
    """None; logs the run's sizes and timings at INFO."""
    logger.info(
        "TRAK: N=%d M=%d proj_dim=%d K=%d: projector %.1fs, featurize %.1fs + %.1fs, "
        "kernel %.1fs (computed %s rows)",
        meta["n_train"],
        meta["n_targets"],
        cfg.proj_dim,
        cfg.num_timesteps,
        timing["projector"],
        timing["featurize_train"],
        timing["featurize_target"],
        timing["kernel"],
        computed,
    )


def compute_trak_ensemble(
    models: Sequence[tuple[torch.nn.Module, Any]],
    train_images: Tensor | np.ndarray,
    target_images: Tensor | np.ndarray,
    save_dir: str | Path,
    cfg: TrakConfig | None = None,
    seeds: Sequence[int] | None = None,
    progress: bool = True,
    *,
    device: str | torch.device | None = None,
    on_batch: BatchHook | None = None,
    train_caption_ids: Tensor | np.ndarray | None = None,
    target_caption_ids: Tensor | np.ndarray | None = None,
) -> np.ndarray:
    """TRAK ensemble: the mean of the per-member scores over checkpoints × seeds.

    Park et al. (ICML 2023, §3, "ensembling"): average the estimators of independently
    trained models (or checkpoints) and independent projections; with Q = I the estimator is
    the plain mean of the members' τ. Member (j, s) is :func:`compute_trak_scores` of
    ``models[j]`` with ``cfg.seed = s`` (noise and projection seed) and ``model_id = j``, in
    ``save_dir/member_m{j}_s{s}/``; each member is resumable on its own and finished members are
    reused. Because our τ is not renormalised per run, the members are on one scale.

    Args:
        models: ``[(unet, scheduler), ...]``, ≥ 1 checkpoints of the same architecture.
        train_images, target_images: as in :func:`compute_trak_scores`.
        save_dir: folder (created): members' subfolders, ``meta.json`` and ``scores.npy``.
        cfg: shared settings (its ``seed`` is replaced by each member's).
        seeds: distinct seeds ≥ 0 (default ``[cfg.seed]``).
        progress, device, on_batch, train_caption_ids, target_caption_ids: passed to each
            member (the captions' hashes are part of the ensemble's identity too).

    Returns:
        float32 (M, N), the mean of the members' scores (computed in float64).

    Raises:
        ConfigError: no models, no seeds, repeated or negative seeds.
        DataError, StageError: as in :func:`compute_trak_scores`; StageError also when
            ``save_dir/scores.npy`` is of a different ensemble.
    """
    cfg = cfg or TrakConfig()
    models = list(models)
    if not models:
        raise ConfigError("an ensemble needs at least one (unet, scheduler) pair")
    seeds = [cfg.seed] if seeds is None else list(seeds)
    if not seeds:
        raise ConfigError("an ensemble needs at least one seed")
    if any(not isinstance(s, int | np.integer) or s < 0 for s in seeds):
        raise ConfigError(f"ensemble seeds must be ints ≥ 0, got {seeds}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"ensemble seeds must be distinct, got {seeds}")
    train = image_batch(train_images, "train_images")
    targets = image_batch(target_images, "target_images")
    _check_pair(train, targets)
    train_ids = _checked_caption_ids(train_caption_ids, train.shape[0], "train_caption_ids")
    target_ids = _checked_caption_ids(target_caption_ids, targets.shape[0], "target_caption_ids")
    save_dir = Path(save_dir)
    meta: dict[str, Any] = {
        "ensemble": True,
        "config": asdict(cfg),
        "seeds": [int(s) for s in seeds],
        "n_train": int(train.shape[0]),
        "n_targets": int(targets.shape[0]),
        "sample_shape": [int(s) for s in train.shape[1:]],
        "model_sha256": [_model_fingerprint(unet) for unet, _ in models],
        "train_sha256": _sha256_tensor(train),
        "targets_sha256": _sha256_tensor(targets),
        "train_captions_sha256": _sha256_ids(train_ids),
        "targets_captions_sha256": _sha256_ids(target_ids),
    }
    scores_path, meta_path = save_dir / SCORES_FILE, save_dir / META_FILE
    if scores_path.exists():
        return _load_existing(scores_path, meta_path, meta, _ENSEMBLE_KEYS)

    total = np.zeros((meta["n_targets"], meta["n_train"]), dtype=np.float64)
    members = []
    for j, (unet, scheduler) in enumerate(models):
        for s in seeds:
            name = ensemble_member_dir(j, int(s))
            tau = compute_trak_scores(
                unet,
                scheduler,
                train,
                targets,
                save_dir / name,
                replace(cfg, seed=int(s)),
                progress,
                model_id=j,
                device=device,
                on_batch=on_batch,
                train_caption_ids=train_ids,
                target_caption_ids=target_ids,
            )
            total += tau
            members.append({"dir": name, "model_index": j, "seed": int(s)})
    scores = (total / len(members)).astype(np.float32)
    meta["members"] = members
    write_json(meta_path, meta)
    write_npy(scores_path, scores)
    return scores


def ensemble_member_dir(model_index: int, seed: int) -> str:
    """The subfolder of :func:`compute_trak_ensemble`'s member (checkpoint j, seed s)."""
    return f"member_m{model_index}_s{seed}"


_IDENTITY_KEYS = (
    "config",
    "n_train",
    "n_targets",
    "sample_shape",
    "model_sha256",
    "train_sha256",
    "targets_sha256",
    "model_id",
    "train_captions_sha256",
    "targets_captions_sha256",
)
_ENSEMBLE_KEYS = (
    "ensemble",
    "config",
    "seeds",
    "n_train",
    "n_targets",
    "sample_shape",
    "model_sha256",
    "train_sha256",
    "targets_sha256",
    "train_captions_sha256",
    "targets_captions_sha256",
)


def _load_existing(
    scores_path: Path,
    meta_path: Path,
    meta: dict[str, Any],
    keys: tuple[str, ...] = _IDENTITY_KEYS,
) -> np.ndarray:
    """Saved scores if they are of this request; :class:`StageError` otherwise."""
    if not meta_path.exists():
        raise StageError(f"{scores_path} exists without {meta_path.name}; remove it to recompute")
    saved = read_json(meta_path)
    differs = [k for k in keys if saved.get(k) != meta[k]]
    if differs:
        raise StageError(
            f"{scores_path} holds scores of a different request (differs in {differs}); "
            "remove the folder to recompute"
        )
    scores = np.load(scores_path, allow_pickle=False)
    if scores.shape != (meta["n_targets"], meta["n_train"]) or scores.dtype != np.float32:
        raise StageError(f"{scores_path} has shape {scores.shape} / dtype {scores.dtype}")
    logger.info("TRAK scores already in %s; skipping", scores_path)
    return scores


def holder_contributions(
    scores: np.ndarray, holder_index: np.ndarray, n_holders: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each holder's contribution: TRAK scores summed over its images, averaged over targets.

    Args:
        scores: τ, finite (M, N) (any float dtype), from :func:`compute_trak_scores`.
        holder_index: int (N,), the holder in [0, ``n_holders``) of each training image.
        n_holders: H ≥ 1.

    Returns:
        ``(raw, normalized)``, both float64 (H,):

        - ``raw[h] = (1/M) Σ_m Σ_{i: holder(i) = h} τ[m, i]`` (unitless, any sign; 0 for a
          holder without images).
        - ``normalized = max(raw, 0) / Σ max(raw, 0)``: non-negative, sums to 1. Holders whose
          images on balance *oppose* the targets get 0. If no holder has a positive raw score
          (a degenerate round), the share is split equally among the holders that have at
          least one image — they all trained the model and no evidence favours any of them —
          and holders without images get 0.

    Raises:
        DataError: shapes disagree, non-finite scores, or an index outside [0, H).
        ConfigError: ``n_holders`` < 1.
    """
    if not isinstance(n_holders, int | np.integer) or n_holders < 1:
        raise ConfigError(f"n_holders must be an int ≥ 1, got {n_holders!r}")
    tau = np.asarray(scores, dtype=np.float64)
    idx = np.asarray(holder_index)
    if tau.ndim != 2 or tau.shape[0] < 1:
        raise DataError(f"scores must have shape (M ≥ 1, N), got {tau.shape}")
    if idx.ndim != 1 or idx.shape[0] != tau.shape[1]:
        raise DataError(f"holder_index must have shape ({tau.shape[1]},), got {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise DataError(f"holder_index must be integers, got {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= n_holders):
        raise DataError(
            f"holder_index must lie in [0, {n_holders}), got [{idx.min()}, {idx.max()}]"
        )
    if not np.isfinite(tau).all():
        raise DataError("scores contain non-finite values")

    raw = np.bincount(idx, weights=tau.mean(axis=0), minlength=n_holders).astype(np.float64)
    positive = np.clip(raw, 0.0, None)
    total = positive.sum()
    if total > 0:
        return raw, positive / total
    has_images = np.bincount(idx, minlength=n_holders) > 0
    if not has_images.any():
        raise DataError("no training images: contributions are undefined")
    normalized = has_images / has_images.sum()
    return raw, normalized.astype(np.float64)
