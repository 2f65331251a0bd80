"""Pairwise similarities between generated samples and training works, each in [0, 1].

Two views, after the two halves of the US (Ninth Circuit) test of *substantial similarity*
(docs/science.md, "Copyright loss"):

- **Semantic** (extrinsic test: an objective, element-by-element comparison of the protected
  expression): cosine similarity of image embeddings. The default :class:`UNetFeatureEncoder`
  needs no downloaded weights: it reads the round's own diffusion UNet at a small noise level
  (what the model itself "sees" in an image), globally average-pooled per layer. Pretrained
  copy-detection encoders (SSCD, DINO, CLIP; Somepalli et al., CVPR 2023) plug in through the
  :class:`Encoder` protocol when their weights are available from a local path.
- **Perceptual** (intrinsic test: would an ordinary observer find the total concept and feel
  substantially similar): SSIM (Wang et al., IEEE TIP 2004) with scikit-image's defaults
  (7 × 7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance), vectorised over all pairs.

Both are *scores*, not calibrated probabilities of infringement; calibrated thresholds
("replication", "copy", from known positives and negatives) come in a later issue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from offchain.errors import ConfigError, DataError

__all__ = [
    "Encoder",
    "UNetFeatureEncoder",
    "perceptual_similarity",
    "semantic_similarity",
    "ssim_matrix",
]


@runtime_checkable
class Encoder(Protocol):
    """Anything that maps images to embedding vectors (the extension point for SSCD/DINO/CLIP).

    ``encode(images)``: ``images`` float32 (B, C, S, S) in [-1, 1] → float32 (B, D). It must be
    deterministic (the same image always gives the same vector) so that an exact copy has
    cosine similarity 1 with its original.
    """

    def encode(self, images: Tensor) -> Tensor: ...


class UNetFeatureEncoder:
    """Weight-free embeddings from the round's own diffusion UNet.

    Each image x is noised to a small timestep t with ONE fixed noise field ε shared by all
    images, x_t = sqrt(ᾱ_t) x + sqrt(1 − ᾱ_t) ε, passed through the UNet, and the outputs of the
    named sub-modules (forward hooks) are average-pooled over space. Each layer's vector is
    L2-normalised and the layers are concatenated, so every layer weighs the same. The shared
    noise keeps the map deterministic: identical images give identical embeddings.

    Measured on upscaled sklearn digits with a briefly trained UNet, after centering on the
    training mean (see :func:`semantic_similarity`): cosine ≈ 0.76 for 1-pixel-shifted noisy
    copies, ≈ 0.20 for other images of the same digit, ≈ −0.02 for other digits. Raw
    (uncentered) cosines are ≈ 0.99 for every pair — centering is what makes them useful.

    Args:
        unet: a ``diffusers.UNet2DModel`` (ε-prediction), run in place (its device and dtype),
            in eval mode and without gradients; its training flag is restored afterwards.
        scheduler: its ``DDPMScheduler`` (``alphas_cumprod`` is read).
        timestep: t in [0, T), the noise level (default 20: ᾱ ≈ 0.998).
        layers: dotted names of sub-modules to read (default: the deepest down block and the
            mid block). A module returning a tuple contributes its first element.
        seed: seed of the shared noise field.
        batch_size: images per forward pass.

    Raises:
        ConfigError: unknown layer name or timestep out of range.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        scheduler: object,
        timestep: int = 20,
        layers: Sequence[str] | None = None,
        seed: int = 0,
        batch_size: int = 256,
    ) -> None:
        self.unet = unet
        acp = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float32).reshape(-1)
        if not 0 <= timestep < acp.numel():
            raise ConfigError(f"timestep must be in [0, {acp.numel()}), got {timestep}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
        self.timestep = int(timestep)
        self.alpha_bar = float(acp[self.timestep])
        modules = dict(unet.named_modules())
        if layers is None:
            n_down = len(getattr(unet, "down_blocks", []))
            layers = ([f"down_blocks.{n_down - 1}"] if n_down else []) + ["mid_block"]
        missing = [name for name in layers if name not in modules]
        if missing or not layers:
            raise ConfigError(f"unknown UNet layers {missing or layers}")
        self.layers = tuple(layers)
        self._modules = [modules[name] for name in self.layers]
        self.seed = int(seed)
        self.batch_size = int(batch_size)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Embeddings float32 (B, D), D = Σ channels of the hooked layers."""
        param = next(self.unet.parameters())
        device, dtype = param.device, param.dtype
        shape = tuple(images.shape[1:])
        gen = torch.Generator().manual_seed(self.seed)
        noise = torch.randn((1, *shape), generator=gen).to(device, dtype)
        a = self.alpha_bar
        captured: dict[int, Tensor] = {}

        def hook(i: int):
            def _hook(_module: torch.nn.Module, _inputs: object, output: object) -> None:
                out = output[0] if isinstance(output, tuple) else output
                captured[i] = out.float().mean(dim=(2, 3))  # global average pool: (B, C_i)

            return _hook

        handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(self._modules)]
        was_training = self.unet.training
        self.unet.eval()
        chunks = []
        try:
            for start in range(0, images.shape[0], self.batch_size):
                x = images[start : start + self.batch_size].to(device, dtype)
                x_t = a**0.5 * x + (1.0 - a) ** 0.5 * noise  # forward diffusion to t
                t = torch.full((x.shape[0],), self.timestep, dtype=torch.int64, device=device)
                captured.clear()
                self.unet(x_t, t)
                chunks.append(
                    torch.cat(
                        [F.normalize(captured[i], dim=1) for i in range(len(self._modules))], 1
                    ).cpu()
                )
        finally:
            for h in handles:
                h.remove()
            self.unet.train(was_training)
        return torch.cat(chunks, 0)


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
    """
    if (
        generated_emb.ndim != 2
        or train_emb.ndim != 2
        or generated_emb.shape[1] != train_emb.shape[1]
    ):
        raise DataError(
            f"embeddings must be (M, D) and (N, D), got {tuple(generated_emb.shape)} and "
            f"{tuple(train_emb.shape)}"
        )
    g, t = generated_emb.float(), train_emb.float()
    if center and t.shape[0] >= 2:
        mu = t.mean(dim=0, keepdim=True)
        g, t = g - mu, t - mu
    cos = F.normalize(g, dim=1) @ F.normalize(t, dim=1).T
    return cos.clamp_(0.0, 1.0)


def _patches(x: Tensor, win_size: int) -> Tensor:
    """Sliding windows (B, C, win², L) of x (B, C, S, S), valid positions only."""
    b, c = x.shape[:2]
    return F.unfold(x, kernel_size=win_size).view(b, c, win_size * win_size, -1)


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
    if win_size < 3 or win_size % 2 == 0:
        raise ConfigError(f"win_size must be odd and ≥ 3, got {win_size}")
    if not data_range > 0:
        raise ConfigError(f"data_range must be > 0, got {data_range}")
    if a.ndim != 4 or b.ndim != 4 or a.shape[1:] != b.shape[1:]:
        raise DataError(
            f"images must be (M, C, S, S) and (N, C, S, S), got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    if min(a.shape[2:]) < win_size:
        raise DataError(f"images {tuple(a.shape[2:])} are smaller than win_size {win_size}")
    a = a.detach().to("cpu", torch.float64)
    b = b.detach().to("cpu", torch.float64)
    npix = win_size * win_size
    cov_norm = npix / (npix - 1.0)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2

    pa, pb = _patches(a, win_size), _patches(b, win_size)  # (M, C, K, L), (N, C, K, L)
    mu_a, mu_b = pa.mean(2), pb.mean(2)  # (M, C, L), (N, C, L)
    var_a = cov_norm * (pa.pow(2).mean(2) - mu_a.pow(2))
    var_b = cov_norm * (pb.pow(2).mean(2) - mu_b.pow(2))
    m, c, _, n_pos = pa.shape
    # (C·L, M, K) for the batched cross moments E[a·b] per channel and window position.
    pa_t = pa.permute(1, 3, 0, 2).reshape(c * n_pos, m, npix)
    out = torch.empty(m, b.shape[0], dtype=torch.float64)
    chunk = max(1, int(max_chunk_elements // max(1, m * c * n_pos)))
    for start in range(0, b.shape[0], chunk):
        sl = slice(start, start + chunk)
        pb_t = pb[sl].permute(1, 3, 2, 0).reshape(c * n_pos, npix, -1)  # (C·L, K, n)
        e_ab = torch.bmm(pa_t, pb_t).div_(npix).view(c, n_pos, m, -1).permute(2, 3, 0, 1)
        ma, mb = mu_a[:, None], mu_b[sl][None]  # (M, 1, C, L), (1, n, C, L)
        cov = cov_norm * (e_ab - ma * mb)
        num = (2 * ma * mb + c1) * (2 * cov + c2)
        den = (ma.pow(2) + mb.pow(2) + c1) * (var_a[:, None] + var_b[sl][None] + c2)
        out[:, sl] = (num / den).mean(dim=(2, 3))
    return out.float()


def perceptual_similarity(
    a: Tensor, b: Tensor, data_range: float = 2.0, win_size: int = 7
) -> Tensor:
    """SSIM of every pair clipped to [0, 1], float32 (M, N) (negative SSIM = no similarity)."""
    return ssim_matrix(a, b, data_range=data_range, win_size=win_size).clamp_(0.0, 1.0)
