"""Default attribution settings, defined once for every place that needs them.

:class:`offchain.config.Settings`, :class:`offchain.rounds.config.MLConfig`,
:class:`offchain.attribution.TrakConfig` and :class:`offchain.attribution.lds.LDSConfig` take
their defaults from here. Torch-free, so the CLI can import it at start-up.

Names of K: the user-facing setting is ``trak_timesteps`` (``Settings``, ``MLConfig``,
``LDSConfig``, ``CCOMP_TRAK_TIMESTEPS``); inside TRAK it is ``TrakConfig.num_timesteps``, and
the artifacts keep that spelling (``contributions.json``'s and TRAK ``meta.json``'s
``num_timesteps``). The one mapping between the two is
:meth:`offchain.attribution.trak_attributor.TrakAttributor.from_settings`.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_LAMBDA_REG",
    "DEFAULT_PROJ_DIM",
    "DEFAULT_TRAK_ENSEMBLE",
    "DEFAULT_TRAK_OUTPUT",
    "DEFAULT_TRAK_TIMESTEPS",
    "ENSEMBLE_SEED_STRIDE",
]

DEFAULT_PROJ_DIM = 512
"""Dimension of TRAK's random projection of the per-example gradients."""
DEFAULT_TRAK_TIMESTEPS = 4
"""K, the fixed timesteps the TRAK output function averages over."""
DEFAULT_TRAK_OUTPUT = "dtrak"
"""TRAK output function: ``dtrak`` (‖ε_θ‖², D-TRAK) or ``loss`` (the denoising loss)."""
DEFAULT_TRAK_ENSEMBLE = 1
"""TRAK ensemble size E (independent projection and noise seeds, scores averaged)."""
DEFAULT_LAMBDA_REG = 1e-2
"""TRAK ridge term, relative to the mean eigenvalue of ΦᵀΦ."""
ENSEMBLE_SEED_STRIDE = 1000
"""Member k of a TRAK ensemble uses seed ``seed + ENSEMBLE_SEED_STRIDE · k`` (k = 0..E−1)."""
