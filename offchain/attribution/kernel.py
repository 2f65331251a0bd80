"""The TRAK kernel and scores from features, in float64 with a Cholesky solve.

For training features Φ (N, p) and target features Φ' (M, p) of one checkpoint (Park et al.,
ICML 2023, arXiv 2303.14186, eq. (9) with Q = I as in D-TRAK, Zheng et al., ICLR 2024, arXiv
2311.00500)::

    τ = Φ' (ΦᵀΦ + λ I)⁻¹ Φᵀ            float64 (M, N)

``τ[m, i]`` is training example i's coefficient in the ridge regression that predicts target
m's linearised output f(z'_m) ≈ φ(z'_m)ᵀ β from the training features. It is in the units of
the linearised output function (no per-run renormalisation: traker divides (ΦᵀΦ + λI)⁻¹ by its
mean absolute entry, we do not), so scores of different checkpoints or seeds are on one scale
and their mean is the TRAK ensemble estimator. With the relative λ below, τ is also invariant
to a common rescaling of the features (e.g. traker's 1/sqrt(p) factor).

λ: ``lambda_relative=True`` (default) → λ = lambda_reg · tr(ΦᵀΦ)/p, the mean eigenvalue of the
Gram matrix; otherwise λ = lambda_reg as given (traker's convention). λ > 0 keeps ΦᵀΦ + λI
positive definite when p ≥ N.

Memory: the (p, p) Gram matrix and Φ' in float64, Φ streamed in row chunks from its memmap.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
from tqdm.auto import tqdm

from offchain.errors import ConfigError, DataError, StageError

__all__ = ["absolute_lambda", "gram_matrix", "kernel_scores"]

_CHUNK_ROWS = 4096


def _check_features(phi: np.ndarray, name: str) -> None:
    if phi.ndim != 2 or phi.shape[0] < 1 or phi.shape[1] < 1:
        raise DataError(f"{name} must have shape (n ≥ 1, proj_dim ≥ 1), got {phi.shape}")


def gram_matrix(phi: np.ndarray, chunk_rows: int = _CHUNK_ROWS) -> np.ndarray:
    """ΦᵀΦ, float64 (p, p), accumulated over row chunks of ``phi`` (any float (N, p))."""
    _check_features(phi, "train features")
    p = phi.shape[1]
    gram = np.zeros((p, p), dtype=np.float64)
    for start in range(0, phi.shape[0], chunk_rows):
        block = np.asarray(phi[start : start + chunk_rows], dtype=np.float64)
        gram += block.T @ block
    return gram


def absolute_lambda(gram: np.ndarray, lambda_reg: float, relative: bool = True) -> float:
    """The λ added to ΦᵀΦ: ``lambda_reg`` · tr(ΦᵀΦ)/p when ``relative``, else ``lambda_reg``.

    Raises:
        ConfigError: ``lambda_reg`` not finite or ≤ 0.
        StageError: relative λ of degenerate features (tr(ΦᵀΦ) = 0 or not finite).
    """
    if not (math.isfinite(lambda_reg) and lambda_reg > 0):
        raise ConfigError(f"lambda_reg must be finite and > 0, got {lambda_reg}")
    if not relative:
        return float(lambda_reg)
    mean_eig = float(np.trace(gram)) / gram.shape[0]
    if not (math.isfinite(mean_eig) and mean_eig > 0):
        raise StageError(
            f"TRAK features are degenerate (tr(ΦᵀΦ)/proj_dim = {mean_eig}): the output "
            "function's gradients vanish or overflow for this model"
        )
    return float(lambda_reg) * mean_eig


def kernel_scores(
    phi_train: np.ndarray,
    phi_target: np.ndarray,
    lambda_abs: float,
    gram: np.ndarray | None = None,
    chunk_rows: int = _CHUNK_ROWS,
    progress: bool = False,
) -> np.ndarray:
    """τ = Φ' (ΦᵀΦ + λI)⁻¹ Φᵀ, float64 (M, N).

    Args:
        phi_train: Φ, float (N, p) (a memmap is fine: read in chunks).
        phi_target: Φ', float (M, p).
        lambda_abs: λ > 0 (absolute; see :func:`absolute_lambda`).
        gram: ΦᵀΦ if already computed (float64 (p, p)).
        chunk_rows: training rows per block.
        progress: tqdm bar over the training blocks.

    Raises:
        DataError: shapes disagree.
        ConfigError: λ not finite or ≤ 0.
        StageError: ΦᵀΦ + λI is not positive definite numerically, or τ is not finite.
    """
    _check_features(phi_train, "train features")
    _check_features(phi_target, "target features")
    if phi_train.shape[1] != phi_target.shape[1]:
        raise DataError(
            f"train features have {phi_train.shape[1]} dims, target features {phi_target.shape[1]}"
        )
    if not (math.isfinite(lambda_abs) and lambda_abs > 0):
        raise ConfigError(f"λ must be finite and > 0, got {lambda_abs}")
    if gram is None:
        gram = gram_matrix(phi_train, chunk_rows)
    p = gram.shape[0]
    a = gram + lambda_abs * np.eye(p)
    try:
        factor = scipy.linalg.cho_factor(a, lower=True, check_finite=True)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise StageError(f"ΦᵀΦ + λI is not positive definite (λ = {lambda_abs:g}): {exc}") from exc
    target64 = np.asarray(phi_target, dtype=np.float64)
    solved = scipy.linalg.cho_solve(factor, target64.T)  # (p, M) = (ΦᵀΦ + λI)⁻¹ Φ'ᵀ
    n = phi_train.shape[0]
    scores = np.empty((target64.shape[0], n), dtype=np.float64)
    starts = range(0, n, chunk_rows)
    for start in tqdm(starts, desc="TRAK kernel", disable=not progress, unit="block"):
        block = np.asarray(phi_train[start : start + chunk_rows], dtype=np.float64)
        scores[:, start : start + len(block)] = (block @ solved).T
    if not np.isfinite(scores).all():
        raise StageError(f"TRAK produced non-finite scores (λ = {lambda_abs:g})")
    return scores
