"""Attribution stage: scores of a round's generated samples against the training images.

Behind the :class:`Attributor` protocol and its registry (:mod:`offchain.attribution.base`).
The first attributor, ``trak``, is TRAK (Park et al., ICML 2023) with the D-TRAK output
function for diffusion models (Zheng et al., ICLR 2024); per-holder contributions are the
scores summed over a holder's images. Featurization (per-example gradients, projection,
resumable store) is in :mod:`offchain.attribution.featurize`, the kernel and scores in
:mod:`offchain.attribution.kernel`, the defaults in :mod:`offchain.attribution.defaults`.

Importing this package does not import torch: the protocol, the registry and the defaults are
loaded at once, the torch-backed names below on first access (PEP 562 ``__getattr__``), so the
CLI starts fast. This is the package's one place of deferred imports.
"""

from __future__ import annotations

from offchain.attribution.base import (
    SCORES_FILE,
    Attributor,
    attributor_names,
    get_attributor,
    register_attributor,
)
from offchain.attribution.defaults import (
    DEFAULT_LAMBDA_REG,
    DEFAULT_PROJ_DIM,
    DEFAULT_TRAK_ENSEMBLE,
    DEFAULT_TRAK_OUTPUT,
    DEFAULT_TRAK_TIMESTEPS,
    ENSEMBLE_SEED_STRIDE,
)
from offchain.registry import lazy_attributes

_LAZY = {
    "DTrakOutput": "offchain.attribution.model_output",
    "DiffusionLossOutput": "offchain.attribution.model_output",
    "DiffusionModelOutput": "offchain.attribution.model_output",
    "make_model_output": "offchain.attribution.model_output",
    "make_noise": "offchain.attribution.model_output",
    "uniform_timesteps": "offchain.attribution.model_output",
    "TrakConfig": "offchain.attribution.trak",
    "compute_trak_ensemble": "offchain.attribution.trak",
    "compute_trak_scores": "offchain.attribution.trak",
    "holder_contributions": "offchain.attribution.trak",
    "TrakAttributor": "offchain.attribution.trak_attributor",
}

__all__ = [
    "DEFAULT_LAMBDA_REG",
    "DEFAULT_PROJ_DIM",
    "DEFAULT_TRAK_ENSEMBLE",
    "DEFAULT_TRAK_OUTPUT",
    "DEFAULT_TRAK_TIMESTEPS",
    "ENSEMBLE_SEED_STRIDE",
    "SCORES_FILE",
    "Attributor",
    "attributor_names",
    "get_attributor",
    "register_attributor",
    *_LAZY,
]


__getattr__ = lazy_attributes(__name__, _LAZY)
