"""Linear datamodeling score (LDS): does an attribution method predict retraining outcomes?

Protocol (Park et al., "TRAK", ICML 2023, §2; as used for diffusion by Zheng et al., D-TRAK,
ICLR 2024, §4): train a model on the full training set S and generate the attribution targets
z_1..z_M from it; score them with each method, τ (M, N). Then draw S_1..S_J random subsets of
S (a fraction α = 50 % each), retrain a model θ_j from scratch on each, and measure every
target's output under each retrained model. For target m the method predicts

    g_m(S_j) = Σ_{i ∈ S_j} τ[m, i]

and the LDS of target m is the Spearman rank correlation over j of g_m(S_j) with the measured
output. The reported LDS is the mean over targets, with a 95 % t-interval over targets.

Choices, each stated in the report:

- **Measured output**: the negative denoising loss of the target under θ_j,
  −(1/E) Σ_e ‖ε_e − ε_θj(x_{t_e}, t_e)‖² (pixel mean), over E fixed evenly spaced timesteps with
  fixed seeded noise, identical for every model. Positive LDS therefore means "subsets the
  method says support the target give models that denoise it better". D-TRAK's output function
  is ‖ε_θ‖², not the loss; its sign convention is empirical, so a negative LDS for it is
  reported as it is, not flipped.
- **Two granularities**: example subsets (random α·N images) and holder subsets (random α·H
  holders, all their images): the second is what payments depend on.
- **Retraining**: every θ_j starts from the same seeded initialisation with the same
  hyperparameters (:class:`offchain.diffusion.DiffusionConfig`) as the full model, so the
  subset is the only thing that changes. One model per subset (no averaging over seeds), as in
  D-TRAK's reference numbers.
- **Baselines**: ``random`` (i.i.d. normal scores: LDS ≈ 0 by construction), ``pixel``
  (τ[m, i] = −mean-squared pixel distance between target m and image i, minus its mean over
  i: "images more similar than average help"; centred so that the sum over a subset does not
  just count its images) and ``count`` (τ = 1: a subset is worth its number of images, the
  pro-rata rule; every example subset has the same size, so it is defined for holder subsets
  only and reported as n/a for example subsets).

Artifacts under ``out_dir`` (each stage skipped when its output exists, so an interrupted run
resumes): ``data.npz`` (the images and holder index), ``full/checkpoint``, ``targets.npy``
float32 (M, 1, S, S), ``scores/<tag>.npy`` float32 (M, N) (the tag of a TRAK method names its
proj_dim, K, λ and ensemble size; its feature stores are under ``scores/<tag>/``), ``subsets_<kind>.npy`` bool (J, N), ``retrain/<kind>/<j>/loss.npy``
float64 (M,), and the results ``lds.json`` and ``lds.md``. ``run.json`` pins the data and the training
settings: the same folder can be re-scored with other TRAK settings (or more methods) against
the same retrained models, but never mixed with models trained differently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from tqdm.auto import tqdm

from offchain.attribution.defaults import (
    DEFAULT_LAMBDA_REG,
    DEFAULT_PROJ_DIM,
    DEFAULT_TRAK_ENSEMBLE,
    DEFAULT_TRAK_TIMESTEPS,
    ENSEMBLE_SEED_STRIDE,
)
from offchain.errors import ConfigError, DataError, StageError
from offchain.utils import atomic_write, read_json, write_json, write_npy

__all__ = [
    "LDS_KINDS",
    "LDS_METHODS",
    "LDSConfig",
    "draw_subsets",
    "lds_per_target",
    "mean_interval",
    "measured_loss",
    "run_lds",
]

logger = logging.getLogger(__name__)

LDS_METHODS: tuple[str, ...] = ("dtrak", "loss", "random", "pixel", "count")
"""Scored methods: TRAK with the D-TRAK output, TRAK with the loss output, three baselines."""
LDS_KINDS: tuple[str, ...] = ("examples", "holders")
"""Subset granularities: random images, or random holders with all their images."""


@dataclass(frozen=True)
class LDSConfig:
    """Settings of one LDS run (validated on construction: :class:`ConfigError`).

    The defaults finish in well under an hour on a 2-core CPU for the 512-image, 8-holder
    MNIST demo split (see docs/attribution.md for the measured time).
    """

    n_subsets: int = 24
    """J: retrained models per granularity (≥ 3; D-TRAK used 64)."""
    subset_fraction: float = 0.5
    """α in (0, 1): the fraction of images (or holders) in each subset."""
    train_steps: int = 300
    """Optimizer steps of the full model and of every retrained model (same recipe)."""
    train_seeds: int = 1
    """S: models trained per subset, with training seeds seed, seed + 1, …; the measured output
    is their mean. Training noise is as large as the subset effect at the default size
    (``bench/lds_noise.py``), so S > 1 sharpens every method's LDS, at S times the cost."""
    n_targets: int = 32
    """M: samples generated by the full model that are attributed (≥ 2)."""
    eval_timesteps: int = 100
    """E: fixed timesteps of the measured denoising loss of a target under a model."""
    proj_dim: int = DEFAULT_PROJ_DIM
    """TRAK projection dimension."""
    trak_timesteps: int = DEFAULT_TRAK_TIMESTEPS
    """K: timesteps of the TRAK output functions."""
    lambda_reg: float = DEFAULT_LAMBDA_REG
    """TRAK ridge term, relative to the mean eigenvalue of ΦᵀΦ (see ``TrakConfig``)."""
    trak_ensemble: int = DEFAULT_TRAK_ENSEMBLE
    """TRAK ensemble size: independent projection/noise seeds whose scores are averaged."""
    image_size: int = 16
    """Side in pixels of the model's images."""
    seed: int = 0
    """Seed of the model initialisation, sampling, subsets, noise and the random baseline."""
    num_threads: int | None = 1
    """torch intra-op threads while training and measuring (1 is fastest on a shared CPU)."""
    keep_checkpoints: bool = False
    """Keep every retrained checkpoint (≈ 2.6 MB each); by default only its measured losses."""

    def __post_init__(self) -> None:
        if not isinstance(self.n_subsets, int) or self.n_subsets < 3:
            raise ConfigError(f"n_subsets must be an int ≥ 3, got {self.n_subsets!r}")
        if not 0.0 < float(self.subset_fraction) < 1.0:
            raise ConfigError(f"subset_fraction must be in (0, 1), got {self.subset_fraction}")
        for name, low in (
            ("trak_ensemble", 1),
            ("train_seeds", 1),
            ("train_steps", 1),
            ("n_targets", 2),
            ("eval_timesteps", 1),
            ("proj_dim", 1),
            ("trak_timesteps", 1),
            ("image_size", 4),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an int ≥ {low}, got {value!r}")
        if not (math.isfinite(self.lambda_reg) and self.lambda_reg > 0):
            raise ConfigError(f"lambda_reg must be > 0, got {self.lambda_reg}")
        if self.seed < 0:
            raise ConfigError(f"seed must be ≥ 0, got {self.seed}")

    def diffusion(self):  # -> offchain.diffusion.DiffusionConfig (torch imported lazily)
        from offchain.diffusion import DiffusionConfig

        return DiffusionConfig(
            image_size=self.image_size,
            train_steps=self.train_steps,
            seed=self.seed,
            num_threads=self.num_threads,
        )


# ----------------------------------------------------------------------------- pure functions


def draw_subsets(
    holder_index: np.ndarray, kind: str, n_subsets: int, fraction: float, seed: int
) -> np.ndarray:
    """Random training subsets as a bool mask (J, N).

    ``kind="examples"``: each row holds exactly ``round(fraction · N)`` images;
    ``kind="holders"``: each row holds every image of exactly ``round(fraction · H)`` holders
    (H = holders that own an image). Rows are distinct whenever there are at least J distinct
    subsets of that size; otherwise they repeat.

    Args:
        holder_index: int (N,), the holder of each training image.
        kind: ``"examples"`` or ``"holders"``.
        n_subsets: J ≥ 1.
        fraction: α in (0, 1).
        seed: seed ≥ 0 of the draw.

    Raises:
        ConfigError: unknown ``kind``, or a subset would be empty or everything.
    """
    idx = np.asarray(holder_index)
    n = idx.shape[0]
    rng = np.random.default_rng([int(seed), 0x1D5])
    if kind == "examples":
        units = np.arange(n)
        unit_of = units
    elif kind == "holders":
        units = np.unique(idx)
        unit_of = np.searchsorted(units, idx)
    else:
        raise ConfigError(f"kind must be one of {LDS_KINDS}, got {kind!r}")
    size = int(round(fraction * len(units)))
    if not 1 <= size < len(units):
        raise ConfigError(
            f"a {fraction:.0%} subset of {len(units)} {kind} has {size} of them: "
            "need at least 1 in and 1 out"
        )
    possible = math.comb(len(units), size)
    seen: set[bytes] = set()
    rows = []
    while len(rows) < n_subsets:
        chosen = np.zeros(len(units), dtype=bool)
        chosen[rng.choice(len(units), size=size, replace=False)] = True
        key = np.packbits(chosen).tobytes()
        if key in seen and len(seen) < possible:
            continue
        seen.add(key)
        rows.append(chosen[unit_of])
    return np.stack(rows)


def lds_per_target(
    scores: np.ndarray, subsets: np.ndarray, measured_output: np.ndarray
) -> np.ndarray:
    """Spearman correlation per target between predicted and measured outputs over subsets.

    Args:
        scores: τ, float (M, N).
        subsets: bool (J, N) membership masks.
        measured_output: float (J, M): each retrained model's output on each target (here the
            negative denoising loss).

    Returns:
        float64 (M,) in [−1, 1]; NaN for a target whose prediction or measurement is constant
        over the subsets (no ranking exists).

    Raises:
        DataError: shapes disagree or values are not finite.
    """
    tau = np.asarray(scores, dtype=np.float64)
    masks = np.asarray(subsets, dtype=bool)
    actual = np.asarray(measured_output, dtype=np.float64)
    if tau.ndim != 2 or masks.ndim != 2 or masks.shape[1] != tau.shape[1]:
        raise DataError(f"scores (M, N) {tau.shape} and subsets (J, N) {masks.shape} disagree")
    if actual.shape != (masks.shape[0], tau.shape[0]):
        raise DataError(
            f"measured_output must be (J, M) = {(masks.shape[0], tau.shape[0])}, got {actual.shape}"
        )
    if not (np.isfinite(tau).all() and np.isfinite(actual).all()):
        raise DataError("scores and measured outputs must be finite")
    predicted = masks.astype(np.float64) @ tau.T  # (J, M): g_m(S_j)
    out = np.full(tau.shape[0], np.nan)
    for m in range(tau.shape[0]):
        p, a = predicted[:, m], actual[:, m]
        if np.ptp(p) == 0 or np.ptp(a) == 0:
            continue
        out[m] = stats.spearmanr(p, a).statistic
    return out


def mean_interval(values: np.ndarray, level: float = 0.95) -> dict[str, float | None]:
    """Mean and two-sided t-interval of the finite ``values`` (targets are the sample).

    Returns:
        ``{"mean", "low", "high", "n"}``; None where undefined (no finite value; the interval
        with fewer than 2), so the dict is valid JSON.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = float(v.mean())
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": n}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def measured_loss(
    unet: Any, scheduler: Any, targets: Any, eval_timesteps: int, seed: int, batch_size: int = 512
) -> np.ndarray:
    """Denoising loss of each target under a model, float64 (M,).

    ``loss[m] = (1/E) Σ_e mean_pixels((ε_{m,e} − ε_θ(x_{t_e}, t_e))²)`` with
    x_t = √ᾱ_t·x_m + √(1−ᾱ_t)·ε (Ho et al. 2020), E timesteps t_e = e·⌊T/E⌋ + ⌊T/(2E)⌋ (the
    centres of E equal strata of [0, T)) and noise ε_{m,e} drawn from a generator seeded with
    ``seed`` only, so every model sees the same (x_t, t) pairs.

    Args:
        unet: an ε-prediction ``diffusers.UNet2DModel``.
        scheduler: its ``DDPMScheduler`` (``alphas_cumprod`` is read).
        targets: float32 (M, C, S, S) in [−1, 1].
        eval_timesteps: E, 1 ≤ E ≤ T.
        seed: seed of the noise.
        batch_size: (target, timestep) pairs per forward pass.
    """
    import torch

    x0 = torch.as_tensor(np.asarray(targets), dtype=torch.float32)
    acp = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float32)
    n_t = acp.numel()
    if not 1 <= eval_timesteps <= n_t:
        raise ConfigError(f"eval_timesteps must be in [1, {n_t}], got {eval_timesteps}")
    stride = n_t // eval_timesteps
    timesteps = torch.arange(eval_timesteps) * stride + stride // 2  # (E,)
    m = x0.shape[0]
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((m, eval_timesteps, *x0.shape[1:]), generator=gen)  # (M, E, C, S, S)
    a = acp.index_select(0, timesteps).view(1, -1, 1, 1, 1)
    x_t = (a.sqrt() * x0[:, None] + (1 - a).sqrt() * noise).flatten(0, 1)  # (M·E, C, S, S)
    t_flat = timesteps.repeat(m)
    eps = noise.flatten(0, 1)
    losses = torch.empty(m * eval_timesteps, dtype=torch.float64)
    was_training = unet.training
    unet.eval()
    try:
        with torch.no_grad():
            for start in range(0, x_t.shape[0], batch_size):
                sl = slice(start, start + batch_size)
                pred = unet(x_t[sl], t_flat[sl]).sample
                losses[sl] = (eps[sl] - pred).pow(2).flatten(1).mean(1).double()
    finally:
        unet.train(was_training)
    return losses.view(m, eval_timesteps).mean(1).numpy()


def pixel_scores(targets: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Pixel-similarity baseline, float32 (M, N), each row centred to mean 0.

    ``τ[m, i] = −d[m, i] + mean_j d[m, j]`` with ``d[m, i] = mean((x_m − x_i)²)`` over pixels.
    """
    t = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
    x = np.asarray(train, dtype=np.float64).reshape(len(train), -1)
    d2 = np.maximum((t**2).sum(1)[:, None] + (x**2).sum(1)[None, :] - 2.0 * t @ x.T, 0.0)
    d2 /= t.shape[1]
    return (d2.mean(axis=1, keepdims=True) - d2).astype(np.float32)


# ------------------------------------------------------------------------------------- driver


def run_lds(
    out_dir: str | Path,
    images: np.ndarray,
    holder_index: np.ndarray,
    cfg: LDSConfig | None = None,
    methods: Sequence[str] = LDS_METHODS,
    kinds: Sequence[str] = LDS_KINDS,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the LDS protocol (module docstring) and write ``lds.json`` and ``lds.md``.

    Resumable: every artifact is written atomically and skipped when present, so a re-run
    after a crash retrains only the missing subsets. A second call with a finished run returns
    the saved report.

    Args:
        out_dir: run folder (created).
        images: uint8 (N, H, W), the training set.
        holder_index: int (N,), holder of each image.
        cfg: :class:`LDSConfig`; defaults when None.
        methods: subset of :data:`LDS_METHODS`.
        kinds: subset of :data:`LDS_KINDS`.
        progress: progress bars.

    Returns:
        The report (also ``lds.json``): ``config``, ``n_train``, ``n_holders``, ``timing_s``,
        and ``results[kind][method] = {"mean", "low", "high", "n", "per_target"}`` (LDS as a
        fraction in [−1, 1]).

    Raises:
        ConfigError: unknown method or kind, or a bad setting.
        DataError: bad images or holder index.
        StageError: ``out_dir`` holds a run of different data or settings.
    """
    cfg = cfg or LDSConfig()
    images, idx = _checked_request(images, holder_index, methods, kinds)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "lds.json"
    identity = {"config": asdict(cfg), "methods": list(methods), "kinds": list(kinds)}
    _check_or_write_data(out, images, idx, cfg)
    if report_path.exists():
        saved = read_json(report_path)
        if all(saved.get(k) == v for k, v in identity.items()):
            return saved

    from offchain.diffusion import preprocess

    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    full, targets = _full_model_and_targets(out, images, cfg, progress)
    timing["full_model"] = time.perf_counter() - t0

    train_x = preprocess(images, cfg.image_size)
    t0 = time.perf_counter()
    scores = {m: _scores(out, m, full, train_x, targets, cfg, progress) for m in methods}
    timing["scores"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    results = _retrain_results(out, kinds, images, idx, targets, scores, cfg, progress)
    timing["retrain"] = time.perf_counter() - t0
    return _write_report(out, identity, images, idx, timing, results)


def _checked_request(
    images: np.ndarray, holder_index: np.ndarray, methods: Sequence[str], kinds: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, H, W), holder index int (N,))`` as arrays, after validating the call."""
    unknown = [m for m in methods if m not in LDS_METHODS] + [
        k for k in kinds if k not in LDS_KINDS
    ]
    if unknown or not methods or not kinds:
        raise ConfigError(
            f"unknown or empty methods/kinds {unknown}; choose from {LDS_METHODS} and {LDS_KINDS}"
        )
    images = np.asarray(images)
    idx = np.asarray(holder_index)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[0] < 4:
        raise DataError(f"images must be uint8 (N ≥ 4, H, W), got {images.dtype} {images.shape}")
    if idx.shape != (images.shape[0],) or not np.issubdtype(idx.dtype, np.integer):
        raise DataError(
            f"holder_index must be int ({images.shape[0]},), got {idx.dtype} {idx.shape}"
        )
    return images, idx


def _full_model_and_targets(
    out: Path, images: np.ndarray, cfg: LDSConfig, progress: bool
) -> tuple[Path, np.ndarray]:
    """``(full model's checkpoint folder, its targets float32 (M, 1, S, S))``, made if missing."""
    from offchain.diffusion import generate_samples, train_round

    dcfg = cfg.diffusion()
    full = out / "full" / "checkpoint"
    train_round(images, full, dcfg, progress=progress)
    targets_path = out / "targets.npy"
    if not targets_path.exists():
        write_npy(targets_path, generate_samples(full, cfg.n_targets, dcfg, seed=cfg.seed + 1))
    return full, np.load(targets_path)


def _retrain_results(
    out: Path,
    kinds: Sequence[str],
    images: np.ndarray,
    idx: np.ndarray,
    targets: np.ndarray,
    scores: dict[str, np.ndarray],
    cfg: LDSConfig,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """``results[kind][method]`` (LDS summary + per_target), retraining on ``cfg.num_threads``."""
    import torch

    results: dict[str, dict[str, Any]] = {}
    prev_threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        for kind in kinds:
            masks = _subsets(out, kind, idx, cfg)
            losses = _subset_losses(out, kind, masks, images, targets, cfg, progress)
            results[kind] = {
                method: _lds_summary(tau, masks, losses) for method, tau in scores.items()
            }
    finally:
        torch.set_num_threads(prev_threads)
    return results


def _subset_losses(
    out: Path,
    kind: str,
    masks: np.ndarray,
    images: np.ndarray,
    targets: np.ndarray,
    cfg: LDSConfig,
    progress: bool,
) -> np.ndarray:
    """Measured target losses of the J retrained models, float64 (J, M)."""
    return np.stack(
        [
            _retrain_loss(out, kind, j, images[masks[j]], targets, cfg, progress)
            for j in tqdm(range(cfg.n_subsets), desc=f"LDS retrain ({kind})", disable=not progress)
        ]
    )


def _lds_summary(tau: np.ndarray, masks: np.ndarray, losses: np.ndarray) -> dict[str, Any]:
    """``{"mean", "low", "high", "n", "per_target"}``: one method's LDS over targets (JSON-ready)."""
    per_target = lds_per_target(tau, masks, -losses)
    summary: dict[str, Any] = mean_interval(per_target)
    summary["per_target"] = [None if np.isnan(v) else float(v) for v in per_target]
    return summary


def _write_report(
    out: Path,
    identity: dict[str, Any],
    images: np.ndarray,
    idx: np.ndarray,
    timing: dict[str, float],
    results: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The report dict, after writing ``lds.md`` and then ``lds.json`` (atomically)."""
    report = {
        **identity,
        "n_train": int(images.shape[0]),
        "n_holders": int(np.unique(idx).size),
        "measured_output": "negative denoising loss, mean over eval_timesteps fixed (t, ε)",
        "interval": "95 % t-interval over targets",
        "timing_s": {k: round(v, 1) for k, v in timing.items()},
        "results": results,
    }
    atomic_write(out / "lds.md", lambda p: p.write_text(format_report(report)))
    write_json(out / "lds.json", report)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The LDS report as a Markdown table (LDS in %, 95 % interval)."""
    cfg = report["config"]
    lines = [
        f"LDS on {report['n_train']} images / {report['n_holders']} holders: "
        f"J = {cfg['n_subsets']} retrained models per granularity on α = "
        f"{cfg['subset_fraction']:.0%} subsets, {cfg['train_steps']} steps each, "
        f"M = {cfg['n_targets']} generated targets, proj_dim {cfg['proj_dim']}, "
        f"K = {cfg['trak_timesteps']}.",
        "",
        "| method | " + " | ".join(f"LDS {k} (%)" for k in report["results"]) + " |",
        "|---|" + "---|" * len(report["results"]),
    ]
    methods = list(next(iter(report["results"].values())))
    for method in methods:
        cells = []
        for kind in report["results"]:
            r = report["results"][kind][method]
            if r["n"] == 0:
                cells.append("n/a")
            elif r["n"] == 1:
                cells.append(f"{100 * r['mean']:.1f}")
            else:
                cells.append(f"{100 * r['mean']:.1f} [{100 * r['low']:.1f}, {100 * r['high']:.1f}]")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    t = report["timing_s"]
    lines += ["", "Wall time (s): " + ", ".join(f"{k} {v}" for k, v in t.items()), ""]
    return "\n".join(lines)


_SCORING_FIELDS = ("proj_dim", "trak_timesteps", "lambda_reg", "trak_ensemble")
"""Settings that change only the scores, never the retrained models: a run folder can be
re-scored with other values (each TRAK setting has its own score file)."""


def _check_or_write_data(out: Path, images: np.ndarray, idx: np.ndarray, cfg: LDSConfig) -> None:
    """Refuse a folder whose retrained models were made from other data or training settings."""
    digest = hashlib.sha256(images.tobytes() + idx.astype(np.int64).tobytes()).hexdigest()
    meta_path = out / "run.json"
    training = {k: v for k, v in asdict(cfg).items() if k not in _SCORING_FIELDS}
    training.pop("keep_checkpoints")
    training.pop("num_threads")
    meta = {"training": training, "data_sha256": digest, "n_train": int(images.shape[0])}
    if meta_path.exists():
        saved = read_json(meta_path)
        if saved != meta:
            differs = sorted(
                k
                for k in {**meta["training"], **saved.get("training", {})}
                if saved.get("training", {}).get(k) != meta["training"].get(k)
            ) or ["data"]
            raise StageError(
                f"{out} holds an LDS run of different data or settings (differs in {differs}); "
                "use another folder or remove it"
            )
        return
    write_json(meta_path, meta)


def _score_tag(method: str, cfg: LDSConfig) -> str:
    """File stem of a method's scores: TRAK methods carry their scoring settings."""
    if method not in ("dtrak", "loss"):
        return method
    tag = f"{method}_p{cfg.proj_dim}_k{cfg.trak_timesteps}_l{cfg.lambda_reg:g}"
    return tag + (f"_e{cfg.trak_ensemble}" if cfg.trak_ensemble > 1 else "")


def _scores(
    out: Path, method: str, full: Path, train_x, targets: np.ndarray, cfg: LDSConfig, progress: bool
) -> np.ndarray:
    tag = _score_tag(method, cfg)
    path = out / "scores" / f"{tag}.npy"
    if path.exists():
        return np.load(path)
    if method in ("dtrak", "loss"):
        from offchain.attribution.trak import TrakConfig, compute_trak_ensemble
        from offchain.diffusion import load_checkpoint

        unet, scheduler = load_checkpoint(full)
        trak_cfg = TrakConfig(
            proj_dim=cfg.proj_dim,
            num_timesteps=cfg.trak_timesteps,
            lambda_reg=cfg.lambda_reg,
            seed=cfg.seed,
            output=method,
        )
        seeds = [cfg.seed + ENSEMBLE_SEED_STRIDE * k for k in range(cfg.trak_ensemble)]
        tau = compute_trak_ensemble(
            [(unet, scheduler)],
            train_x,
            targets,
            out / "scores" / tag,
            trak_cfg,
            seeds=seeds,
            progress=progress,
        )
    elif method == "random":
        rng = np.random.default_rng([cfg.seed, 0xBA5E])
        tau = rng.standard_normal((targets.shape[0], train_x.shape[0])).astype(np.float32)
    elif method == "count":
        tau = np.ones((targets.shape[0], train_x.shape[0]), dtype=np.float32)
    else:  # pixel
        tau = pixel_scores(targets, train_x.numpy())
    write_npy(path, np.asarray(tau, dtype=np.float32))
    return np.load(path)


def _subsets(out: Path, kind: str, idx: np.ndarray, cfg: LDSConfig) -> np.ndarray:
    path = out / f"subsets_{kind}.npy"
    if not path.exists():
        write_npy(path, draw_subsets(idx, kind, cfg.n_subsets, cfg.subset_fraction, cfg.seed))
    return np.load(path)


def _retrain_loss(
    out: Path,
    kind: str,
    j: int,
    images: np.ndarray,
    targets: np.ndarray,
    cfg: LDSConfig,
    progress: bool,
) -> np.ndarray:
    from offchain.diffusion import is_complete_checkpoint, load_checkpoint, train_round

    folder = out / "retrain" / kind / f"{j:03d}"
    loss_path = folder / "loss.npy"
    if loss_path.exists():
        return np.load(loss_path)
    per_seed = []
    for k in range(cfg.train_seeds):
        # one seed keeps the plain layout (checkpoint/, loss.npy); more add a suffix per seed
        suffix = f"_seed{k}" if cfg.train_seeds > 1 else ""
        seed_loss_path = folder / f"loss{suffix}.npy"
        if cfg.train_seeds > 1 and seed_loss_path.exists():
            per_seed.append(np.load(seed_loss_path))
            continue
        ckpt = folder / f"checkpoint{suffix}"
        if ckpt.exists() and not is_complete_checkpoint(ckpt):
            shutil.rmtree(ckpt)  # only ever a leftover of this function; retrain it
        dcfg = dataclasses.replace(cfg.diffusion(), seed=cfg.seed + k)
        train_round(images, ckpt, dcfg, progress=False)
        unet, scheduler = load_checkpoint(ckpt)
        seed_loss = measured_loss(unet, scheduler, targets, cfg.eval_timesteps, seed=cfg.seed + 2)
        if cfg.train_seeds > 1:
            write_npy(seed_loss_path, seed_loss)
        if not cfg.keep_checkpoints:
            shutil.rmtree(ckpt)
        per_seed.append(seed_loss)
    loss = np.mean(np.stack(per_seed), axis=0)
    write_npy(loss_path, loss)
    logger.debug("LDS %s subset %d: mean target loss %.4f", kind, j, float(loss.mean()))
    return loss
