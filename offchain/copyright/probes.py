"""Copyright loss of a text-to-image round by the paper's procedure: regenerate each work from
its caption and compare.

Procedure (docs/copyright.md §3b; the paper generates from each training image's caption and
compares the generation with the original). For a round with works w_1..w_N (the training set,
holder h(i) each) and a caption c_i per work ("" = the null caption, what a work without a
caption trained):

1. **Probes.** Up to k works per holder are drawn (:func:`choose_probe_works`, seeded and
   recorded by the stage; k = ``copyright_probes``); for each probed work j the round's model
   generates g_j from c_j (the stage: ``backend.sample(..., captions=[c_j, …])``).
2. **Pairwise comparison.** Every probe g_p is compared with **every** work i, not only with its
   own work j_p: the semantic, perceptual (SSIM) and pixel (tiled ℓ2) features of
   :mod:`offchain.copyright.similarity` go through the round's
   :class:`~offchain.copyright.calibration.Calibration` to q[p, i] = P(g_p substantially copies
   w_i). The comparison with the own work, q[p, j_p], is the paper's test; the comparison with
   the others is what lets a copy be charged to whoever owns what was copied.
3. **Charging.** A probe charges the holder whose work it copies, whoever's caption produced it:
   when Noto's "red apple" caption yields a reproduction of Twemoji's red apple, Twemoji's holder
   is charged, not Noto's. For holder h with works W(h) and n_h probes of its own, over the P
   probes of the round:

       c[p, h]              = max_{i ∈ W(h)} q[p, i]   P(probe p copies one of h's works)
       expected_copies[h]   = Σ_p c[p, h]               over ALL probes        ∈ [0, P]
       loss[h]              = expected_copies[h] / P                           ∈ [0, 1]
       copies_per_probe[h]  = expected_copies[h] / n_h  (0 when n_h = 0)       ∈ [0, P]

   ``loss`` is the share of the round's caption prompts whose generation copies one of h's
   works — the same quantity as the unconditional procedure's share of generations, measured
   on prompts that ask for the holders' works. With k probes per holder, a holder whose every
   probed work is reproduced when asked for has loss ≈ 1/H; one whose style the model
   reproduces whatever it is asked for approaches 1. ``copies_per_probe`` (reported, not used
   by the policy) is the replication rate of h's works per probe of h's captions; it can pass
   1 when other holders' captions copy h too. The share is used rather than that rate because
   every probe is compared with every work: the calibrated floor of unrelated pairs (a few
   thousandths per probe) summed over all P probes, divided by the few probes of a small holder,
   would be amplified P/n_h-fold. The max over a holder's works mirrors infringement (one
   copied work suffices). ``charged[a, b]`` = Σ_{p of a} c[p, b] shows whose captions prompted
   the copies of whose works; ``own_probability[p]`` = q[p, j_p] is the paper's pairwise
   comparison alone.

The unconditional ``ddpm`` backend cannot generate from captions; its rounds keep
:func:`offchain.copyright.loss.compute_copyright_losses` (the round's M generations against
every work, share of generations that copy h).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
from torch import Tensor

from offchain.copyright.calibration import Calibration, ReferenceSet, fit_calibration, score_pairs
from offchain.copyright.config import CopyrightConfig
from offchain.copyright.encoders import Encoder
from offchain.copyright.loss import CopyrightResult, pair_views, per_holder
from offchain.diffusion.tensors import clamped_image_batch
from offchain.errors import ConfigError, DataError

__all__ = ["PROBE_PROCEDURE", "choose_probe_works", "compute_caption_copyright"]

logger = logging.getLogger(__name__)

PROBE_PROCEDURE = "caption_probes"
"""``CopyrightResult.procedure`` of :func:`compute_caption_copyright`."""
_PROBE_STREAM = 0xC0
"""Stream id mixed into the probe draw's seed (independent of the round's other draws)."""


def choose_probe_works(
    holder_index: np.ndarray, n_holders: int, per_holder: int, seed: int
) -> np.ndarray:
    """The works whose captions a round's copyright stage regenerates: up to ``per_holder``
    per holder, drawn without replacement.

    Args:
        holder_index: int (N,), the holder in [0, ``n_holders``) of each training work.
        n_holders: H ≥ 1.
        per_holder: k ≥ 1; a holder with fewer works has all of them probed.
        seed: seed ≥ 0 of the draw (with a fixed stream id: ``numpy.random.default_rng([seed,
            0xC0])``), so the same round gives the same probes.

    Returns:
        int64 (P,), indices into the works, sorted by holder and then by index; P = Σ_h
        min(k, n_h).

    Raises:
        ConfigError: ``per_holder`` < 1, ``n_holders`` < 1 or a negative seed.
        DataError: ``holder_index`` not int (N,) in [0, H).
    """
    if not isinstance(per_holder, int | np.integer) or per_holder < 1:
        raise ConfigError(f"per_holder (copyright_probes) must be an int ≥ 1, got {per_holder!r}")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be an int ≥ 0, got {seed!r}")
    idx = _checked_holder_index(holder_index, None, n_holders)
    rng = np.random.default_rng([int(seed), _PROBE_STREAM])
    picks = []
    for h in range(n_holders):
        works = np.flatnonzero(idx == h)
        if works.size:
            chosen = rng.choice(works, size=min(int(per_holder), works.size), replace=False)
            picks.append(np.sort(chosen))
    return np.concatenate(picks).astype(np.int64) if picks else np.zeros(0, dtype=np.int64)


def _checked_holder_index(holder_index: object, n: int | None, n_holders: object) -> np.ndarray:
    if not isinstance(n_holders, int | np.integer) or n_holders < 1:
        raise ConfigError(f"n_holders must be an int ≥ 1, got {n_holders!r}")
    idx = np.asarray(holder_index)
    if idx.ndim != 1 or (n is not None and idx.shape[0] != n) or idx.shape[0] < 1:
        want = "(N ≥ 1,)" if n is None else f"({n},)"
        raise DataError(f"holder_index must be int {want}, got {idx.dtype} {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise DataError(f"holder_index must be integers, got {idx.dtype}")
    if idx.min() < 0 or idx.max() >= n_holders:
        raise DataError(
            f"holder_index must lie in [0, {n_holders}), got [{idx.min()}, {idx.max()}]"
        )
    return idx.astype(np.int64)


def _checked_probes(
    works: object, probe_generations: object, probe_work_index: object
) -> tuple[Tensor, Tensor, np.ndarray]:
    """(works (N, C, S, S), probes (P, C, S, S), probed work of each probe int64 (P,))."""
    w = clamped_image_batch(works, "works")
    g = clamped_image_batch(probe_generations, "probe_generations")
    if g.shape[1:] != w.shape[1:]:
        raise DataError(
            f"probe_generations {tuple(g.shape[1:])} and works {tuple(w.shape[1:])} differ in "
            "image shape"
        )
    j = np.asarray(probe_work_index)
    if j.shape != (g.shape[0],) or not np.issubdtype(j.dtype, np.integer):
        raise DataError(
            f"probe_work_index must be int ({g.shape[0]},) (one work per probe), got "
            f"{j.dtype} {j.shape}"
        )
    if j.min() < 0 or j.max() >= w.shape[0]:
        raise DataError(
            f"probe_work_index must lie in [0, {w.shape[0]}), got [{j.min()}, {j.max()}]"
        )
    return w, g, j.astype(np.int64)


def compute_caption_copyright(
    encoder: Encoder,
    works: Tensor | np.ndarray,
    work_holder_index: np.ndarray,
    n_holders: int,
    probe_work_index: np.ndarray,
    probe_generations: Tensor | np.ndarray,
    cfg: CopyrightConfig | None = None,
    calibration: Calibration | None = None,
) -> CopyrightResult:
    """Each holder's copyright loss from generations of its works' captions (module docstring).

    Args:
        encoder: the semantic view's :class:`~offchain.copyright.encoders.Encoder` (the round's
            :class:`~offchain.copyright.encoders.UNetFeatureEncoder`, which runs a conditional
            UNet with the null caption, on the latents of the pixels for a latent model such as
            ``sd-lora``, or SSCD/DINO/CLIP from a local path). Works and probes are given as
            pixels whatever the model denoises.
        works: float32 (N, C, S, S) in [−1, 1], the round's training works (C = 1 or 3).
        work_holder_index: int (N,), holder in [0, ``n_holders``) of each work.
        n_holders: H ≥ 1.
        probe_work_index: int (P,), P ≥ 1: the work j_p whose caption generated probe p
            (:func:`choose_probe_works`).
        probe_generations: float32 (P, C, S, S) in [−1, 1], g_p generated from j_p's caption.
        cfg: :class:`CopyrightConfig` (defaults when None): the uncalibrated similarity's
            weights and, when no calibration is passed, the fit's settings.
        calibration: a :class:`Calibration` fitted for ``encoder`` and this image shape; None:
            fitted now on ``works`` (augmented copies, crops included in the evaluation,
            against unrelated works; ``fit_calibration``).

    Returns:
        :class:`CopyrightResult` with ``procedure = "caption_probes"``, M = P: ``loss`` (H,) =
        expected copies of h's works / P, ``expected_copies``, ``copies_per_probe``,
        ``n_probes``, ``own_probability`` (P,), ``own_copies`` (H,), ``charged`` (H, H), pair
        matrices (P, N) and ``closest_work`` (H, P). ``semantic``/``perceptual``/``tiled_l2``
        are means over h's own probes of the feature between the probe and its own work (0
        without probes).

    Raises:
        DataError: bad shapes or values (outside [−1, 1] beyond 1e-3, non-finite), holder or
            work indices out of range, or (when fitting) too few distinct works.
        ConfigError: ``n_holders`` < 1, bad settings, or a calibration of another encoder or
            image shape.
    """
    cfg = cfg if cfg is not None else CopyrightConfig()
    w, g, j = _checked_probes(works, probe_generations, probe_work_index)
    idx = _checked_holder_index(work_holder_index, w.shape[0], n_holders)
    if calibration is None:
        calibration = fit_calibration(encoder, w, idx, cfg)
    ref = ReferenceSet(encoder, w, calibration.features)
    scores = score_pairs(encoder, g, ref, calibration)
    sem, perc, sim = pair_views(scores, cfg)
    totals, n_rep, n_copy, closest = per_holder(scores, sem, perc, sim, idx, n_holders, calibration)

    p, own = scores.probability, np.arange(j.size)
    probe_holder = idx[j]
    n_probes = np.bincount(probe_holder, minlength=n_holders).astype(np.int64)
    own_probability = p[own, j]
    charged = np.zeros((n_holders, n_holders), dtype=np.float64)
    for h in range(n_holders):
        cols = np.flatnonzero(idx == h)
        if cols.size:
            charged[:, h] = np.bincount(
                probe_holder, weights=p[:, cols].max(axis=1), minlength=n_holders
            )
    counts = np.maximum(n_probes, 1)
    own_copies = np.bincount(probe_holder, weights=own_probability, minlength=n_holders)
    own_stats = {
        "semantic": np.bincount(probe_holder, weights=sem[own, j], minlength=n_holders) / counts,
        "perceptual": np.bincount(probe_holder, weights=perc[own, j], minlength=n_holders) / counts,
        "tiled_l2": np.bincount(probe_holder, weights=scores.tiled_l2[own, j], minlength=n_holders)
        / counts,
    }
    loss = np.clip(totals["expected"] / j.size, 0.0, 1.0)
    per_probe = np.where(n_probes > 0, totals["expected"] / counts, 0.0)
    logger.info(
        "caption-probe copyright loss: P=%d N=%d H=%d, max expected copies %.2f, max loss %.3f",
        j.size,
        w.shape[0],
        n_holders,
        float(totals["expected"].max()),
        float(loss.max()),
    )
    result = CopyrightResult.build(
        loss, {**totals, **own_stats}, n_rep, n_copy, closest, scores, sem, perc, sim, calibration
    )
    return replace(
        result,
        procedure=PROBE_PROCEDURE,
        probe_work_index=j,
        n_probes=n_probes,
        own_probability=own_probability.astype(np.float64),
        own_copies=own_copies.astype(np.float64),
        copies_per_probe=per_probe.astype(np.float64),
        charged=charged,
    )
