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
traker (MadryLab, ``traker==0.3.2``) does the work; this module owns the choices around it:

- Projector: traker on CPU builds a :class:`~trak.projectors.BasicProjector` with a block size
  of 100, so any ``proj_dim > 100`` becomes multi-block and regenerates every block for every
  batch (6.5× slower, docs/toolchain.md). We pass our own single-block ``BasicProjector``
  (normal entries, ``block_size = proj_dim``). Its matrix takes ``4 · p · proj_dim`` bytes
  (651k-parameter UNet, proj_dim 512: 1.3 GB; the whole run peaks at ~3.1 GB RSS).
- ``finalize_features()`` frees that matrix and the single-block projector never regenerates it
  before ``score()``; we regenerate it from its saved generator state (the same matrix, bit for
  bit) between the two.
- λ > 0 is required: with ``proj_dim ≥ N`` the Gram matrix ΦᵀΦ is singular. traker adds an
  absolute λ I to ΦᵀΦ, whose scale depends on the model size, the output function and the
  training state (here its median eigenvalue is ~1e-5 while an absolute λ = 1e-2 swamps it and
  halves self-attribution accuracy). By default ``lambda_reg`` is therefore *relative*: the λ
  handed to traker is ``lambda_reg · tr(ΦᵀΦ) / proj_dim`` (the mean eigenvalue), computed after
  featurizing. Measured on digits (N = 512, proj_dim 512, D-TRAK, K = 4): a training image used
  as a target ranks its own entry in the top 5 for 100 % of 32 targets at relative 1e-3…1e-2,
  88 % at 1e-1, 53 % at 1; absolute 1e-2 gives ~50 %. ``lambda_relative=False`` passes
  ``lambda_reg`` through unchanged (traker's convention).
- Scale: traker divides (ΦᵀΦ + λI)⁻¹ by its mean absolute entry, so τ is defined up to a positive
  factor per run: compare scores within one run (one round), not across runs.
- Noise: training examples use noise stream 0, targets stream 1 (both from ``cfg.seed``), so a
  target that happens to equal a training image does not reuse its noise.

Measured (2-core CPU, idle; 651k-parameter UNet, N = 512, M = 32, defaults): 11 s with two
torch threads (setup 1.5 s, featurize + finalize 8.9 s, score 0.5 s), 16 s with one. On a
*shared* machine two intra-op threads can be ~100× slower than one: prefer
``torch.set_num_threads(1)`` there.

Artifacts in ``save_dir``: ``meta.json`` (what the scores are of), ``scores.npy`` float32
(M, N) written atomically last, and traker's own store under ``traker/``. When ``scores.npy``
exists and ``meta.json`` matches the request the function returns the saved scores without
recomputing; a partial ``traker/`` store from an interrupted run is discarded and redone (it
takes well under a minute at the project's sizes).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm
from trak import TRAKer
from trak.projectors import BasicProjector, ProjectionType

from offchain.attribution.model_output import (
    OUTPUT_NAMES,
    TARGET_STREAM,
    TRAIN_STREAM,
    make_model_output,
    make_noise,
)
from offchain.errors import ConfigError, DataError, StageError
from offchain.utils import read_json, write_json, write_npy

__all__ = ["TrakConfig", "compute_trak_scores", "holder_contributions"]

logger = logging.getLogger(__name__)

SCORES_FILE = "scores.npy"
META_FILE = "meta.json"
TRAKER_DIR = "traker"
_EXPERIMENT = "targets"
_MODEL_ID = 0


@dataclass(frozen=True)
class TrakConfig:
    """Settings of one TRAK attribution run (validated on construction: :class:`ConfigError`)."""

    proj_dim: int = 512
    """Dimension of the random projection of the per-example gradients (≥ 1)."""
    num_timesteps: int = 4
    """K: fixed timesteps t_k = k·⌊T/K⌋ the output function averages over (≥ 1)."""
    lambda_reg: float = 1e-2
    """Ridge term λ > 0 added to ΦᵀΦ before inversion; relative to tr(ΦᵀΦ)/proj_dim unless
    ``lambda_relative`` is False."""
    lambda_relative: bool = True
    """Scale ``lambda_reg`` by the mean eigenvalue of ΦᵀΦ (True) or pass it as is (False)."""
    batch_size: int = 32
    """Examples per vmapped per-example-gradient batch (≥ 1); memory grows with it."""
    seed: int = 0
    """Seed (≥ 0) of the fixed noise (train and target streams) and of the projection matrix."""
    output: str = "dtrak"
    """Model output function: ``"dtrak"`` (‖ε_θ‖², D-TRAK) or ``"loss"`` (denoising loss)."""

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


def _as_images(x: Any, name: str) -> Tensor:
    """``x`` as a contiguous float32 CPU tensor (B, C, S, S), finite; else :class:`DataError`."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    t = t.detach().to("cpu", torch.float32).contiguous()
    if t.ndim != 4 or t.shape[0] < 1:
        raise DataError(f"{name} must have shape (B ≥ 1, C, S, S), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise DataError(f"{name} contains non-finite values")
    return t


def _sha256_tensor(t: Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


def _model_fingerprint(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _absolute_lambda(traker: TRAKer, cfg: TrakConfig) -> float:
    """The λ traker adds to ΦᵀΦ: ``cfg.lambda_reg`` (× mean eigenvalue of ΦᵀΦ when relative)."""
    if not cfg.lambda_relative:
        return float(cfg.lambda_reg)
    grads = np.asarray(traker.saver.current_store["grads"], dtype=np.float64)  # Φ, (N, proj_dim)
    mean_eig = float(np.einsum("ij,ij->", grads, grads)) / grads.shape[1]  # tr(ΦᵀΦ) / proj_dim
    if not (math.isfinite(mean_eig) and mean_eig > 0):
        raise StageError(
            f"TRAK features are degenerate (tr(ΦᵀΦ)/proj_dim = {mean_eig}): the output "
            "function's gradients vanish or overflow for this model"
        )
    return float(cfg.lambda_reg) * mean_eig


def _restore_projection(projector: BasicProjector) -> None:
    """Regenerate a single-block projector's matrix after ``finalize_features`` freed it.

    ``generate_sketch_matrix`` reseeds from the stored generator state, so the matrix is the
    one the training features were projected with.
    """
    if not getattr(projector, "proj_matrix_available", True):
        projector.generate_sketch_matrix(projector.generator_states[0])


def compute_trak_scores(
    unet: torch.nn.Module,
    scheduler: Any,
    train_images: Tensor | np.ndarray,
    target_images: Tensor | np.ndarray,
    save_dir: str | Path,
    cfg: TrakConfig | None = None,
    progress: bool = True,
) -> np.ndarray:
    """TRAK scores τ of every target against every training image.

    Args:
        unet: the round's ε-prediction ``diffusers.UNet2DModel`` (not modified: a CPU float32
            copy is used).
        scheduler: its ``DDPMScheduler`` (only ``alphas_cumprod``, float (T,), is read).
        train_images: float32 (N, C, S, S) in [-1, 1], the training set in holder order.
        target_images: float32 (M, C, S, S) in [-1, 1], usually the round's generated samples.
        save_dir: folder for the artifacts (created); see the module docstring.
        cfg: :class:`TrakConfig`; defaults when None.
        progress: show progress bars.

    Returns:
        float32 (M, N): ``scores[m, i]`` = τ(target m, training image i), unitless.

    Raises:
        DataError: bad shapes or non-finite inputs.
        StageError: ``save_dir`` holds scores of a different request (model, images or config),
            or TRAK produced non-finite scores.
    """
    cfg = cfg or TrakConfig()
    train = _as_images(train_images, "train_images")
    targets = _as_images(target_images, "target_images")
    if train.shape[1:] != targets.shape[1:]:
        raise DataError(
            f"train_images {tuple(train.shape[1:])} and target_images "
            f"{tuple(targets.shape[1:])} differ in image shape"
        )
    n_train, n_targets = int(train.shape[0]), int(targets.shape[0])
    sample_shape = tuple(int(s) for s in train.shape[1:])

    model = copy.deepcopy(unet).to("cpu").float().eval()
    alphas_cumprod = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float32)
    if cfg.num_timesteps > alphas_cumprod.numel():
        raise ConfigError(
            f"num_timesteps {cfg.num_timesteps} exceeds the scheduler's "
            f"{alphas_cumprod.numel()} training timesteps"
        )

    save_dir = Path(save_dir)
    scores_path, meta_path = save_dir / SCORES_FILE, save_dir / META_FILE
    meta = {
        "config": asdict(cfg),
        "n_train": n_train,
        "n_targets": n_targets,
        "sample_shape": list(sample_shape),
        "model_sha256": _model_fingerprint(model),
        "train_sha256": _sha256_tensor(train),
        "targets_sha256": _sha256_tensor(targets),
        "traker_version": "0.3.2",
    }
    if scores_path.exists():
        return _load_existing(scores_path, meta_path, meta)

    work = save_dir / TRAKER_DIR
    if work.exists():
        logger.info("discarding partial traker store %s", work)
        shutil.rmtree(work)
    work.mkdir(parents=True)

    task = make_model_output(cfg.output, alphas_cumprod, cfg.num_timesteps)
    grad_dim = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    projector = BasicProjector(
        grad_dim=grad_dim,
        proj_dim=cfg.proj_dim,
        seed=cfg.seed,
        proj_type=ProjectionType.normal,
        device="cpu",
        block_size=cfg.proj_dim,  # single block: the matrix is generated once, not per batch
        dtype=torch.float32,
    )
    traker = TRAKer(
        model=model,
        task=task,
        train_set_size=n_train,
        save_dir=str(work),
        load_from_save_dir=True,  # fresh folder; traker needs this to create experiments.json
        device="cpu",
        projector=projector,
        proj_dim=cfg.proj_dim,
        use_half_precision=False,
        projector_seed=cfg.seed,
        lambda_reg=float(cfg.lambda_reg),
        logging_level=logging.WARNING,
    )
    traker.load_checkpoint(model.state_dict(), model_id=_MODEL_ID)
    t_setup = time.perf_counter() - t0
    with warnings.catch_warnings():
        # UNet attention has no vmap batching rule on CPU; torch falls back to a loop and warns
        # once per call. The result is correct, only slower.
        warnings.filterwarnings("ignore", message="There is a performance drop because")
        scores, t_featurize, t_score, lambda_abs = _featurize_and_score(
            traker, projector, train, targets, sample_shape, cfg, progress
        )
    if scores.shape != (n_targets, n_train) or not np.isfinite(scores).all():
        raise StageError(
            f"TRAK produced unusable scores (shape {scores.shape}, "
            f"finite={bool(np.isfinite(scores).all())}); try a larger lambda_reg"
        )
    meta["lambda_abs"] = lambda_abs
    meta["timing_s"] = {
        "setup": round(t_setup, 3),
        "featurize": round(t_featurize, 3),
        "score": round(t_score, 3),
    }
    write_json(meta_path, meta)
    write_npy(scores_path, scores)
    logger.info(
        "TRAK: N=%d M=%d proj_dim=%d K=%d: setup %.1fs, featurize %.1fs, score %.1fs",
        n_train,
        n_targets,
        cfg.proj_dim,
        cfg.num_timesteps,
        t_setup,
        t_featurize,
        t_score,
    )
    return scores


def _featurize_and_score(
    traker: TRAKer,
    projector: BasicProjector,
    train: Tensor,
    targets: Tensor,
    sample_shape: tuple[int, ...],
    cfg: TrakConfig,
    progress: bool,
) -> tuple[np.ndarray, float, float, float]:
    """Featurize, finalize, score, finalize scores: (scores (M, N), t_feat, t_score, λ_abs)."""
    n_train, n_targets = int(train.shape[0]), int(targets.shape[0])
    t0 = time.perf_counter()
    for start in tqdm(
        range(0, n_train, cfg.batch_size), desc="TRAK featurize", disable=not progress
    ):
        idx = np.arange(start, min(start + cfg.batch_size, n_train))
        noise = make_noise(idx, cfg.num_timesteps, sample_shape, cfg.seed, TRAIN_STREAM)
        traker.featurize(batch=(train[idx], noise), num_samples=len(idx))
    lambda_abs = _absolute_lambda(traker, cfg)
    traker.score_computer.lambda_reg = lambda_abs
    traker.finalize_features()
    _restore_projection(projector)
    t_featurize = time.perf_counter() - t0

    t0 = time.perf_counter()
    traker.start_scoring_checkpoint(
        exp_name=_EXPERIMENT,
        checkpoint=traker.model.state_dict(),
        model_id=_MODEL_ID,
        num_targets=n_targets,
    )
    for start in tqdm(range(0, n_targets, cfg.batch_size), desc="TRAK score", disable=not progress):
        idx = np.arange(start, min(start + cfg.batch_size, n_targets))
        noise = make_noise(idx, cfg.num_timesteps, sample_shape, cfg.seed, TARGET_STREAM)
        traker.score(batch=(targets[idx], noise), num_samples=len(idx))
    raw = traker.finalize_scores(exp_name=_EXPERIMENT)  # (N, M)
    scores = np.ascontiguousarray(np.asarray(raw, dtype=np.float32).T)  # (M, N)
    t_score = time.perf_counter() - t0
    projector.free_memory()
    return scores, t_featurize, t_score, lambda_abs


_IDENTITY_KEYS = (
    "config",
    "n_train",
    "n_targets",
    "sample_shape",
    "model_sha256",
    "train_sha256",
    "targets_sha256",
)


def _load_existing(scores_path: Path, meta_path: Path, meta: dict[str, Any]) -> np.ndarray:
    """Saved scores if they are of this request; :class:`StageError` otherwise."""
    if not meta_path.exists():
        raise StageError(f"{scores_path} exists without {meta_path.name}; remove it to recompute")
    saved = read_json(meta_path)
    differs = [k for k in _IDENTITY_KEYS if saved.get(k) != meta[k]]
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
