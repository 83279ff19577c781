"""Label-efficiency curves: each head refitted on seeded k-shot and label-fraction subsets.

Every point of a curve is several independent draws of the training subset (the same draws
for every model, see :mod:`evalkit.heads.subsets`), scored on the full evaluation splits.
A point reports the mean over draws, its spread, and a bootstrap confidence interval over
the evaluation samples of that mean; a curve is summarised by its normalised area.

The linear head is the probe protocol itself, its draws fitted together as the runs of one
batched fit (one run per draw). kNN, SimpleShot and logistic regression come from
:data:`evalkit.heads.fewshot.FEWSHOT_HEADS`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from evalkit.errors import EvalkitError
from evalkit.heads.fewshot import FEWSHOT_HEADS
from evalkit.heads.linear import LinearProbeConfig, fit_linear_probe
from evalkit.heads.subsets import Subset, fraction_indices, k_shot_indices
from evalkit.metrics.classification import PRIMARY_METRIC
from evalkit.results import summarize
from evalkit.stats.bootstrap import bootstrap_ci, weighted_metrics
from evalkit.stats.config import StatsConfig

Split = tuple[torch.Tensor, torch.Tensor]
LINEAR = "linear"
IDS_LISTED_UP_TO = 1000  # subsets this small list their sample ids in results.json; larger ones give the hash


@dataclass
class LabelEfficiencyConfig:
    """Which label budgets to evaluate; empty lists (the default) turn the curves off.

    Args:
        shots: samples per class, e.g. ``[1, 2, 4, 8, 16, 32, 50, 100, 256]``.
        fractions: shares of each class, e.g. ``[0.01, 0.05, 0.1, 0.25, 0.5, 1.0]``.
        draws: seeded draws per budget; draw d uses seed ``seed + d``.
        heads: any of ``linear`` (the probe protocol), ``knn``, ``simpleshot``, ``logreg``.
        seed: seed of draw 0.
    """

    shots: list[int] = field(default_factory=list)
    fractions: list[float] = field(default_factory=list)
    draws: int = 3
    heads: list[str] = field(default_factory=lambda: [LINEAR, "knn", "simpleshot", "logreg"])
    seed: int = 0

    def __post_init__(self) -> None:
        if self.draws < 1:
            raise EvalkitError(f"fewshot.draws must be at least 1, got {self.draws}")
        known = [LINEAR, *FEWSHOT_HEADS.names()]
        unknown = [head for head in self.heads if head not in known]
        if unknown:
            raise EvalkitError(f"unknown few-shot head '{unknown[0]}'; known: {', '.join(known)}")
        if any(isinstance(k, bool) or k < 1 for k in self.shots):
            raise EvalkitError(f"fewshot.shots must be integers of at least 1, got {self.shots}")
        if any(not 0.0 < f <= 1.0 for f in self.fractions):
            raise EvalkitError(f"fewshot.fractions must be in (0, 1], got {self.fractions}")

    @property
    def enabled(self) -> bool:
        return bool(self.heads) and bool(self.shots or self.fractions)


def normalised_area(values: list[float], budgets: list[float]) -> float:
    """Area under metric-vs-log(budget), divided by the log-range: the curve's mean level.

    Log budget because each doubling of the labels is worth the same on the plot; a single
    point's area is its value.
    """
    if len(values) == 1:
        return float(values[0])
    x = torch.tensor(budgets, dtype=torch.float64).log()
    y = torch.tensor(values, dtype=torch.float64)
    order = x.argsort()
    return float(torch.trapezoid(y[order], x[order]) / (x.max() - x.min()))


def _draws(labels: torch.Tensor, kind: str, value: float, cfg: LabelEfficiencyConfig) -> list[Subset]:
    draw = k_shot_indices if kind == "shots" else fraction_indices
    return [draw(labels, int(value) if kind == "shots" else float(value), cfg.seed + d) for d in range(cfg.draws)]


def _head_probs(head: str, subsets: list[Subset], train: Split, val: Split, evaluate: dict[str, Split],
                num_classes: int, linear: LinearProbeConfig) -> dict[str, torch.Tensor]:
    """``split -> [draws, N, C]`` probabilities of ``head`` fitted on each subset."""
    x, y = train
    if head == LINEAR:
        cfg = dataclasses.replace(linear, n_runs=len(subsets), seed=subsets[0].seed)
        stacked = torch.stack([s.indices for s in subsets])
        return fit_linear_probe(train, val, num_classes, cfg, evaluate, subsets=stacked).probs
    fit = FEWSHOT_HEADS.get(head)
    per_draw = [{split: fit(x[s.indices], y[s.indices], ex, num_classes).cpu() for split, (ex, _) in evaluate.items()}
                for s in subsets]
    return {split: torch.stack([d[split] for d in per_draw]) for split in evaluate}


def label_efficiency(train: Split, val: Split, evaluate: dict[str, Split], num_classes: int,
                     cfg: LabelEfficiencyConfig, linear: LinearProbeConfig, stats: StatsConfig,
                     train_ids: list[str], log: Callable[[str], None] = print) -> dict[str, Any]:
    """The label-efficiency curves, ``curves.label_efficiency`` in results.json (see docs/statistics.md)."""
    budgets = [("shots", k) for k in cfg.shots] + [("fraction", f) for f in cfg.fractions]
    subsets_out: list[dict[str, Any]] = []
    curves: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {
        head: {split: {"shots": [], "fraction": []} for split in evaluate} for head in cfg.heads}
    for kind, value in budgets:
        subsets = _draws(train[1], kind, value, cfg)
        for s in subsets:
            record = s.record()
            if s.n <= IDS_LISTED_UP_TO:
                record["ids"] = [train_ids[i] for i in s.indices.tolist()]
            subsets_out.append(record)
        log(f"  label efficiency: {kind} {value} ({subsets[0].n} labels) x {cfg.draws} draws, heads {', '.join(cfg.heads)}")
        for head in cfg.heads:
            probs = _head_probs(head, subsets, train, val, evaluate, num_classes, linear)
            for split, (_, target) in evaluate.items():
                curves[head][split][kind].append(_point(value, subsets, target, probs[split], num_classes, stats))
    auc = {head: {split: {kind: normalised_area([p["mean"] for p in points], [p["value"] for p in points])
                          for kind, points in by_kind.items() if points}
                  for split, by_kind in per_split.items()}
           for head, per_split in curves.items()}
    return {"metric": PRIMARY_METRIC, "draws": cfg.draws, "seed": cfg.seed, "heads": list(cfg.heads),
            "subsets": subsets_out, "curves": curves, "auc": auc}


def _point(value: float, subsets: list[Subset], target: torch.Tensor, probs: torch.Tensor, num_classes: int,
           stats: StatsConfig) -> dict[str, Any]:
    """One budget of one head on one split: the primary metric per draw, mean, std and bootstrap CI."""
    per_draw = weighted_metrics(torch.ones(1, len(target), dtype=torch.float64), target, probs, num_classes,
                                metrics=[PRIMARY_METRIC])[PRIMARY_METRIC][0].tolist()
    ci = bootstrap_ci(target, probs, num_classes, n_resamples=stats.n_resamples, confidence=stats.confidence,
                      seed=stats.seed, metrics=[PRIMARY_METRIC])[PRIMARY_METRIC]
    summary = summarize(per_draw)
    return {"value": value, "n_labels": subsets[0].n, "mean": summary["mean"], "std": summary["std"],
            "draws": per_draw, "ci_low": ci["low"], "ci_high": ci["high"]}
