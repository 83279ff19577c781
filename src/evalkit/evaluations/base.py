"""The evaluation contract: what a task type declares and does, so that a new one is one file.

An evaluation (eva's "evaluation session", at evalkit's size) declares

- ``name``: its registry name, which task configs and ``--evaluation`` use;
- ``options``: its typed config, as CLI option groups (``--head.*``), present only on a run of
  this evaluation; ``predict_options`` the groups that also decide what ``predict`` embeds;
- ``metrics`` and ``primary_metric``: names in :data:`evalkit.metrics.spec.METRICS`, whose
  metadata (direction, bounds, computing function) ``report``, ``regress`` and ranking read;
- :meth:`features`: what ``predict`` must embed for each split (pooled rows, crop pools, grids);
- :meth:`fit`: one function from the cached features to per-seed metrics, predictions and curves.

The pipeline (:mod:`evalkit.pipeline`) does everything else the same way for every evaluation:
the one cache writer fills the features, one function writes the run record.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from evalkit.embed.features import FeatureSet
from evalkit.errors import EvalkitError
from evalkit.metrics.spec import METRICS, MetricSpec
from evalkit.predictions import SplitClassMaps, SplitPredictions
from evalkit.stats.config import StatsConfig
from evalkit.task import Task


@dataclass
class EvaluationResult:
    """What one :meth:`Evaluation.fit` returns; the pipeline turns it into the run record.

    Attributes:
        metrics: split -> metric -> one value per seeded run.
        num_classes: classes of the task.
        settings: the resolved settings of the fit (batch size, lr, best epochs, ...), recorded once.
        intervals: split -> metric -> (low, high) confidence interval of the mean over runs, where computed.
        predictions: split -> every run's predictions (predictions.h5): class probabilities or class maps.
        curves: named curves (label efficiency, training curves).
        per_class: split -> per-class rows.
        representation: split -> label-free metrics of the features (RankMe, ODCorr, ...).
        metric_info: metadata of metrics not in the registry (per-class columns).
        artifacts: file name -> writer of an extra file in the run folder (plots).
        timing: seconds of the evaluation's parts beyond the whole fit (label-efficiency curves, ...).
        warnings: lines about the data that the numbers depend on (a class without training samples, ...).
    """

    metrics: dict[str, dict[str, list[float]]]
    num_classes: int
    settings: dict[str, Any]
    intervals: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    predictions: dict[str, SplitPredictions | SplitClassMaps] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)
    per_class: dict[str, Any] = field(default_factory=dict)
    representation: dict[str, dict[str, float | None]] = field(default_factory=dict)
    metric_info: dict[str, MetricSpec] = field(default_factory=dict)
    artifacts: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class Evaluation(ABC):
    """Base of every evaluation; an instance holds the option groups of one run."""

    name: ClassVar[str]
    options: ClassVar[dict[str, tuple[type, str]]]  # group -> (typed config class, help)
    predict_options: ClassVar[tuple[str, ...]] = ()
    metrics: ClassVar[tuple[str, ...]]
    primary_metric: ClassVar[str]

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - set(self.options)
        if unknown:
            raise EvalkitError(f"evaluation '{self.name}' has no option group {sorted(unknown)}; its groups: "
                               f"{', '.join(self.options)}")
        self.config = {group: options.get(group) or cls() for group, (cls, _) in self.options.items()}

    @property
    @abstractmethod
    def protocol(self) -> str:
        """The label of the fitted protocol (``sgd_kaiko``, ``mask2former``); runs of two protocols never regress
        against each other."""

    @property
    @abstractmethod
    def n_runs(self) -> int:
        """Seeded runs per fit."""

    @abstractmethod
    def features(self, task: Task) -> dict[str, FeatureSet]:
        """split -> what ``predict`` embeds for it."""

    @abstractmethod
    def fit(self, task: Task, data: dict[str, Any], stats: StatsConfig,
            log: Callable[[str], None]) -> EvaluationResult:
        """Fit on ``data`` (split -> what :meth:`FeatureSet.read` returned) and score every evaluated split."""

    def metric_info(self, result: EvaluationResult) -> dict[str, dict[str, Any]]:
        """The metadata of every metric in ``result`` (metrics and representation)."""
        names = {name for per_split in result.metrics.values() for name in per_split}
        names |= {name for per_split in result.representation.values() for name in per_split}
        return {name: (result.metric_info.get(name) or METRICS.get(name)).as_dict() for name in sorted(names)}
