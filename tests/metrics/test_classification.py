"""Reference tests: every reported metric against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from evalkit.metrics import METRICS, PRIMARY_METRIC, balanced_accuracy_runs, classification_metrics

# scikit-learn warns about predicted classes absent from the targets: that case is tested on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")


def _case(seed: int, n: int = 300, classes: int = 5, absent: tuple[int, ...] = ()):
    g = torch.Generator().manual_seed(seed)
    present = [c for c in range(classes) if c not in absent]
    target = torch.tensor(present)[torch.randint(len(present), (n,), generator=g)]
    logits = torch.randn(n, classes, generator=g) + 1.5 * torch.nn.functional.one_hot(target, classes)
    return logits, target


def _sklearn(logits: torch.Tensor, target: torch.Tensor, classes: int) -> dict[str, float]:
    probs = logits.double().softmax(dim=-1).numpy()
    y, pred = target.numpy(), probs.argmax(axis=1)
    present = np.unique(y)
    if classes == 2:
        auroc = roc_auc_score(y, probs[:, 1])
    elif len(present) == classes:
        auroc = roc_auc_score(y, probs, multi_class="ovr", average="macro")
    else:  # one-vs-rest AUROC is undefined for a class with no positives: mean over the present ones
        auroc = float(np.mean([roc_auc_score(y == c, probs[:, c]) for c in present]))
    return {"balanced_accuracy": balanced_accuracy_score(y, pred), "accuracy": accuracy_score(y, pred),
            "f1_macro": f1_score(y, pred, average="macro"), "auroc_macro": auroc}


def test_metric_table():
    assert PRIMARY_METRIC == "balanced_accuracy"
    assert set(METRICS) == {"balanced_accuracy", "accuracy", "f1_macro", "auroc_macro"}
    assert all(METRICS.values())  # all higher-is-better


@pytest.mark.parametrize("seed,classes,absent", [
    (0, 2, ()), (1, 5, ()), (2, 9, ()), (3, 5, (2,)), (4, 9, (0, 7)),
])
def test_classification_metrics_match_sklearn(seed, classes, absent):
    logits, target = _case(seed, classes=classes, absent=absent)
    ours = classification_metrics(logits, target, classes)
    reference = _sklearn(logits, target, classes)
    assert set(ours) == set(METRICS)
    for name, value in reference.items():
        assert ours[name] == pytest.approx(value, abs=1e-6), name


def test_an_absent_class_that_is_predicted():
    """A class missing from the targets but predicted counts for F1 (as 0), not for balanced accuracy."""
    target = torch.tensor([0, 0, 1, 1, 1, 2])
    preds = torch.tensor([0, 3, 1, 1, 3, 2])
    logits = torch.nn.functional.one_hot(preds, 4).float() * 5
    ours = classification_metrics(logits, target, 4)
    assert ours["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(target, preds))
    assert ours["balanced_accuracy"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert ours["f1_macro"] == pytest.approx(f1_score(target, preds, average="macro"))
    assert ours["accuracy"] == pytest.approx(4 / 6)


def test_perfect_and_worst_predictions():
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    right = classification_metrics(torch.nn.functional.one_hot(target, 3).float() * 10, target, 3)
    assert right == pytest.approx({"balanced_accuracy": 1.0, "accuracy": 1.0, "f1_macro": 1.0, "auroc_macro": 1.0})
    wrong = classification_metrics(torch.nn.functional.one_hot((target + 1) % 3, 3).float() * 10, target, 3)
    assert wrong["balanced_accuracy"] == 0.0 and wrong["accuracy"] == 0.0


@pytest.mark.parametrize("classes,absent", [(5, ()), (9, (0, 4))])
def test_balanced_accuracy_runs_matches_sklearn_per_run(classes, absent):
    runs = []
    _, target = _case(11, n=200, classes=classes, absent=absent)
    g = torch.Generator().manual_seed(3)
    for r in range(4):  # from chance to nearly right
        noisy = torch.randint(classes, target.shape, generator=g)
        keep = torch.rand(target.shape, generator=g) < r / 4
        runs.append(torch.where(keep, target, noisy))
    preds = torch.stack(runs)
    got = balanced_accuracy_runs(preds, target, classes)
    assert got.shape == (4,)
    for r in range(4):
        assert float(got[r]) == pytest.approx(balanced_accuracy_score(target.numpy(), preds[r].numpy()), abs=1e-12)
    assert float(got[3]) > float(got[0])


def test_balanced_accuracy_runs_agrees_with_the_reported_metric():
    logits, target = _case(5, classes=6, absent=(1,))
    run = balanced_accuracy_runs(logits.argmax(dim=-1)[None], target, 6)
    assert float(run[0]) == pytest.approx(classification_metrics(logits, target, 6)["balanced_accuracy"], abs=1e-6)
