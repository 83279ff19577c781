"""Reference tests: every metric of the float64 core against scikit-learn, unweighted and weighted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from evalkit.errors import EvalkitError
from evalkit.metrics import (
    CLASSIFICATION_METRICS,
    PRIMARY_METRIC,
    ClassificationScorer,
    accuracy,
    auroc_buckets,
    auroc_macro,
    balanced_accuracy,
    classification_metrics,
    confusion_cells,
    confusion_matrices,
    f1_macro,
    weighted_confusion,
)

# scikit-learn warns about predicted classes absent from the targets: that case is tested on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")


def _case(seed: int, n: int = 300, classes: int = 5, runs: int = 3, absent: tuple[int, ...] = (),
          ties: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities [R, N, C] of ``runs`` noisy classifiers and targets [N]; ``ties`` rounds the logits."""
    g = torch.Generator().manual_seed(seed)
    present = [c for c in range(classes) if c not in absent]
    target = torch.tensor(present)[torch.randint(len(present), (n,), generator=g)]
    logits = torch.randn(runs, n, classes, generator=g) + 1.5 * torch.nn.functional.one_hot(target, classes)
    if ties:  # many equal scores within a class column, and some equal maxima within a row
        logits = (logits * 2).round() / 2
    return logits.softmax(dim=-1), target


def _sklearn(target: np.ndarray, probs: np.ndarray, classes: int) -> dict[str, float]:
    """One run's metrics from scikit-learn; AUROC one-vs-rest over the classes present in ``target``."""
    pred = probs.argmax(axis=1)
    # One-vs-rest macro AUROC, written per class: scikit-learn's multi_class="ovr" wants every class
    # present and rows summing to 1, and renormalising would move the ties.
    present = np.unique(target)
    auroc = float(np.mean([roc_auc_score(target == c, probs[:, c]) for c in present])) if len(present) > 1 else np.nan
    return {"balanced_accuracy": balanced_accuracy_score(target, pred), "accuracy": accuracy_score(target, pred),
            "f1_macro": f1_score(target, pred, average="macro"), "auroc_macro": auroc}


