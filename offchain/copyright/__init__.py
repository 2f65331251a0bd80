"""Copyright stage: each holder's copyright loss from how likely the round's samples copy its works.

Per pair (generated sample, training work): semantic (extrinsic test), SSIM (intrinsic test) and
tiled ℓ2 (near-exact copy) features → a calibrated probability of substantial similarity
(:mod:`offchain.copyright.calibration`) → per holder the expected number of generations that
copy its works (:mod:`offchain.copyright.loss`), or, for a text-to-image round, the paper's
procedure: regenerate works from their captions and charge each copy to the holder whose work
it copies (:mod:`offchain.copyright.probes`). Settings: :mod:`offchain.copyright.config`;
encoders: :mod:`offchain.copyright.encoders`; augmentations of the calibration's positives:
:mod:`offchain.copyright.augment`.
"""

from offchain.copyright.augment import AUGMENTATIONS, augment
from offchain.copyright.calibration import (
    FEATURE_NAMES,
    Calibration,
    PairScores,
    ReferenceSet,
    choose_thresholds,
    copyright_calibration_report,
    fit_calibration,
    run_calibration,
    score_pairs,
)
from offchain.copyright.config import CalibrationConfig, CopyrightConfig, FeatureSettings
from offchain.copyright.encoders import (
    Encoder,
    HuggingFaceEncoder,
    TorchScriptEncoder,
    UNetFeatureEncoder,
    load_encoder,
)
from offchain.copyright.loss import CopyrightResult, compute_copyright_losses
from offchain.copyright.probes import (
    PROBE_PROCEDURE,
    choose_probe_works,
    compute_caption_copyright,
)
from offchain.copyright.similarity import (
    centered_cosine,
    perceptual_similarity,
    semantic_similarity,
    ssim_matrix,
    ssim_pairs,
    tiled_l2_matrix,
    tiled_l2_pairs,
)

__all__ = [
    "AUGMENTATIONS",
    "FEATURE_NAMES",
    "PROBE_PROCEDURE",
    "Calibration",
    "CalibrationConfig",
    "CopyrightConfig",
    "CopyrightResult",
    "Encoder",
    "FeatureSettings",
    "HuggingFaceEncoder",
    "PairScores",
    "ReferenceSet",
    "TorchScriptEncoder",
    "UNetFeatureEncoder",
    "augment",
    "centered_cosine",
    "choose_probe_works",
    "choose_thresholds",
    "compute_caption_copyright",
    "compute_copyright_losses",
    "copyright_calibration_report",
    "fit_calibration",
    "load_encoder",
    "perceptual_similarity",
    "run_calibration",
    "score_pairs",
    "semantic_similarity",
    "ssim_matrix",
    "ssim_pairs",
    "tiled_l2_matrix",
    "tiled_l2_pairs",
]
