"""Pairwise similarity features between generated samples and training works.

Three views, after the two halves of the US (Ninth Circuit) test of *substantial similarity*
(docs/copyright.md §1 "From the legal test to features"):

- **Semantic** (extrinsic test: an objective, element-by-element comparison of the protected
  expression): cosine similarity of image embeddings, centered on the training mean
  (:func:`centered_cosine`, :func:`semantic_similarity`). Embeddings come from an
  :class:`~offchain.copyright.encoders.Encoder`: the round's own UNet by default, or SSCD,
  CLIP, DINO from a local path.
- **Perceptual** (intrinsic test: would an ordinary observer find the total concept and feel
  substantially similar): SSIM (Wang et al., IEEE TIP 2004) with scikit-image's defaults
  (7 × 7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance), vectorised over all pairs
  (:func:`ssim_matrix`) or for aligned pairs (:func:`ssim_pairs`).
- **Pixel** (near-exact reproduction): the tiled ℓ2 distance of Carlini et al. (USENIX Security
  2023, "Extracting training data from diffusion models"): both images are cut into the same
  non-overlapping tiles and the distance is the *largest* per-tile RMSE, so a pair is close only
  if it is close everywhere (:func:`tiled_l2_matrix`, :func:`tiled_l2_pairs`).

These are scores, not probabilities; :mod:`offchain.copyright.calibration` turns them into a
calibrated probability of substantial similarity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from offchain.copyright.encoders import Encoder, UNetFeatureEncoder
from offchain.errors import ConfigError, DataError

__all__ = [
    "Encoder",
    "UNetFeatureEncoder",
    "centered_cosine",
    "perceptual_similarity",
    "semantic_similarity",
    "ssim_matrix",
    "ssim_pairs",
    "tiled_l2_matrix",
    "tiled_l2_pairs",
]


def centered_cosine(
    a: Tensor, b: Tensor, mean: Tensor | None = None, paired: bool = False
) -> Tensor:
    """Cosine similarity of embeddings after subtracting ``mean``, in [−1, 1].

    Args:
        a: float (M, D); b: float (N, D) (N = M when ``paired``).
        mean: float (D,) or (1, D) subtracted from both sides, or None.
        paired: cosine of the aligned rows (a_k, b_k) instead of every pair.

    Returns:
        float32 (M, N), or (M,) when ``paired``. A zero vector has cosine 0 with everything.

    Raises:
        DataError: shapes do not match.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or (paired and a.shape != b.shape):
        raise DataError(
            f"embeddings must be (M, D) and (N, D), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    a, b = a.detach().to("cpu", torch.float32), b.detach().to("cpu", torch.float32)
    if mean is not None:
        mu = mean.detach().to("cpu", torch.float32).reshape(1, -1)
        a, b = a - mu, b - mu
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    cos = (a * b).sum(1) if paired else a @ b.T
    return cos.clamp_(-1.0, 1.0)


def semantic_similarity(generated_emb: Tensor, train_emb: Tensor, center: bool = True) -> Tensor:
    """Cosine similarity of embeddings mapped to [0, 1] by ``max(cos, 0)``, float32 (M, N).

    With ``center`` the mean training embedding is subtracted from both sides first (needs
    N ≥ 2; skipped for N = 1): embeddings of one network share a large common direction, so raw
    cosines sit near 1 for every pair. A negative centered cosine ("less alike than a typical
    pair") counts as no similarity.

    Args:
        generated_emb: float (M, D).
        train_emb: float (N, D).
        center: subtract the training mean.

    Raises:
        DataError: shapes do not match.
    """
    mean = (
        train_emb.float().mean(dim=0)
        if center and train_emb.ndim == 2 and (train_emb.shape[0] >= 2)
        else None
    )
    return centered_cosine(generated_emb, train_emb, mean).clamp_(0.0, 1.0)


def _patches(x: Tensor, win_size: int) -> Tensor:
    """Sliding windows (B, C, win², L) of x (B, C, S, S), valid positions only."""
    b, c = x.shape[:2]
    return F.unfold(x, kernel_size=win_size).view(b, c, win_size * win_size, -1)


def _check_ssim_inputs(
    a: Tensor, b: Tensor, data_range: float, win_size: int, paired: bool
) -> tuple[Tensor, Tensor]:
    if win_size < 3 or win_size % 2 == 0:
        raise ConfigError(f"win_size must be odd and ≥ 3, got {win_size}")
    if not data_range > 0:
        raise ConfigError(f"data_range must be > 0, got {data_range}")
    if a.ndim != 4 or b.ndim != 4 or a.shape[1:] != b.shape[1:] or (paired and a.shape != b.shape):
        raise DataError(
            f"images must be (M, C, S, S) and (N, C, S, S), got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    if min(a.shape[2:]) < win_size:
        raise DataError(f"images {tuple(a.shape[2:])} are smaller than win_size {win_size}")
    return a.detach().to("cpu", torch.float32), b.detach().to("cpu", torch.float32)


def ssim_matrix(
    a: Tensor,
    b: Tensor,
    data_range: float = 2.0,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
    max_chunk_elements: int = 1 << 25,
) -> Tensor:
    """Mean SSIM of every pair (a_m, b_n), float32 (M, N) in [−1, 1].

    Matches ``skimage.metrics.structural_similarity(a_m, b_n, data_range=data_range,
    win_size=win_size)`` (uniform window, sample covariance N/(N−1), mean over the positions
    where the window fits, channels averaged as with ``channel_axis``) to float32 precision,
    but computes all M·N pairs at once: the per-image window means and variances once, the
    cross moments as one batched matmul over window positions, chunked over b so that at most
    ``max_chunk_elements`` floats of M × chunk × C × L are held.

    Args:
        a: float (M, C, S, S); b: float (N, C, S', S') with the same C, S, S'.
        data_range: max − min of the pixel scale (2.0 for [−1, 1]).
        win_size: odd window side ≤ min(S, S').

    Raises:
        DataError: shapes differ or the images are smaller than the window.
        ConfigError: even or < 3 ``win_size``, non-positive ``data_range``.
    """
    a, b = _check_ssim_inputs(a, b, data_range, win_size, paired=False)
    npix = win_size * win_size
    cov_norm = npix / (npix - 1.0)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2

    pa, pb = _patches(a, win_size), _patches(b, win_size)  # (M, C, K, L), (N, C, K, L)
    m, c, _, n_pos = pa.shape
    n = pb.shape[0]
    cl = c * n_pos

    def per_position(x: Tensor, count: int, last: bool) -> Tensor:
        """(count, C, L) → (C·L, count, 1) or (C·L, 1, count)."""
        t = x.permute(1, 2, 0).reshape(cl, count)
        return t[:, None, :] if last else t[:, :, None]

    # Windows centered on their own mean: cov = E[(a − μa)(b − μb)] without the cancellation
    # of E[ab] − μa μb (flat backgrounds), which keeps float32 within ~1e-7 of scikit-image.
    mu_a, mu_b = pa.mean(2, keepdim=True), pb.mean(2, keepdim=True)  # (M, C, 1, L)
    pa, pb = pa - mu_a, pb - mu_b
    var_a = cov_norm * pa.pow(2).mean(2)  # (M, C, L)
    var_b = cov_norm * pb.pow(2).mean(2)
    mu_a_t, var_a_t = per_position(mu_a[:, :, 0], m, False), per_position(var_a, m, False)
    mu_b_t, var_b_t = per_position(mu_b[:, :, 0], n, True), per_position(var_b, n, True)
    # (C·L, M, K) for the batched cross moments per channel and window position.
    pa_t = pa.permute(1, 3, 0, 2).reshape(cl, m, npix)
    out = torch.empty(m, n, dtype=torch.float32)
    chunk = max(1, int(max_chunk_elements // max(1, m * cl)))
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        pb_t = pb[sl].permute(1, 3, 2, 0).reshape(cl, npix, -1)  # (C·L, K, n)
        mb, vb = mu_b_t[:, :, sl], var_b_t[:, :, sl]
        # (2 μa μb + c1)(2 cov + c2) / ((μa² + μb² + c1)(σa² + σb² + c2)), (C·L, M, n), in place.
        num = torch.bmm(pa_t, pb_t).mul_(2 * cov_norm / npix).add_(c2)
        num.mul_((mu_a_t * mb).mul_(2).add_(c1))
        den = (mu_a_t.pow(2) + mb.pow(2)).add_(c1)
        den.mul_(var_a_t + vb + c2)
        out[:, sl] = num.div_(den).mean(0)
    return out.float()


def perceptual_similarity(
    a: Tensor, b: Tensor, data_range: float = 2.0, win_size: int = 7
) -> Tensor:
    """SSIM of every pair clipped to [0, 1], float32 (M, N) (negative SSIM = no similarity)."""
    return ssim_matrix(a, b, data_range=data_range, win_size=win_size).clamp_(0.0, 1.0)


def ssim_pairs(
    a: Tensor,
    b: Tensor,
    data_range: float = 2.0,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Mean SSIM of the aligned pairs (a_k, b_k), float32 (B,) in [−1, 1].

    The same statistic as :func:`ssim_matrix` (and scikit-image) for B pairs instead of M × N.

    Args:
        a, b: float (B, C, S, S), same shape.

    Raises:
        DataError, ConfigError: as :func:`ssim_matrix`; also when the shapes differ.
    """
    a, b = _check_ssim_inputs(a, b, data_range, win_size, paired=True)
    npix = win_size * win_size
    cov_norm = npix / (npix - 1.0)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    pa, pb = _patches(a, win_size), _patches(b, win_size)  # (B, C, K, L)
    mu_a, mu_b = pa.mean(2, keepdim=True), pb.mean(2, keepdim=True)
    pa, pb = pa - mu_a, pb - mu_b
    mu_a, mu_b = mu_a[:, :, 0], mu_b[:, :, 0]  # (B, C, L)
    var_a = cov_norm * pa.pow(2).mean(2)
    var_b = cov_norm * pb.pow(2).mean(2)
    cov = cov_norm * (pa * pb).mean(2)
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a.pow(2) + mu_b.pow(2) + c1) * (var_a + var_b + c2)
    return (num / den).mean(dim=(1, 2)).float()


def _tiles(x: Tensor, tile_size: int) -> Tensor:
    """Non-overlapping tiles (K, B, C·t²) of x (B, C, S, S), float64."""
    b = x.shape[0]
    t = F.unfold(x.to(torch.float64), kernel_size=tile_size, stride=tile_size)  # (B, C·t², K)
    return t.permute(2, 0, 1).reshape(-1, b, t.shape[1])


def _check_tile_inputs(a: Tensor, b: Tensor, tile_size: int, paired: bool) -> None:
    if not isinstance(tile_size, int) or tile_size < 1:
        raise ConfigError(f"tile_size must be an int ≥ 1, got {tile_size!r}")
    if a.ndim != 4 or b.ndim != 4 or a.shape[1:] != b.shape[1:] or (paired and a.shape != b.shape):
        raise DataError(
            f"images must be (M, C, S, S) and (N, C, S, S), got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    h, w = a.shape[2:]
    if h % tile_size or w % tile_size:
        raise DataError(f"tile_size {tile_size} must divide the image size {h}×{w}")


def tiled_l2_matrix(
    a: Tensor, b: Tensor, tile_size: int = 4, max_chunk_elements: int = 1 << 24
) -> Tensor:
    """Tiled ℓ2 distance of every pair (a_m, b_n), float32 (M, N) ≥ 0 (pixel units).

    After Carlini et al. (2023, §4.1, "Extracting training data from diffusion models"): both
    images are cut into the same non-overlapping ``tile_size`` × ``tile_size`` tiles and

        d(a, b) = max over tiles k of sqrt(mean over the tile's C·t² pixels of (a − b)²),

    the largest per-tile RMSE, so a pair is close only if every tile is close (a near-exact
    copy), not just on average. In the [−1, 1] pixel scale d ∈ [0, 2]; d = 0 for an exact copy.
    (Carlini et al. additionally divide by the distance to the nearest training neighbours;
    the calibration here learns the scale instead.) Computed with one batched matmul per chunk
    of b (``|a|² + |b|² − 2 a·b`` per tile, float64, at most ``max_chunk_elements`` floats of
    K × M × chunk).

    Args:
        a: float (M, C, S, S); b: float (N, C, S, S); ``tile_size`` must divide S.

    Raises:
        DataError: shapes differ or ``tile_size`` does not divide the image size.
        ConfigError: ``tile_size`` < 1.
    """
    _check_tile_inputs(a, b, tile_size, paired=False)
    ta, tb = _tiles(a.detach().cpu(), tile_size), _tiles(b.detach().cpu(), tile_size)
    k, m, p = ta.shape
    na = ta.pow(2).sum(2)  # (K, M)
    nb = tb.pow(2).sum(2)  # (K, N)
    out = torch.empty(m, tb.shape[1], dtype=torch.float64)
    chunk = max(1, int(max_chunk_elements // max(1, k * m)))
    for start in range(0, tb.shape[1], chunk):
        sl = slice(start, start + chunk)
        cross = torch.bmm(ta, tb[:, sl].transpose(1, 2))  # (K, M, n)
        sq = (na[:, :, None] + nb[:, None, sl] - 2.0 * cross).clamp_(min=0.0)
        out[:, sl] = sq.amax(0).div_(p).sqrt_()
    return out.float()


def tiled_l2_pairs(a: Tensor, b: Tensor, tile_size: int = 4) -> Tensor:
    """Tiled ℓ2 distance of the aligned pairs (a_k, b_k), float32 (B,); see
    :func:`tiled_l2_matrix`."""
    _check_tile_inputs(a, b, tile_size, paired=True)
    diff = _tiles(a.detach().cpu(), tile_size) - _tiles(b.detach().cpu(), tile_size)  # (K, B, P)
    return diff.pow(2).mean(2).amax(0).sqrt().float()
