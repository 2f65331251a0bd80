"""Attribution stage: TRAK scores of a round's generated samples against the training images.

TRAK (Park et al., ICML 2023) with the D-TRAK output function for diffusion models (Zheng et al.,
ICLR 2024); per-holder contributions are the scores summed over a holder's images.
Featurization (per-example gradients, projection, resumable store) is in
:mod:`offchain.attribution.featurize`, the kernel and scores in :mod:`offchain.attribution.kernel`.
"""

from offchain.attribution.model_output import (
    DiffusionLossOutput,
    DiffusionModelOutput,
    DTrakOutput,
    make_model_output,
    make_noise,
    uniform_timesteps,
)
from offchain.attribution.trak import (
    TrakConfig,
    compute_trak_ensemble,
    compute_trak_scores,
    holder_contributions,
)

__all__ = [
    "DTrakOutput",
    "DiffusionLossOutput",
    "DiffusionModelOutput",
    "TrakConfig",
    "compute_trak_ensemble",
    "compute_trak_scores",
    "holder_contributions",
    "make_model_output",
    "make_noise",
    "uniform_timesteps",
]
