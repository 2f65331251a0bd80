"""Each holder's copyright loss for a round: the expected number of its works' copies.

Legal grounding (docs/copyright.md §1 "From the legal test to features"). Infringement needs
*access* and *substantial similarity*. Access is given: every holder work in the round's
training set was seen by the model. Substantial similarity in US (Ninth Circuit) practice has
an **extrinsic** test (objective comparison of protected expression → embedding cosine) and an
**intrinsic** test (the ordinary observer's total concept and feel → SSIM); near-exact
reproduction by the tiled ℓ2 distance of Carlini et al. (2023), absolute and relative to the
nearest works. A :class:`~offchain.copyright.calibration.Calibration` turns the features of a
pair (generated sample m, work i) into

    p[m, i] = P(m substantially copies i)                    ∈ [0, 1]

fitted on augmented copies of the works against unrelated works (hard, same-class negatives
included), with documented ``replication`` and ``copy`` thresholds. For holder h with works
W(h) and the round's M generations:

    expected_copies[h] = Σ_m max_{i ∈ W(h)} p[m, i]            ∈ [0, M]
    share[h]           = expected_copies[h] / M                 ∈ [0, 1]   (= ``loss``)
    weighted[h]        = Σ_m max_{i ∈ W(h)} p[m, i] · s[m, i]   ∈ [0, M]
    n_replications[h]  = #{m : max_{i ∈ W(h)} p[m, i] ≥ t_replication}
    n_copies[h]        = #{m : max_{i ∈ W(h)} p[m, i] ≥ t_copy}   (0 when t_copy is None)

``expected_copies`` is the expected number of generations that substantially copy one of h's
works, if the per-generation events were taken at their calibrated probability; the max over
works mirrors infringement (one copied work suffices, a holder's other works do not dilute it).
``s[m, i] = w_semantic · max(cos, 0) + w_perceptual · max(SSIM, 0)`` ∈ [0, 1] is the
uncalibrated similarity (the earlier score), so ``weighted`` discounts barely-passing copies.
Holders without works get 0 (and ``closest_work`` −1). ``loss`` = ``share`` is what the round's
policy reads (docs/copyright.md §3 "Holder copyright loss": the expected number, or share, of
generations that substantially copy one of the holder's works).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from offchain.copyright.calibration import (
    Calibration,
    PairScores,
    ReferenceSet,
    fit_calibration,
    score_pairs,
)
from offchain.copyright.config import CopyrightConfig, FeatureSettings
from offchain.copyright.encoders import Encoder, UNetFeatureEncoder
from offchain.diffusion.tensors import clamped_image_batch
from offchain.errors import ConfigError, DataError

__all__ = ["CopyrightResult", "compute_copyright_losses", "pair_views", "per_holder"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CopyrightResult:
    """Copyright loss of one round. H holders, M generated samples, N training works."""

    loss: np.ndarray
    """float64 (H,) in [0, 1]: ``share`` = expected_copies / M (what the policy reads)."""
    expected_copies: np.ndarray
    """float64 (H,) in [0, M]: Σ_m max_{i∈W(h)} p[m, i]."""
    weighted: np.ndarray
    """float64 (H,) in [0, M]: Σ_m max_{i∈W(h)} p[m, i] · s[m, i]."""
    n_replications: np.ndarray
    """int64 (H,): generations whose max p over W(h) is ≥ the replication threshold."""
    n_copies: np.ndarray
    """int64 (H,): generations whose max p over W(h) is ≥ the copy threshold (0 if None)."""
    semantic: np.ndarray
    """float64 (H,) in [0, 1]: mean over m of max_{i∈W(h)} max(cos, 0) (component statistic)."""
    perceptual: np.ndarray
    """float64 (H,) in [0, 1]: mean over m of max_{i∈W(h)} max(SSIM, 0)."""
    tiled_l2: np.ndarray
    """float64 (H,) in [0, 2]: mean over m of min_{i∈W(h)} tiled ℓ2 (0 for holders without
    works)."""
    pair_probability: np.ndarray
    """float32 (M, N) in [0, 1]: p[m, i]."""
    pair_similarity: np.ndarray
    """float32 (M, N) in [0, 1]: the uncalibrated s[m, i]."""
    pair_semantic: np.ndarray
    """float32 (M, N) in [0, 1]: max(centered cosine, 0)."""
    pair_perceptual: np.ndarray
    """float32 (M, N) in [0, 1]: max(SSIM, 0)."""
    pair_tiled_l2: np.ndarray
    """float32 (M, N) in [0, 2]: tiled ℓ2 distance."""
    closest_work: np.ndarray
    """int64 (H, M): for each holder and generation, the index i (into the training works) of
    the holder's work with the highest p (by logit), or −1 for a holder without works."""
    calibration: Calibration
    """The calibration used (fitted on the fly when none was passed)."""
    n_generations: int
    """M."""
    procedure: str = "generations"
    """``"generations"`` (:func:`compute_copyright_losses`: the round's M samples against every
    work) or ``"caption_probes"`` (:func:`offchain.copyright.probes.compute_caption_copyright`:
    M = P generations from works' captions, the fields below set)."""
    probe_work_index: np.ndarray | None = None
    """int64 (P,): the work whose caption generated each probe (caption probes only)."""
    n_probes: np.ndarray | None = None
    """int64 (H,): probes generated from each holder's captions (caption probes only)."""
    own_probability: np.ndarray | None = None
    """float64 (P,) in [0, 1]: p[p, j_p], each probe against its own work — the paper's
    pairwise comparison (caption probes only)."""
    own_copies: np.ndarray | None = None
    """float64 (H,): Σ of ``own_probability`` over each holder's probes, the expected copies
    of the paper's pairwise test alone (caption probes only)."""
    copies_per_probe: np.ndarray | None = None
    """float64 (H,) ≥ 0: expected_copies / n_probes (0 without probes), the replication rate
    of h's works per probe of h's captions (caption probes only; reported, not the loss)."""
    charged: np.ndarray | None = None
    """float64 (H, H): ``charged[a, b]`` = expected copies of b's works among the probes of a's
    captions; column sums are ``expected_copies`` (caption probes only)."""

    @property
    def share(self) -> np.ndarray:
        """float64 (H,) in [0, 1]: expected_copies / M (the same array as ``loss``)."""
        return self.loss

    def summary(self) -> dict[str, Any]:
        """Per-holder statistics as JSON-ready lists (for a round's ``copyright.json``).

        Keys: ``loss`` (= share), ``expected_copies``, ``weighted``, ``n_replications``,
        ``n_copies``, ``semantic``, ``perceptual``, ``tiled_l2`` (each a list of H numbers),
        ``n_generations`` and ``calibration`` (encoder, feature names, coef, intercept,
        thresholds, prior, fit_seconds; the full record is ``calibration.to_dict()``). Caption
        probes add ``procedure`` (``"caption_probes"``), ``n_probes`` (H ints),
        ``own_copies`` (H: Σ of ``own_probability`` over each holder's probes),
        ``copies_per_probe`` (H),
        ``charged`` (H × H lists) and ``probe_work_index`` (P ints).
        """
        per_holder = {
            name: [float(v) for v in getattr(self, name)]
            for name in (
                "loss",
                "expected_copies",
                "weighted",
                "semantic",
                "perceptual",
                "tiled_l2",
            )
        }
        full = self.calibration.to_dict()
        summary = {
            **per_holder,
            "n_replications": [int(v) for v in self.n_replications],
            "n_copies": [int(v) for v in self.n_copies],
            "n_generations": int(self.n_generations),
            "calibration": {
                k: full[k]
                for k in (
                    "encoder",
                    "feature_names",
                    "coef",
                    "intercept",
                    "thresholds",
                    "prior",
                    "fit_seconds",
                )
            },
        }
        if self.procedure != "generations":
            summary.update(self._probe_summary())
        return summary

    @classmethod
    def build(
        cls,
        loss: np.ndarray,
        totals: dict[str, np.ndarray],
        n_rep: np.ndarray,
        n_copy: np.ndarray,
        closest: np.ndarray,
        scores: PairScores,
        sem: np.ndarray,
        perc: np.ndarray,
        sim: np.ndarray,
        calibration: Calibration,
    ) -> CopyrightResult:
        """The result of the ``"generations"`` procedure from the per-holder arrays (H,) of
        :func:`per_holder` (``totals``: expected, weighted, semantic, perceptual, tiled_l2), the
        loss (H,) and the pair matrices (M, N), stored as float32."""
        return cls(
            loss=loss,
            expected_copies=totals["expected"],
            weighted=totals["weighted"],
            n_replications=n_rep,
            n_copies=n_copy,
            semantic=totals["semantic"],
            perceptual=totals["perceptual"],
            tiled_l2=totals["tiled_l2"],
            pair_probability=scores.probability.astype(np.float32),
            pair_similarity=sim.astype(np.float32),
            pair_semantic=sem.astype(np.float32),
            pair_perceptual=perc.astype(np.float32),
            pair_tiled_l2=scores.tiled_l2.astype(np.float32),
            closest_work=closest,
            calibration=calibration,
            n_generations=int(scores.probability.shape[0]),
        )

    def _probe_summary(self) -> dict[str, Any]:
        """The caption-probe keys of :meth:`summary`."""
        fields = (
            self.probe_work_index,
            self.n_probes,
            self.own_copies,
            self.copies_per_probe,
            self.charged,
        )
        if any(f is None for f in fields):
            raise DataError(f"a {self.procedure!r} result lacks its probe fields")
        return {
            "procedure": self.procedure,
            "n_probes": [int(v) for v in self.n_probes],
            "own_copies": [float(v) for v in self.own_copies],
            "copies_per_probe": [float(v) for v in self.copies_per_probe],
            "charged": [[float(v) for v in row] for row in self.charged],
            "probe_work_index": [int(v) for v in self.probe_work_index],
        }


