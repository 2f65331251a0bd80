"""Copyright stage: each holder's copyright loss from how closely the round's samples copy its works.

Semantic (extrinsic test) and perceptual (intrinsic test) similarities per pair, combined and
maxed over a holder's works; see :mod:`offchain.copyright.loss`.
"""

from offchain.copyright.loss import CopyrightConfig, CopyrightResult, compute_copyright_losses
from offchain.copyright.similarity import (
    Encoder,
    UNetFeatureEncoder,
    perceptual_similarity,
    semantic_similarity,
    ssim_matrix,
)

__all__ = [
    "CopyrightConfig",
    "CopyrightResult",
    "Encoder",
    "UNetFeatureEncoder",
    "compute_copyright_losses",
    "perceptual_similarity",
    "semantic_similarity",
    "ssim_matrix",
]
