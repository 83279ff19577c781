"""The linear probe (kaiko paper, Table VI; eva): seeded linear heads on frozen pooled embeddings,
early-stopped on validation balanced accuracy, with optional label-efficiency curves."""

from __future__ import annotations

import time
from typing import Any, Callable

from evalkit.embed.features import FeatureSet
from evalkit.evaluations.base import Evaluation, EvaluationResult
from evalkit.evaluations.registry import EVALUATIONS
from evalkit.evaluations.rows import intervals, labelled_rows, pooled_rows, predictions, representation
from evalkit.heads.label_efficiency import LabelEfficiencyConfig, label_efficiency, whole_set_fits
from evalkit.heads.linear import LinearProbeConfig, fit_linear_probe
from evalkit.stats.config import StatsConfig
from evalkit.task import Task


@EVALUATIONS.register("linear_probe")
class LinearProbe(Evaluation):
    """Seeded linear probes on pooled embeddings, with label-efficiency curves when asked."""

    name = "linear_probe"
    options = {"head": (LinearProbeConfig, "the linear-probe protocol"),
               "fewshot": (LabelEfficiencyConfig, "label-efficiency curves (off by default)")}
    metrics = ("balanced_accuracy", "accuracy", "f1_macro", "auroc_macro")
    primary_metric = "balanced_accuracy"

    @property
    def protocol(self) -> str:
        return self.config["head"].protocol

    @property
    def n_runs(self) -> int:
        return self.config["head"].n_runs

    def features(self, task: Task) -> dict[str, FeatureSet]:
        return pooled_rows(task)

    def fit(self, task: Task, data: dict[str, Any], stats: StatsConfig,
            log: Callable[[str], None]) -> EvaluationResult:
        head: LinearProbeConfig = self.config["head"]
        fewshot: LabelEfficiencyConfig = self.config["fewshot"]
        rows = labelled_rows(task, data)
        log(f"{task.name}: fitting {head.n_runs} linear probe runs ({head.protocol}) on {len(rows.train[1])} "
            f"embeddings of size {rows.dim}")
        probe = fit_linear_probe(rows.train, rows.val, rows.num_classes, head, evaluate=rows.evaluate)
        settings = {**probe.settings, "best_epochs": probe.best_epochs, "stopped_epochs": probe.stopped_epochs}
        result = EvaluationResult(probe.metrics, rows.num_classes, settings, intervals(rows, probe.probs, stats),
                                  predictions(rows, probe.probs), representation=representation(data),
                                  warnings=rows.warnings)
        if fewshot.enabled:
            start = time.perf_counter()
            result.curves["label_efficiency"] = label_efficiency(
                rows.train, rows.val, rows.evaluate, rows.num_classes, fewshot, head, stats, rows.ids[task.train_split],
                log, known=whole_set_fits(probe, len(rows.train[1])))
            result.timing["label_efficiency_s"] = round(time.perf_counter() - start, 3)
        return result