def _core(probs: torch.Tensor, target: torch.Tensor, classes: int, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four core functions called directly: [B, R] each."""
    confusion = weighted_confusion(confusion_cells(probs.argmax(dim=-1), target, classes), weights, classes)
    return {"balanced_accuracy": balanced_accuracy(confusion), "accuracy": accuracy(confusion),
            "f1_macro": f1_macro(confusion), "auroc_macro": auroc_macro(auroc_buckets(target, probs), weights)}


def test_metric_names():
    assert PRIMARY_METRIC == "balanced_accuracy"
    assert CLASSIFICATION_METRICS == ("balanced_accuracy", "accuracy", "f1_macro", "auroc_macro")


CASES = [(0, 2, (), False), (1, 5, (), False), (2, 9, (), False), (3, 5, (2,), False), (4, 9, (0, 7), True),
         (5, 4, (), True), (6, 2, (), True)]


@pytest.mark.parametrize("seed,classes,absent,ties", CASES)
def test_core_matches_sklearn(seed, classes, absent, ties):
    probs, target = _case(seed, classes=classes, absent=absent, ties=ties)
    ours = _core(probs, target, classes, torch.ones(1, len(target), dtype=torch.float64))
    for r in range(probs.shape[0]):
        reference = _sklearn(target.numpy(), probs[r].double().numpy(), classes)
        for name, value in reference.items():
            assert ours[name].dtype == torch.float64
            assert float(ours[name][0, r]) == pytest.approx(value, abs=1e-12), (name, r)


@pytest.mark.parametrize("seed,classes,absent,ties", CASES)
def test_weights_are_repeat_counts(seed, classes, absent, ties):
    """Integer weights score as the data with each sample repeated that often (0: left out)."""
    probs, target = _case(seed, n=120, classes=classes, absent=absent, ties=ties)
    counts = torch.randint(0, 4, (3, len(target)), generator=torch.Generator().manual_seed(seed))
    counts[0, target == target[0]] = 0  # a weighting that lacks a class that other weightings have
    ours = _core(probs, target, classes, counts.double())
    for b in range(3):
        rows = torch.repeat_interleave(torch.arange(len(target)), counts[b])
        for r in range(probs.shape[0]):
            reference = _sklearn(target[rows].numpy(), probs[r, rows].double().numpy(), classes)
            for name, value in reference.items():
                assert float(ours[name][b, r]) == pytest.approx(value, abs=1e-12, nan_ok=True), (name, b, r)


def test_fractional_weights_match_sklearn_multiclass_ovr_with_sample_weight():
    probs, target = _case(7, n=200, classes=4, runs=1)
    probs = probs.double() / probs.double().sum(dim=-1, keepdim=True)  # rows summing to 1 in float64
    weights = torch.rand(1, 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.1
    ours = _core(probs, target, 4, weights)
    y, p, w = target.numpy(), probs[0].numpy(), weights[0].numpy()
    pred = p.argmax(axis=1)
    expected = balanced_accuracy_score(y, pred, sample_weight=w)
    assert float(ours["balanced_accuracy"]) == pytest.approx(expected, abs=1e-12)
    assert float(ours["accuracy"]) == pytest.approx(accuracy_score(y, pred, sample_weight=w), abs=1e-12)
    assert float(ours["f1_macro"]) == pytest.approx(f1_score(y, pred, average="macro", sample_weight=w), abs=1e-12)
    auroc = roc_auc_score(y, p, multi_class="ovr", average="macro", sample_weight=w)
    assert float(ours["auroc_macro"]) == pytest.approx(auroc, abs=1e-12)


def test_an_absent_class_that_is_predicted():
    """A class missing from the targets but predicted counts for F1 (as 0), not for balanced accuracy or AUROC."""
    target = torch.tensor([0, 0, 1, 1, 1, 2])
    preds = torch.tensor([0, 3, 1, 1, 3, 2])
    ours = classification_metrics(torch.nn.functional.one_hot(preds, 4).double(), target, 4)
    assert float(ours["balanced_accuracy"]) == pytest.approx(balanced_accuracy_score(target, preds), abs=1e-12)
    assert float(ours["balanced_accuracy"]) == pytest.approx((0.5 + 2 / 3 + 1) / 3, abs=1e-12)
    assert float(ours["f1_macro"]) == pytest.approx(f1_score(target, preds, average="macro"), abs=1e-12)
    assert float(ours["accuracy"]) == 4 / 6


def test_perfect_and_worst_predictions():
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    right = classification_metrics(torch.nn.functional.one_hot(target, 3).float(), target, 3)
    assert {name: float(value) for name, value in right.items()} == dict.fromkeys(CLASSIFICATION_METRICS, 1.0)
    wrong = classification_metrics(torch.nn.functional.one_hot((target + 1) % 3, 3).float(), target, 3)
    assert float(wrong["balanced_accuracy"]) == 0.0 and float(wrong["accuracy"]) == 0.0


def test_no_weight_gives_nan_and_one_class_has_no_auroc():
    probs, target = _case(8, n=50, classes=3, runs=1)
    out = _core(probs, target, 3, torch.stack([torch.zeros(50), (target == 0).double()]).double())
    assert all(bool(value[0].isnan().all()) for value in out.values())
    assert bool(out["auroc_macro"][1].isnan().all()) and float(out["accuracy"][1]) >= 0


@pytest.mark.parametrize("classes,absent", [(5, ()), (9, (0, 4))])
def test_confusion_matrices_equal_unit_weights_bit_for_bit(classes, absent):
    """The early-stopping path (bincount) and the weighted path (scatter-add) build the same counts."""
    probs, target = _case(11, n=200, classes=classes, runs=4, absent=absent)
    preds = probs.argmax(dim=-1)
    counts = confusion_matrices(preds, target, classes)
    assert counts.dtype == torch.float64 and counts.shape == (4, classes, classes)
    weighted = weighted_confusion(confusion_cells(preds, target, classes), torch.ones(1, 200), classes)
    assert torch.equal(counts, weighted[0])
    for r in range(4):
        expected = balanced_accuracy_score(target.numpy(), preds[r].numpy())
        assert float(balanced_accuracy(counts)[r]) == pytest.approx(expected, abs=1e-12)


def test_classification_metrics_are_per_run_float64():
    probs, target = _case(12, classes=4, runs=3)
    out = classification_metrics(probs, target, 4)
    assert list(out) == list(CLASSIFICATION_METRICS)
    assert all(value.dtype == torch.float64 and value.shape == (3,) for value in out.values())
    single = classification_metrics(probs[1], target, 4, metrics=["f1_macro"])
    assert list(single) == ["f1_macro"] and torch.equal(single["f1_macro"], out["f1_macro"][1:2])


@pytest.mark.parametrize("call,match", [
    (lambda t, p: ClassificationScorer(t, p, 3)(torch.ones(1, 9)), "weights of shape"),
    (lambda t, p: ClassificationScorer(t, p, 3)(-torch.ones(1, 10)), "non-negative"),
    (lambda t, p: ClassificationScorer(t, p, 4), "4 classes"),
    (lambda t, p: ClassificationScorer(t + 1, p, 3), r"target classes in \[0, 2\]"),
    (lambda t, p: ClassificationScorer(t.float(), p, 3), "integer class indices"),
    (lambda t, p: ClassificationScorer(t[:5], p, 3), "target of shape"),
    (lambda t, p: ClassificationScorer(t, p, 3, metrics=["auc"]), "expected metrics among"),
    (lambda t, p: ClassificationScorer(t, p, 3, metrics=[]), "expected metrics among"),
    (lambda t, p: ClassificationScorer(t, p * torch.nan, 3), "finite class probabilities"),
    (lambda t, p: ClassificationScorer(t, p.long(), 3), "floating-point"),
])
def test_errors_say_what_was_expected(call, match):
    target = torch.arange(10) % 3
    probs = torch.full((2, 10, 3), 1 / 3)
    with pytest.raises(EvalkitError, match=match):
        call(target, probs)
