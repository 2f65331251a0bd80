"""Model quality without Inception weights: FID in a reference classifier's feature space.

* :mod:`offchain.quality.held_out`   held-out real images (holder images excluded) and splits;
  the datasets themselves come from the registry :mod:`offchain.data.datasets`
* :mod:`offchain.quality.classifier` the reference CNN: training, loading, features
* :mod:`offchain.quality.fid`        Fréchet distance, cached reference statistics, the report

See docs/quality.md.
"""

from offchain.quality.classifier import (
    ClassifierConfig,
    ReferenceClassifier,
    features,
    load_reference_classifier,
    predict_proba,
    train_reference_classifier,
)
from offchain.quality.fid import (
    QUALITY_METRIC,
    FeatureStats,
    QualityReference,
    TorchScriptFeatureExtractor,
    feature_stats,
    fid,
    frechet_distance,
    prepare_reference,
    quality_report,
    reference_stats,
)
from offchain.quality.held_out import exclude_images, held_out_images, split_reference

__all__ = [
    "QUALITY_METRIC",
    "ClassifierConfig",
    "FeatureStats",
    "QualityReference",
    "ReferenceClassifier",
    "TorchScriptFeatureExtractor",
    "exclude_images",
    "feature_stats",
    "features",
    "fid",
    "frechet_distance",
    "held_out_images",
    "load_reference_classifier",
    "predict_proba",
    "prepare_reference",
    "quality_report",
    "reference_stats",
    "split_reference",
    "train_reference_classifier",
]
