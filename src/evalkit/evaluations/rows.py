"""What the evaluations over pooled rows (linear probe, kNN) share: labelled rows, classes, statistics."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch

from evalkit.embed.cache import Embeddings
from evalkit.embed.features import FeatureSet, PooledRows
from evalkit.errors import EvalkitError
from evalkit.metrics.representation import representation_metrics
from evalkit.predictions import SplitPredictions
from evalkit.stats.bootstrap import bootstrap_ci
from evalkit.stats.config import StatsConfig
from evalkit.task import Task

Split = tuple[torch.Tensor, torch.Tensor]


def pooled_rows(task: Task) -> dict[str, FeatureSet]:
    return {split: PooledRows() for split in task.splits}


@dataclass
class LabelledRows:
    """The task's cached rows with the unlabelled ones (label -1) left out, ready for a head."""

    train: Split
    val: Split
    evaluate: dict[str, Split]  # the splits that are scored, val first
    ids: dict[str, list[str]]  # split -> ids of the labelled rows
    num_classes: int
    dim: int
    warnings: list[str]  # classes that cannot be learned or scored as asked (results.json "warnings")


def _labelled(data: Embeddings) -> tuple[Split, list[str]]:
    """The labelled rows of a split: the cached tensors themselves when every row is labelled (no
    copy of the embeddings, which may be most of the memory a fit uses), else a copy without the -1 rows."""
    keep = data.labels >= 0
    if bool(keep.all()):
        return (data.embeddings, data.labels), list(data.ids)
    ids = [sample for sample, label in zip(data.ids, data.labels.tolist()) if label >= 0]
    return (data.embeddings[keep], data.labels[keep]), ids


def _num_classes(splits: dict[str, Embeddings]) -> int:
    class_lists = {json.dumps(d.classes) for d in splits.values() if d.classes is not None}
    if len(class_lists) > 1:
        raise EvalkitError("the cache files of this task disagree on the class list; re-embed them with one task config")
    if class_lists:
        return len(json.loads(class_lists.pop()))
    return int(max(int(d.labels.max()) for d in splits.values())) + 1


def _check_labels(data: dict[str, Embeddings], num_classes: int) -> None:
    """Labels are class indices, or -1 for "unlabelled" (DESIGN.md): anything else is refused, never dropped."""
    for split, d in data.items():
        bad = (d.labels < -1) | (d.labels >= num_classes)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise EvalkitError(f"{d.path}: label {int(d.labels[i])} of sample '{d.ids[i]}' ({int(bad.sum())} such in "
                               f"{split}) is outside 0..{num_classes - 1} (or -1 for unlabelled); fix the labels "
                               "or the class list of the file")


def _class_warnings(task: Task, data: dict[str, Embeddings], num_classes: int) -> list[str]:
    """One line per class that has no training rows, and per class scored on a split but never trained on."""
    names = next((d.classes for d in data.values() if d.classes), None) or [str(c) for c in range(num_classes)]
    counts = {split: torch.bincount(d.labels[d.labels >= 0], minlength=num_classes) for split, d in data.items()}
    train = counts[task.train_split]
    warnings = []
    for c in (train == 0).nonzero().flatten().tolist():
        scored = [split for split in task.eval_splits if counts[split][c] > 0]
        where = f"; its {', '.join(f'{int(counts[s][c])} {s}' for s in scored)} sample(s) can only be misclassified" \
            if scored else " nor any evaluated sample"
        warnings.append(f"class '{names[c]}' has no {task.train_split} samples (an empty class folder?){where}")
    for split in task.eval_splits:
        missing = [names[c] for c in (counts[split] == 0).nonzero().flatten().tolist() if train[c] > 0]
        if missing:
            warnings.append(f"{split} has no samples of class(es) {missing}: its balanced accuracy averages over the "
                            "other classes only")
    return warnings


def labelled_rows(task: Task, data: dict[str, Embeddings]) -> LabelledRows:
    dims = {d.embeddings.shape[1] for d in data.values()}
    if len(dims) > 1:
        raise EvalkitError(f"the cache files of this task have different embedding sizes {sorted(dims)}")
    num_classes = _num_classes(data)
    _check_labels(data, num_classes)
    labelled = {split: _labelled(d) for split, d in data.items()}
    return LabelledRows(labelled[task.train_split][0], labelled[task.val_split][0],
                        {split: labelled[split][0] for split in task.eval_splits},
                        {split: ids for split, (_, ids) in labelled.items()}, num_classes, dims.pop(),
                        _class_warnings(task, data, num_classes))


def representation(data: dict[str, Embeddings]) -> dict[str, dict[str, float | None]]:
    """RankMe, ODCorr and α-ReQ of every split's rows; undefined values (e.g. rank 1) as null."""
    return {split: {name: None if math.isnan(value) else value
                    for name, value in representation_metrics(d.embeddings).items()}
            for split, d in data.items()}


def intervals(rows: LabelledRows, probs: dict[str, torch.Tensor],
              stats: StatsConfig) -> dict[str, dict[str, tuple[float, float]]]:
    """The bootstrap interval of every metric's mean over runs, per evaluated split."""
    out = {}
    for split, p in probs.items():
        cis = bootstrap_ci(rows.evaluate[split][1], p, rows.num_classes, n_resamples=stats.n_resamples,
                           confidence=stats.confidence, seed=stats.seed)
        out[split] = {name: (ci["low"], ci["high"]) for name, ci in cis.items()}
    return out


def predictions(rows: LabelledRows, probs: dict[str, torch.Tensor]) -> dict[str, SplitPredictions]:
    return {split: SplitPredictions(rows.ids[split], rows.evaluate[split][1], p) for split, p in probs.items()}
