"""Classification metrics: one float64 implementation behind the point estimate, early stopping and the bootstrap.

Every metric is computed from weighted sample counts. Unit weights are the data as it is (the
reported numbers, early stopping); a bootstrap resample is a weighting by draw counts. So the
three uses run the same arithmetic and cannot disagree, and no resample is ever materialised.

* Balanced accuracy, accuracy and macro F1 are functions of a confusion matrix ``[..., C, C]``
  of float64 weights (rows: target, columns: prediction). Integer counts are exact in float64,
  so unit weights give bit-identical numbers however the matrix was built.
* Macro AUROC is the weighted Mann-Whitney statistic of each class, ties counting half; see
  :func:`auroc_buckets`.

Balanced accuracy is the mean recall over the classes present in the targets, as scikit-learn's
``balanced_accuracy_score``: a class that a small validation split lacks does not count as a zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from evalkit.errors import EvalkitError

CLASSIFICATION_METRICS = ("balanced_accuracy", "accuracy", "f1_macro", "auroc_macro")
PRIMARY_METRIC = "balanced_accuracy"

# Weightings per AUROC pass: on 2 CPU cores the cost per weighting was flat from 8 to 32 and rose at 64.
_ROWS_PER_PASS = 16


# ---- confusion matrices ----

def confusion_cells(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Each sample's cell ``target * C + pred`` [R, N] for ``preds`` [R, N]: a confusion matrix's weight-free part."""
    return target * num_classes + preds


