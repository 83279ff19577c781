"""Metrics reported by the heads; their direction and bounds are in :mod:`evalkit.metrics.spec`."""

from evalkit.metrics.classification import (
    CLASSIFICATION_METRICS,
    PRIMARY_METRIC,
    AurocBuckets,
    ClassificationScorer,
    accuracy,
    auroc_buckets,
    auroc_macro,
    balanced_accuracy,
    classification_metrics,
    confusion_cells,
    confusion_matrices,
    f1_macro,
    weighted_confusion,
)

__all__ = [
    "CLASSIFICATION_METRICS",
    "PRIMARY_METRIC",
    "AurocBuckets",
    "ClassificationScorer",
    "accuracy",
    "auroc_buckets",
    "auroc_macro",
    "balanced_accuracy",
    "classification_metrics",
    "confusion_cells",
    "confusion_matrices",
    "f1_macro",
    "weighted_confusion",
]
