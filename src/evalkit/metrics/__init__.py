"""Metrics reported by the heads."""

from evalkit.metrics.classification import METRICS, PRIMARY_METRIC, balanced_accuracy_runs, classification_metrics

__all__ = ["METRICS", "PRIMARY_METRIC", "balanced_accuracy_runs", "classification_metrics"]