def confusion_matrices(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Unweighted confusion matrices [R, C, C] (float64) of ``preds`` [R, N] against ``target`` [N].

    Early stopping calls this every epoch, so all runs are one bincount (run ``r``'s cells offset
    by ``r * C * C``). The counts equal :func:`weighted_confusion` with unit weights, bit for bit.
    """
    runs, cells_per_run = preds.shape[0], num_classes * num_classes
    offset = torch.arange(runs, device=preds.device).unsqueeze(1) * cells_per_run
    cells = (confusion_cells(preds, target, num_classes) + offset).flatten()
    counts = torch.bincount(cells, minlength=runs * cells_per_run)
    return counts.view(runs, num_classes, num_classes).to(torch.float64)


def weighted_confusion(cells: torch.Tensor, weights: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Confusion matrices [B, R, C, C] (float64) of ``R`` runs' ``cells`` [R, N] under ``B`` weightings [B, N].

    The matrices are the weights times each run's one-hot ``[N, C*C]`` cell matrix, computed in its
    sparse form, a scatter-add of each sample's weight into its cell: the same float64 sums, twice
    as fast as the dense matmul at ``C = 9`` and not growing as ``C**2``.
    """
    runs, b = cells.shape[0], weights.shape[0]
    weights = weights.to(torch.float64)
    confusion = torch.zeros(runs, b, num_classes * num_classes, dtype=torch.float64, device=weights.device)
    for r in range(runs):  # runs, not samples: each is one scatter-add over all samples
        confusion[r].index_add_(1, cells[r], weights)
    return confusion.view(runs, b, num_classes, num_classes).transpose(0, 1)


# ---- metrics of a confusion matrix ----

def _diagonal(confusion: torch.Tensor) -> torch.Tensor:
    return confusion.diagonal(dim1=-2, dim2=-1)


def balanced_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """Mean recall [...] over the classes present in the targets of ``confusion`` [..., C, C].

    A class without target weight is left out, not counted as recall 0 (scikit-learn's
    convention): small splits and bootstrap resamples may lack a class. NaN without any weight.
    """
    support = confusion.sum(dim=-1)
    present = support > 0
    recall = torch.where(present, _diagonal(confusion) / support, 0.0)
    return recall.sum(dim=-1) / present.sum(dim=-1)


def accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """Share [...] of the weight on the diagonal of ``confusion`` [..., C, C] (micro average)."""
    return _diagonal(confusion).sum(dim=-1) / confusion.sum(dim=(-2, -1))


def f1_macro(confusion: torch.Tensor) -> torch.Tensor:
    """Macro F1 [...] of ``confusion`` [..., C, C]: ``2tp / (2tp + fp + fn)`` averaged over the classes counted.

    A class counts when ``tp + fp + fn > 0``, i.e. it is in the targets or the predictions, as
    scikit-learn's ``f1_score(average="macro")``; a class predicted but absent scores 0.
    """
    denominator = confusion.sum(dim=-1) + confusion.sum(dim=-2)  # 2tp + fn + fp
    counted = denominator > 0
    f1 = torch.where(counted, 2 * _diagonal(confusion) / denominator, 0.0)
    return f1.sum(dim=-1) / counted.sum(dim=-1)


_FROM_CONFUSION = {"balanced_accuracy": balanced_accuracy, "accuracy": accuracy, "f1_macro": f1_macro}


# ---- AUROC ----

@dataclass(frozen=True)
class _ClassBuckets:
    groups: int  # distinct positive scores G
    bucket: torch.Tensor  # [N] int64


@dataclass(frozen=True)
class AurocBuckets:
    """The weight-free part of the macro AUROC of ``runs`` runs: per (run, class), each sample's bucket.

    For one (run, class) with distinct positive scores ``v_0 < ... < v_{G-1}``, a negative goes to
    bucket ``2g + 1`` when tied with ``v_g`` and ``2g`` when below ``v_g`` and above ``v_{g-1}``
    (``2G``: above all); a positive goes to bucket ``2G + 1 + g`` of its score ``v_g``. The negative
    weight below ``v_g``, ties counting half, is then ``(cumsum[2g] + cumsum[2g + 1]) / 2`` over the
    negative buckets, and the Mann-Whitney U is its sum weighted by the positive buckets.
    """

    runs: int
    classes: tuple[_ClassBuckets, ...]  # class-major: (class 0, run 0), (class 0, run 1), ...


def auroc_buckets(target: torch.Tensor, probs: torch.Tensor) -> AurocBuckets:
    """Sorts and searches once, so that any weighting costs one scatter-add per (run, class).

    ``target`` [N] int64, ``probs`` [R, N, C]. A class without positives, or without negatives,
    in ``target`` has no AUROC under any weighting and is left out.
    """
    out = []
    runs, _, num_classes = probs.shape
    for c in range(num_classes):
        positive = target == c
        if not bool(positive.any()) or bool(positive.all()):
            continue
        for r in range(runs):
            scores = probs[r, :, c].contiguous()
            values = torch.unique(scores[positive])  # sorted
            left = torch.searchsorted(values, scores)
            right = torch.searchsorted(values, scores, right=True)
            bucket = torch.where(positive, 2 * len(values) + 1 + left, left + right)
            out.append(_ClassBuckets(len(values), bucket))
    return AurocBuckets(runs, tuple(out))


def auroc_macro(buckets: AurocBuckets, weights: torch.Tensor) -> torch.Tensor:
    """Macro one-vs-rest AUROC [B, R] under ``B`` weightings [B, N] of the samples (float64).

    Averaged over the classes with both positive and negative weight; NaN where no class has both.
    """
    weights = weights.to(torch.float64)
    b, k = weights.shape[0], len(buckets.classes)
    u, positive, negative = (torch.zeros(b, k, dtype=torch.float64, device=weights.device) for _ in range(3))
    width = max((3 * item.groups + 1 for item in buckets.classes), default=1)
    buffer = torch.empty(min(b, _ROWS_PER_PASS) * width, dtype=torch.float64, device=weights.device)
    for lo in range(0, b, _ROWS_PER_PASS):
        # A few weightings at a time: their bucket tables stay in cache across the (run, class) passes.
        rows = weights[lo:lo + _ROWS_PER_PASS]
        hi = lo + rows.shape[0]
        for i, item in enumerate(buckets.classes):
            g = item.groups
            table = buffer[:rows.shape[0] * (3 * g + 1)].view(rows.shape[0], 3 * g + 1)
            table.zero_().index_add_(1, item.bucket, rows)
            negative_cum = table[:, :2 * g + 1].cumsum(dim=1)
            below_twice = negative_cum[:, 0:2 * g:2] + negative_cum[:, 1:2 * g:2]  # ties count half
            u[lo:hi, i] = 0.5 * torch.linalg.vecdot(table[:, 2 * g + 1:], below_twice)
            positive[lo:hi, i] = table[:, 2 * g + 1:].sum(dim=1)
            negative[lo:hi, i] = negative_cum[:, 2 * g]

    valid = (positive > 0) & (negative > 0)
    auc = torch.where(valid, u / (positive * negative), 0.0)
    # [B, classes, runs] sums: a fixed order (no atomics), so a GPU gives the same bits every time.
    return auc.view(b, -1, buckets.runs).sum(dim=1) / valid.view(b, -1, buckets.runs).sum(dim=1)


# ---- all metrics of fixed predictions under any weighting ----

def _checked_runs(target: torch.Tensor, probs: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked ``target`` [N] int64 and ``probs`` [R, N, C] (an [N, C] input is one run)."""
    target, probs = torch.as_tensor(target), torch.as_tensor(probs)
    if probs.ndim == 2:
        probs = probs.unsqueeze(0)
    if probs.ndim != 3 or probs.shape[1] == 0 or probs.shape[0] == 0:
        raise EvalkitError(f"expected probs of shape [runs, samples, classes] or [samples, classes], "
                           f"got shape {list(probs.shape)}")
    if not probs.is_floating_point():
        raise EvalkitError(f"expected floating-point class probabilities, got dtype {probs.dtype}")
    if probs.shape[2] != num_classes:
        raise EvalkitError(f"expected probs with {num_classes} classes (num_classes), got {probs.shape[2]}")
    if target.ndim != 1 or target.shape[0] != probs.shape[1]:
        raise EvalkitError(f"expected target of shape [{probs.shape[1]}] to match probs, got {list(target.shape)}")
    if not bool(torch.isfinite(probs).all()):
        raise EvalkitError("expected finite class probabilities, got NaN or inf")
    if target.is_floating_point() or target.dtype == torch.bool or target.is_complex():
        raise EvalkitError(f"expected integer class indices as target, got dtype {target.dtype}")
    if int(target.min()) < 0 or int(target.max()) >= num_classes:
        raise EvalkitError(f"expected target classes in [0, {num_classes - 1}], "
                           f"got [{int(target.min())}, {int(target.max())}]")
    return target.to(device=probs.device, dtype=torch.int64), probs


def _checked_metrics(metrics: Sequence[str] | None) -> tuple[str, ...]:
    if metrics is None:
        return CLASSIFICATION_METRICS
    unknown = [m for m in metrics if m not in CLASSIFICATION_METRICS]
    if unknown or not metrics:
        raise EvalkitError(f"expected metrics among {list(CLASSIFICATION_METRICS)}, "
                           f"got {unknown or list(metrics)}")
    return tuple(metrics)


class ClassificationScorer:
    """The metrics of ``R`` runs' fixed predictions under any weighting of the samples.

    The weight-free work (cells, AUROC buckets) is done once here, so a bootstrap pays only the
    scatter-adds per chunk of resamples. Predictions are ``probs.argmax(-1)``; ``metrics`` picks
    a subset of :data:`CLASSIFICATION_METRICS` (AUROC is the costly one).
    """

    def __init__(self, target: torch.Tensor, probs: torch.Tensor, num_classes: int,
                 metrics: Sequence[str] | None = None):
        self.target, self.probs = _checked_runs(target, probs, num_classes)
        self.metrics = _checked_metrics(metrics)
        self.num_classes = num_classes
        self.runs, self.n = self.probs.shape[:2]
        self.cells = confusion_cells(self.probs.argmax(dim=-1), self.target, num_classes)
        self.buckets = auroc_buckets(self.target, self.probs) if "auroc_macro" in self.metrics else None

    def __call__(self, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each metric as a [B, R] float64 tensor under ``weights`` [B, N] (checked)."""
        weights = torch.as_tensor(weights)
        if weights.ndim != 2 or weights.shape[1] != self.n or weights.shape[0] == 0:
            raise EvalkitError(f"expected weights of shape [weightings, {self.n}], got {list(weights.shape)}")
        weights = weights.to(device=self.probs.device, dtype=torch.float64).contiguous()
        # Reductions, not element-wise masks: no [B, N] temporaries. NaN fails the first test.
        if not float(weights.min()) >= 0 or not math.isfinite(float(weights.sum())):
            raise EvalkitError("expected finite, non-negative sample weights")
        return self.score(weights)

    def score(self, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """``__call__`` without the checks, for weights made by the caller (contiguous float64 on the device)."""
        confusion = None
        if any(name in _FROM_CONFUSION for name in self.metrics):
            confusion = weighted_confusion(self.cells, weights, self.num_classes)
        return {name: auroc_macro(self.buckets, weights) if name == "auroc_macro" else _FROM_CONFUSION[name](confusion)
                for name in self.metrics}


def classification_metrics(probs: torch.Tensor, target: torch.Tensor, num_classes: int,
                           metrics: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The reported metrics of each run on the data as it is: ``probs`` [R, N, C] (or [N, C]) -> [R] float64.

    Unit weights through :class:`ClassificationScorer`: the same numbers as a bootstrap's estimate.
    ``probs`` are class probabilities (softmax of the logits: AUROC ranks the samples by them).
    """
    scorer = ClassificationScorer(target, probs, num_classes, metrics)
    unit = torch.ones(1, scorer.n, dtype=torch.float64, device=scorer.probs.device)
    return {name: value[0] for name, value in scorer.score(unit).items()}