def _check_inputs(
    generated: object, train_images: object, holder_index: object, n_holders: object
) -> tuple[Tensor, Tensor, np.ndarray]:
    if not isinstance(n_holders, int | np.integer) or n_holders < 1:
        raise ConfigError(f"n_holders must be an int ≥ 1, got {n_holders!r}")
    gen = clamped_image_batch(generated, "generated")
    train = clamped_image_batch(train_images, "train_images")
    if gen.shape[1:] != train.shape[1:]:
        raise DataError(
            f"generated {tuple(gen.shape[1:])} and train_images {tuple(train.shape[1:])} "
            "differ in image shape"
        )
    idx = np.asarray(holder_index)
    if idx.shape != (train.shape[0],) or not np.issubdtype(idx.dtype, np.integer):
        raise DataError(
            f"holder_index must be int ({train.shape[0]},), got {idx.dtype} {idx.shape}"
        )
    if idx.min() < 0 or idx.max() >= n_holders:
        raise DataError(
            f"holder_index must lie in [0, {n_holders}), got [{idx.min()}, {idx.max()}]"
        )
    return gen, train, idx.astype(np.int64)


def _encoder_and_calibration(
    unet: torch.nn.Module,
    scheduler: object,
    train: Tensor,
    idx: np.ndarray,
    cfg: CopyrightConfig,
    settings: FeatureSettings,
    encoder: Encoder | None,
    calibration: Calibration | None,
) -> tuple[Encoder, Calibration]:
    """(encoder, calibration): the given ones, or the default UNet encoder and a calibration
    fitted now on ``train`` (N, C, S, S); warns when the calibration's feature settings differ."""
    if encoder is None:
        encoder = UNetFeatureEncoder(
            unet,
            scheduler,
            timestep=cfg.semantic_timestep,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
        )
    if calibration is None:
        calibration = fit_calibration(encoder, train, idx, cfg)
    elif calibration.features != settings:
        logger.warning(
            "using the calibration's feature settings %s instead of the config's %s",
            calibration.features,
            settings,
        )
    return encoder, calibration


