"""Model quality without Inception weights: FID in a reference classifier's feature space.

* :mod:`offchain.quality.datasets`   held-out real images (holder images excluded) and splits
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
from offchain.quality.datasets import (
    REFERENCE_DATASETS,
    exclude_images,
    held_out_images,
    reference_dataset,
    split_reference,
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

__all__ = [
    "QUALITY_METRIC",
    "REFERENCE_DATASETS",
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
    "reference_dataset",
    "reference_stats",
    "split_reference",
    "train_reference_classifier",
]
