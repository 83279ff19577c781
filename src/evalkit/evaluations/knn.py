"""kNN probe: a cosine k-nearest-neighbour vote on frozen pooled embeddings, no training.

The smallest complete evaluation, and the worked example of docs/evaluations.md: it reads the
same pooled rows as the linear probe, so its ``features`` reuse that cache. The vote is
deterministic, so ``n_runs`` is 1 and the spread over runs is 0; the bootstrap interval
carries the test-set uncertainty.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

from evalkit.embed.features import FeatureSet
from evalkit.errors import EvalkitError
from evalkit.evaluations.base import Evaluation, EvaluationResult
from evalkit.evaluations.registry import EVALUATIONS
from evalkit.evaluations.rows import intervals, labelled_rows, pooled_rows, predictions, representation
from evalkit.heads.nonparametric import TIE_BREAKS, TieBreak, knn
from evalkit.metrics.classification import classification_metrics
from evalkit.stats.config import StatsConfig
from evalkit.task import Task


@dataclass
class KnnConfig:
    """The kNN probe.

    Args:
        k: neighbours that vote (UNI's and evalkit's default 20; fewer when the training split is smaller).
        center: centre the features on the training mean before the cosine similarity (UNI's variant).
        tie_break: who wins a tied vote: ``similarity`` (the tied class with the larger summed cosine
            similarity; evalkit's default) or ``lowest_class`` (the lowest class id, as scikit-learn's
            ``KNeighborsClassifier`` and THUNDER). Named in the protocol only when not the default.
    """

    k: int = 20
    center: bool = False
    tie_break: TieBreak = "similarity"

    def __post_init__(self) -> None:
        if self.k < 1:
            raise EvalkitError(f"knn.k must be at least 1, got {self.k}")
        if self.tie_break not in TIE_BREAKS:
            raise EvalkitError(f"knn.tie_break must be one of {', '.join(TIE_BREAKS)}, got {self.tie_break!r}")


@EVALUATIONS.register("knn")
class KnnProbe(Evaluation):
    """Cosine k-nearest-neighbour vote on pooled embeddings; no training."""

    name = "knn"
    options = {"knn": (KnnConfig, "the kNN probe")}
    metrics = ("balanced_accuracy", "accuracy", "f1_macro", "auroc_macro")
    primary_metric = "balanced_accuracy"

    @property
    def protocol(self) -> str:
        cfg: KnnConfig = self.config["knn"]
        tie = "" if cfg.tie_break == "similarity" else f"_tie_{cfg.tie_break}"
        return f"knn_k{cfg.k}" + ("_centered" if cfg.center else "") + tie

    @property
    def n_runs(self) -> int:
        return 1

    def features(self, task: Task) -> dict[str, FeatureSet]:
        return pooled_rows(task)

    def fit(self, task: Task, data: dict[str, Any], stats: StatsConfig,
            log: Callable[[str], None]) -> EvaluationResult:
        cfg: KnnConfig = self.config["knn"]
        rows = labelled_rows(task, data)
        log(f"{task.name}: {cfg.k}-NN vote of {len(rows.train[1])} embeddings of size {rows.dim}")
        probs = {split: knn(*rows.train, x, rows.num_classes, k=cfg.k, center=cfg.center,
                             tie_break=cfg.tie_break).unsqueeze(0)
                 for split, (x, _) in rows.evaluate.items()}
        metrics = {split: {name: values.tolist() for name, values in
                           classification_metrics(p, rows.evaluate[split][1], rows.num_classes).items()}
                   for split, p in probs.items()}
        return EvaluationResult(metrics, rows.num_classes, asdict(cfg), intervals(rows, probs, stats),
                                predictions(rows, probs), representation=representation(data), warnings=rows.warnings)
