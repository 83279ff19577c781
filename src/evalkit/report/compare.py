"""Which differences between models are real: paired tests per column, Friedman/Nemenyi across them.

Per (task, split) column, the best model is the one the metric's recorded direction prefers
(``metric_info`` in results.json; a metric with no better end has no best and no tests), and
every other model is compared with it on the same test samples (both runs' predictions.h5): a
paired bootstrap of the metric difference, and McNemar's test on the run-averaged classifiers'
correctness. Across columns, the Friedman test on the models' ranks (in the same direction) and
the Nemenyi critical difference say whether the average ranks differ more than chance would
(Demšar 2006). A cell with a NaN or ±inf number (:func:`~evalkit.report.runs.non_finite`) is
never the best, is not tested, and its column is left out of the Friedman test; comparison.json
lists such cells under ``non_finite``. See docs/statistics.md.
"""

from __future__ import annotations

from typing import Any

import torch

from evalkit.metrics.classification import CLASSIFICATION_METRICS
from evalkit.predictions import SplitPredictions, read_predictions
from evalkit.report.runs import Run, columns, metric_spec, non_finite
from evalkit.stats import cliques, consensus_predictions, friedman, mcnemar, nemenyi_critical_difference, paired_bootstrap
from evalkit.stats.config import StatsConfig


def has_paired_test(metric: str) -> bool:
    """Whether the paired bootstrap can score ``metric`` from predictions.h5 (the classification metrics)."""
    return metric in CLASSIFICATION_METRICS


def _versus(a: SplitPredictions | None, other: Run, split: str, metric: str, stats: StatsConfig) -> dict[str, Any]:
    """``other`` against the column's best, whose predictions ``a`` are read once per column."""
    b = read_predictions(other.run_dir).get(split)
    if a is None or b is None:
        return {"note": "no predictions.h5 (run written before evalkit stored predictions)"}
    b = b.aligned_to(a.ids)
    paired = paired_bootstrap(a.target, a.probs, b.probs, a.probs.shape[-1], metric=metric,
                              n_resamples=stats.n_resamples, confidence=stats.confidence, seed=stats.seed)
    correct_a = consensus_predictions(a.probs) == a.target
    correct_b = consensus_predictions(b.probs) == a.target
    exact = mcnemar(correct_a, correct_b)
    return {"diff": paired["diff"], "ci_low": paired["ci_low"], "ci_high": paired["ci_high"],
            "p_value": paired["p_value"], "mcnemar_p": exact["p_value"], "mcnemar_method": exact["method"],
            "significant": bool(paired["p_value"] < stats.alpha)}


def _friedman(runs: list[Run], metric: str, cols: list[tuple[str, str]], higher_is_better: bool | None,
              stats: StatsConfig) -> dict[str, Any]:
    if higher_is_better is None:
        return {"note": f"{metric} has no better end (higher_is_better is null in its metric_info): not ranked"}
    models = sorted({run.label for run in runs})
    value = {(run.label, run.task, s): m[metric]["mean"] for run in runs for s, m in run.data["metrics"].items()
             if metric in m and not non_finite(m[metric])}
    blocks = [c for c in cols if all((model, *c) in value for model in models)]
    if len(models) < 2 or len(blocks) < 2:
        return {"note": f"needs at least 2 models scored on at least 2 common task/split columns "
                        f"(have {len(models)} model(s), {len(blocks)} common column(s))"}
    scores = torch.tensor([[value[(model, *c)] for model in models] for c in blocks], dtype=torch.float64)
    result = friedman(scores, higher_is_better=higher_is_better)
    cd = nemenyi_critical_difference(len(models), len(blocks), stats.alpha)
    ranks = {model: float(r) for model, r in zip(models, result["average_ranks"])}
    return {"k": len(models), "n_blocks": len(blocks), "blocks": [f"{t}/{s}" for t, s in blocks],
            "statistic": float(result["statistic"]), "p_value": float(result["p_value"]),
            "average_ranks": ranks, "critical_difference": float(cd), "alpha": stats.alpha,
            "cliques": [[models[i] for i in group] for group in cliques(result["average_ranks"], cd)]}


def compare_runs(runs: list[Run], metric: str, stats: StatsConfig) -> dict[str, Any]:
    """comparison.json: per column the best model and each other model's test against it, then Friedman."""
    spec = metric_spec(runs, metric)
    out: dict[str, Any] = {"metric": metric, "higher_is_better": spec.higher_is_better, "alpha": stats.alpha,
                           "confidence": stats.confidence, "n_resamples": stats.n_resamples, "columns": {}}
    cols = columns(runs, metric)
    out["non_finite"] = _non_finite_cells(runs, metric)
    for task, split in cols:
        scored = {run.label: run for run in runs if run.task == task and run.metric(split, metric) is not None}
        unusable = {label: non_finite(run.metric(split, metric)) for label, run in scored.items()}
        finite = {label: run for label, run in scored.items() if not unusable[label]}
        best_label = spec.best({label: run.metric(split, metric)["mean"] for label, run in finite.items()})
        if best_label is None:
            why = "has no better end" if spec.higher_is_better is None else "has no finite value in this column"
            out["columns"][f"{task}/{split}"] = {"best": None, "note": f"{metric} {why}: no best, no tests"}
            continue
        best = finite.pop(best_label)
        if has_paired_test(metric):
            best_predictions = read_predictions(best.run_dir).get(split)
            versus = {label: _versus(best_predictions, run, split, metric, stats) for label, run in finite.items()}
        else:
            versus = {label: {"note": f"no paired test of {metric} (the paired bootstrap scores classification "
                                      "metrics from predictions.h5)"} for label in finite}
        versus |= {label: {"note": f"non-finite {metric} ({', '.join(fields)}): not compared"}
                   for label, fields in unusable.items() if fields}
        out["columns"][f"{task}/{split}"] = {"best": best_label, "versus_best": dict(sorted(versus.items()))}
    out["friedman"] = _friedman(runs, metric, cols, spec.higher_is_better, stats)
    return out


def _non_finite_cells(runs: list[Run], metric: str) -> list[dict[str, Any]]:
    """Every (model, task/split) whose ``metric`` has a NaN or ±inf number, and which numbers."""
    return [{"model": run.label, "column": f"{run.task}/{split}", "fields": fields}
            for run in runs for split, values in run.data["metrics"].items()
            if metric in values and (fields := non_finite(values[metric]))]
