"""Label-efficiency curves: each head refitted on seeded k-shot and label-fraction subsets.

Every point of a curve is several independent draws of the training subset (the same draws
for every model, see :mod:`evalkit.heads.subsets`), scored on the full evaluation splits.
A point reports the mean over draws, its spread, and a bootstrap confidence interval over
the evaluation samples of that mean; a curve is summarised by its normalised area.

Identical subsets are fitted once: a fraction can draw the very subset of a shot budget
(same seed, same per-class counts), and a budget of at least every class's size draws the
whole training set at every seed. The linear head's runs of every budget and draw are one
batched fit (:func:`evalkit.heads.linear.fit_linear_probe`, a run per distinct subset and
seed), and runs on the whole training set with the probe's own seeds are taken from the
probe itself. kNN, SimpleShot and logistic regression come from
:data:`evalkit.heads.fewshot.FEWSHOT_HEADS`, one fit per distinct subset.

A k-shot budget larger than a class cannot give that class k samples; it gives all it has.
Such a point is not k-shot for those classes, so it says so: every point carries the
samples per class it used (``per_class``) and the classes left short (``short_classes``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from evalkit.errors import EvalkitError
from evalkit.heads.fewshot import FEWSHOT_HEADS
from evalkit.heads.linear import LinearProbeConfig, ProbeResult, fit_linear_probe
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


def _key(subset: Subset) -> bytes:
    """Identity of a subset's rows (its sorted indices), for fitting each distinct subset once."""
    return subset.indices.numpy().tobytes()


def whole_set_fits(probe: ProbeResult, n_train: int) -> dict[tuple[bytes, int], dict[str, torch.Tensor]]:
    """The probe's runs as label-efficiency fits: (rows of the whole training set, seed) -> split -> probs [N, C]."""
    every = torch.arange(n_train).numpy().tobytes()
    return {(every, seed): {split: p[r] for split, p in probe.probs.items()}
            for r, seed in enumerate(probe.settings["seeds"])}


def _linear_probs(subsets: list[Subset], train: Split, val: Split, evaluate: dict[str, Split], num_classes: int,
                  linear: LinearProbeConfig, known: dict[tuple[bytes, int], dict[str, torch.Tensor]]
                  ) -> dict[tuple[bytes, int], dict[str, torch.Tensor]]:
    """The linear head on every distinct (subset, seed), all in one batched fit; ``known`` ones are reused."""
    fits = dict(known)
    todo: dict[tuple[bytes, int], Subset] = {}
    for s in subsets:
        todo.setdefault((_key(s), s.seed), s)
    todo = {key: s for key, s in todo.items() if key not in fits}
    if todo:
        runs = list(todo.values())
        cfg = dataclasses.replace(linear, n_runs=len(runs))
        result = fit_linear_probe(train, val, num_classes, cfg, evaluate, subsets=[s.indices for s in runs],
                                  seeds=[s.seed for s in runs])
        for r, key in enumerate(todo):
            fits[key] = {split: p[r] for split, p in result.probs.items()}
    return fits


def _head_probs(head: str, subsets: list[Subset], train: Split, evaluate: dict[str, Split],
                num_classes: int) -> dict[bytes, dict[str, torch.Tensor]]:
    """A few-shot head (no seed of its own) on every distinct subset: rows -> split -> probs [N, C]."""
    x, y = train
    fit = FEWSHOT_HEADS.get(head)
    fits: dict[bytes, dict[str, torch.Tensor]] = {}
    for s in subsets:
        key = _key(s)
        if key not in fits:
            rows = s.indices
            fits[key] = {split: fit(x[rows], y[rows], ex, num_classes).cpu() for split, (ex, _) in evaluate.items()}
    return fits


def _describe(kind: str, value: float, subsets: list[Subset]) -> str:
    """The log line of one budget: its draws and labels, and the classes a k-shot budget had to leave short."""
    first = subsets[0]
    text = f"{kind} {value} x {len(subsets)} draws ({first.n} labels"
    if first.short_classes:
        text += "; capped: " + ", ".join(f"class {c} has {first.per_class[c]}" for c in first.short_classes)
    return text + ")"


