"""The ``trak`` attributor: TRAK / D-TRAK scores (:mod:`offchain.attribution.trak`) as an
:class:`~offchain.attribution.base.Attributor`, with the TRAK ensemble for E > 1."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from offchain.attribution.defaults import DEFAULT_TRAK_ENSEMBLE, ENSEMBLE_SEED_STRIDE
from offchain.attribution.trak import (
    TrakConfig,
    compute_trak_ensemble,
    compute_trak_scores,
    holder_contributions,
)
from offchain.diffusion.backend import DenoisingModel
from offchain.errors import ConfigError

__all__ = ["TrakAttributor"]


class TrakAttributor:
    """TRAK with the D-TRAK or loss output function, one checkpoint, E seeds.

    Args:
        config: :class:`TrakConfig` (its ``seed`` is replaced by each call's); None: defaults.
        ensemble: E ≥ 1; E > 1 averages E members with seeds ``seed + 1000·k``
            (:func:`compute_trak_ensemble`), E = 1 is :func:`compute_trak_scores`.
    """

    name = "trak"

    def __init__(self, config: TrakConfig | None = None, ensemble: int = DEFAULT_TRAK_ENSEMBLE):
        if not isinstance(ensemble, int) or ensemble < 1:
            raise ConfigError(f"trak ensemble must be an int ≥ 1, got {ensemble!r}")
        self.config = config if config is not None else TrakConfig()
        self.ensemble = ensemble

    @classmethod
    def from_settings(cls, settings: Any) -> TrakAttributor:
        """Reads ``proj_dim``, ``trak_timesteps`` (K, :attr:`TrakConfig.num_timesteps`),
        ``trak_output`` and ``trak_ensemble``; the rest are :class:`TrakConfig` defaults."""
        config = TrakConfig(
            proj_dim=settings.proj_dim,
            num_timesteps=settings.trak_timesteps,
            output=settings.trak_output,
        )
        return cls(config, ensemble=settings.trak_ensemble)

    def scores(
        self,
        model: DenoisingModel,
        train_images: Any,
        targets: Any,
        out_dir: Path,
        *,
        seed: int,
        progress: bool = True,
    ) -> np.ndarray:
        """τ float32 (M, N) of ``model.unet`` (its scheduler's ᾱ), saved as
        ``out_dir/scores.npy`` with TRAK's resumable artifacts (see :mod:`offchain.attribution.trak`)."""
        cfg = replace(self.config, seed=seed)
        if self.ensemble > 1:
            seeds = [seed + ENSEMBLE_SEED_STRIDE * k for k in range(self.ensemble)]
            return compute_trak_ensemble(
                [(model.unet, model.scheduler)],
                train_images,
                targets,
                out_dir,
                cfg,
                seeds=seeds,
                progress=progress,
            )
        return compute_trak_scores(
            model.unet, model.scheduler, train_images, targets, out_dir, cfg, progress=progress
        )

    def holder_contributions(
        self, scores: np.ndarray, holder_index: np.ndarray, n_holders: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """:func:`~offchain.attribution.trak.holder_contributions`: Σ τ over a holder's images,
        mean over targets; the positive parts normalised to sum to 1."""
        return holder_contributions(scores, holder_index, n_holders)

    def record(self) -> dict[str, Any]:
        """``output``, ``proj_dim``, ``num_timesteps`` (K) and ``ensemble`` (E)."""
        return {
            "output": self.config.output,
            "proj_dim": self.config.proj_dim,
            "num_timesteps": self.config.num_timesteps,
            "ensemble": self.ensemble,
        }