def pair_views(scores: PairScores, cfg: CopyrightConfig) -> tuple[np.ndarray, ...]:
    """``(semantic⁺, perceptual⁺, s)``, float64 (M, N) each in [0, 1]: max(cos, 0), max(SSIM, 0)
    and the uncalibrated similarity s = w_semantic · semantic⁺ + w_perceptual · perceptual⁺."""
    sem = np.clip(scores.semantic, 0.0, 1.0)
    perc = np.clip(scores.ssim, 0.0, 1.0)
    sim = np.clip(cfg.w_semantic * sem + cfg.w_perceptual * perc, 0.0, 1.0)
    return sem, perc, sim


def per_holder(
    scores: PairScores,
    sem: np.ndarray,
    perc: np.ndarray,
    sim: np.ndarray,
    idx: np.ndarray,
    n_holders: int,
    calibration: Calibration,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Per-holder aggregates over the M query rows of the pair matrices (M, N).

    Returns:
        (float64 (H,) totals ``expected`` (Σ_m max_{i∈W(h)} p), ``weighted``, ``semantic``,
        ``perceptual``, ``tiled_l2`` (means over m of the max / min over W(h)); replications
        int64 (H,); copies int64 (H,); closest work int64 (H, M), −1 for holders without works).
    """
    p, z = scores.probability, scores.logit
    m = p.shape[0]
    out = {
        k: np.zeros(n_holders, dtype=np.float64)
        for k in ("expected", "weighted", "semantic", "perceptual", "tiled_l2")
    }
    n_rep = np.zeros(n_holders, dtype=np.int64)
    n_copy = np.zeros(n_holders, dtype=np.int64)
    closest = np.full((n_holders, m), -1, dtype=np.int64)
    for h in range(n_holders):
        cols = np.flatnonzero(idx == h)
        if cols.size == 0:
            continue
        best = z[:, cols].argmax(axis=1)
        closest[h] = cols[best]
        pmax = p[:, cols].max(axis=1)  # = p[rows, closest[h]] up to ties
        out["expected"][h] = float(pmax.sum())
        out["weighted"][h] = float((p[:, cols] * sim[:, cols]).max(axis=1).sum())
        out["semantic"][h] = float(sem[:, cols].max(axis=1).mean())
        out["perceptual"][h] = float(perc[:, cols].max(axis=1).mean())
        out["tiled_l2"][h] = float(scores.tiled_l2[:, cols].min(axis=1).mean())
        n_rep[h] = int(np.sum(pmax >= calibration.replication_threshold))
        if calibration.copy_threshold is not None:
            n_copy[h] = int(np.sum(pmax >= calibration.copy_threshold))
    return out, n_rep, n_copy, closest


def _share(expected: np.ndarray, m: int, n_works: int, n_holders: int) -> np.ndarray:
    """Loss (H,) in [0, 1]: expected copies (H,) over the M generations; logs a summary."""
    share = np.clip(expected / m, 0.0, 1.0)
    logger.info(
        "copyright loss: M=%d N=%d H=%d, max expected copies %.2f (share %.3f)",
        m,
        n_works,
        n_holders,
        float(expected.max()),
        float(share.max()),
    )
    return share


def compute_copyright_losses(
    unet: torch.nn.Module,
    scheduler: object,
    generated: Tensor | np.ndarray,
    train_images: Tensor | np.ndarray,
    holder_index: np.ndarray,
    n_holders: int,
    cfg: CopyrightConfig | None = None,
    encoder: Encoder | None = None,
    calibration: Calibration | None = None,
) -> CopyrightResult:
    """Per-holder copyright loss of a round's generations (see the module docstring).

    Args:
        unet: the round's ``diffusers.UNet2DModel`` (used by the default encoder only).
        scheduler: its ``DDPMScheduler``.
        generated: float32 (M, C, S, S) in [-1, 1], the round's samples.
        train_images: float32 (N, C, S, S) in [-1, 1], the holders' works.
        holder_index: int (N,), holder in [0, ``n_holders``) of each work.
        n_holders: H ≥ 1.
        cfg: :class:`CopyrightConfig`; defaults when None.
        encoder: an :class:`Encoder` for the semantic view; None: :class:`UNetFeatureEncoder`
            of ``unet`` at ``cfg.semantic_timestep``.
        calibration: a :class:`Calibration` fitted for this encoder (its feature settings are
            used); None: fitted now by
            :func:`~offchain.copyright.calibration.fit_calibration` on ``train_images`` with
            ``cfg`` (a few seconds for N ≈ 500 works of 16 × 16).

    Returns:
        :class:`CopyrightResult`.

    Raises:
        DataError: bad shapes, values outside [-1, 1] (beyond 1e-3), non-finite values, holder
            indices outside [0, H), an encoder output of the wrong shape, or (when fitting)
            fewer distinct works than ``cfg.calibration.min_works``.
        ConfigError: ``n_holders`` < 1, a bad setting, or a calibration fitted for another
            encoder or image shape.
    """
    cfg = cfg if cfg is not None else CopyrightConfig()
    gen, train, idx = _check_inputs(generated, train_images, holder_index, n_holders)
    settings = cfg.feature_settings()
    if min(gen.shape[2:]) < settings.ssim_win_size:
        raise DataError(f"images {tuple(gen.shape[2:])} are smaller than the SSIM window")
    encoder, calibration = _encoder_and_calibration(
        unet, scheduler, train, idx, cfg, settings, encoder, calibration
    )
    ref = ReferenceSet(encoder, train, calibration.features)
    scores = score_pairs(encoder, gen, ref, calibration)

    sem, perc, sim = pair_views(scores, cfg)
    out, n_rep, n_copy, closest = per_holder(scores, sem, perc, sim, idx, n_holders, calibration)
    share = _share(out["expected"], gen.shape[0], train.shape[0], n_holders)
    return CopyrightResult.build(
        share, out, n_rep, n_copy, closest, scores, sem, perc, sim, calibration
    )