def label_efficiency(train: Split, val: Split, evaluate: dict[str, Split], num_classes: int,
                     cfg: LabelEfficiencyConfig, linear: LinearProbeConfig, stats: StatsConfig,
                     train_ids: list[str], log: Callable[[str], None] = print,
                     known: dict[tuple[bytes, int], dict[str, torch.Tensor]] | None = None) -> dict[str, Any]:
    """The label-efficiency curves, ``curves.label_efficiency`` in results.json (see docs/statistics.md).

    ``known`` maps (subset rows as :func:`_key` gives them, seed) to linear-head fits already
    made with ``linear`` (the probe's own runs, :func:`whole_set_fits`); they are not refitted.
    """
    budgets = [("shots", k) for k in cfg.shots] + [("fraction", f) for f in cfg.fractions]
    drawn = {(kind, value): _draws(train[1], kind, value, cfg) for kind, value in budgets}
    subsets_out: list[dict[str, Any]] = []
    for (kind, value), subsets in drawn.items():
        for s in subsets:
            record = s.record()
            if s.n <= IDS_LISTED_UP_TO:
                record["ids"] = [train_ids[i] for i in s.indices.tolist()]
            subsets_out.append(record)
        log(f"  label efficiency: {_describe(kind, value, subsets)}")
    every = [s for subsets in drawn.values() for s in subsets]
    distinct = len({_key(s) for s in every})
    log(f"  label efficiency: {len(every)} draws, {distinct} distinct subsets; heads {', '.join(cfg.heads)}")

    curves: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {
        head: {split: {"shots": [], "fraction": []} for split in evaluate} for head in cfg.heads}
    for head in cfg.heads:
        if head == LINEAR:
            fits = _linear_probs(every, train, val, evaluate, num_classes, linear, known or {})
            probs_of = lambda s: fits[(_key(s), s.seed)]  # noqa: E731
        else:
            head_fits = _head_probs(head, every, train, evaluate, num_classes)
            probs_of = lambda s: head_fits[_key(s)]  # noqa: E731
        for (kind, value), subsets in drawn.items():
            for split, (_, target) in evaluate.items():
                probs = torch.stack([probs_of(s)[split] for s in subsets])
                curves[head][split][kind].append(_point(value, subsets, target, probs, num_classes, stats))
    auc = {head: {split: {kind: normalised_area([p["mean"] for p in points], [p["value"] for p in points])
                          for kind, points in by_kind.items() if points}
                  for split, by_kind in per_split.items()}
           for head, per_split in curves.items()}
    return {"metric": PRIMARY_METRIC, "draws": cfg.draws, "seed": cfg.seed, "heads": list(cfg.heads),
            "subsets": subsets_out, "curves": curves, "auc": auc}


def _point(value: float, subsets: list[Subset], target: torch.Tensor, probs: torch.Tensor, num_classes: int,
           stats: StatsConfig) -> dict[str, Any]:
    """One budget of one head on one split: the primary metric per draw, mean, std and bootstrap CI.

    ``per_class`` (class id -> samples) and ``short_classes`` are what every draw of the budget
    used; the quotas depend only on the labels, so all draws agree.
    """
    per_draw = weighted_metrics(torch.ones(1, len(target), dtype=torch.float64), target, probs, num_classes,
                                metrics=[PRIMARY_METRIC])[PRIMARY_METRIC][0].tolist()
    ci = bootstrap_ci(target, probs, num_classes, n_resamples=stats.n_resamples, confidence=stats.confidence,
                      seed=stats.seed, metrics=[PRIMARY_METRIC])[PRIMARY_METRIC]
    summary = summarize(per_draw)
    first = subsets[0]
    return {"value": value, "n_labels": first.n,
            "per_class": {str(c): count for c, count in sorted(first.per_class.items())},
            "short_classes": list(first.short_classes), "mean": summary["mean"], "std": summary["std"],
            "draws": per_draw, "ci_low": ci["low"], "ci_high": ci["high"]}
