"""What every reported metric declares about itself, read by ``fit``, ``report``, ``regress`` and ranking.

As torchmetrics' ``higher_is_better``: a metric's direction and bounds are data on the metric,
never assumed by a reader or guessed from its name. ``computed_by`` is the dotted path of the
one function that computes it (the point estimate, early stopping and the bootstrap all call
it); results.json records it beside every number.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

from evalkit.registry import Registry


@dataclass(frozen=True)
class MetricSpec:
    """One metric's metadata.

    Args:
        name: the key in results.json (``balanced_accuracy``).
        higher_is_better: ``True``/``False``; ``None`` for a metric with no better end (reported, never ranked).
        lower: the smallest possible value (``None``: unbounded).
        upper: the largest possible value (``None``: unbounded).
        computed_by: dotted path of the function that computes it.
        description: one line for tables and docs.
    """

    name: str
    higher_is_better: bool | None
    lower: float | None
    upper: float | None
    computed_by: str
    description: str

    def function(self) -> Callable[..., Any]:
        module, _, attr = self.computed_by.rpartition(".")
        return getattr(importlib.import_module(module), attr)

    def best(self, values: dict[str, float]) -> str | None:
        """The key of the best finite value (first on ties); ``None`` when none is finite or the metric has no direction."""
        if self.higher_is_better is None:
            return None
        finite = {key: value for key, value in values.items() if value is not None and math.isfinite(value)}
        if not finite:
            return None
        pick = max if self.higher_is_better else min
        return pick(finite, key=finite.__getitem__)

    def worse_by(self, baseline: float, new: float) -> float:
        """How much worse ``new`` is than ``baseline`` in this metric's direction (negative: better)."""
        return baseline - new if self.higher_is_better is not False else new - baseline

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


METRICS: Registry[MetricSpec] = Registry("metric")


def _add(name: str, higher_is_better: bool | None, lower: float | None, upper: float | None, computed_by: str,
         description: str) -> None:
    METRICS.add(name, MetricSpec(name, higher_is_better, lower, upper, computed_by, description))


_CLASSIFICATION = "evalkit.metrics.classification"
_add("balanced_accuracy", True, 0.0, 1.0, f"{_CLASSIFICATION}.balanced_accuracy",
     "mean recall over the classes present in the targets")
_add("accuracy", True, 0.0, 1.0, f"{_CLASSIFICATION}.accuracy", "share of correct predictions")
_add("f1_macro", True, 0.0, 1.0, f"{_CLASSIFICATION}.f1_macro",
     "F1 averaged over the classes present in the targets or predictions")
_add("auroc_macro", True, 0.0, 1.0, f"{_CLASSIFICATION}.auroc_macro",
     "one-vs-rest AUROC averaged over the classes with positives and negatives")
_SEGMENTATION = "evalkit.metrics.segmentation.segmentation_scores"
_add("dice", True, 0.0, 1.0, _SEGMENTATION, "Dice over the foreground classes, pixels pooled over the split")
_add("miou", True, 0.0, 1.0, _SEGMENTATION, "IoU over the foreground classes, pixels pooled over the split")
_add("dice_nucleus", True, 0.0, 1.0, "evalkit.metrics.segmentation.dice_nucleus",
     "binary Dice of any foreground class vs background, pixels pooled over the split")
_add("dice_per_image", True, 0.0, 1.0, "evalkit.metrics.segmentation.dice_per_image",
     "Dice per image over its foreground classes, averaged over images (MONAI's DiceMetric, eva)")
_REPRESENTATION = "evalkit.metrics.representation"
_add("rankme", True, 1.0, None, f"{_REPRESENTATION}.rankme_from_singular_values",
     "effective rank of the embeddings (Garrido et al. 2023)")
_add("odcorr", False, 0.0, 1.0, f"{_REPRESENTATION}.odcorr_from_row_gram",
     "root mean square correlation between the embeddings of different samples (kaiko.ai et al. 2024, eq. 1)")
_add("odcorr_excluded", None, 0.0, None, f"{_REPRESENTATION}.standardise_rows",
     "samples left out of ODCorr because their embedding has zero variance (a count, not ranked)")
_add("dimcorr", False, 0.0, 1.0, f"{_REPRESENTATION}.dimcorr_from_covariance",
     "root mean square correlation between different embedding dimensions (not the paper's ODCorr)")
_add("alpha_req", None, None, None, f"{_REPRESENTATION}.alpha_req_from_eigenvalues",
     "eigenspectrum decay exponent (Agrawal et al. 2022); best near 1, not ranked")


def per_class(spec: MetricSpec, class_name: str, prefix: str) -> MetricSpec:
    """``spec`` restricted to one class (``dice_<class>``): same direction, bounds and function."""
    return MetricSpec(f"{prefix}_{class_name}", spec.higher_is_better, spec.lower, spec.upper, spec.computed_by,
                      f"{spec.description}; class {class_name} only")
