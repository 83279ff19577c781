"""Weighted metrics against materialised resamples; one number for early stopping, the estimate and the bootstrap;
bootstrap intervals' known behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from evalkit.errors import EvalkitError
from evalkit.metrics import CLASSIFICATION_METRICS, balanced_accuracy, classification_metrics, confusion_matrices
from evalkit.stats import bootstrap_ci, bootstrap_weights, weighted_metrics

# Resamples that miss a class predicted elsewhere are the point of some tests.
pytestmark = pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")


def _case(seed: int, n: int = 300, classes: int = 5, runs: int = 3, absent: tuple[int, ...] = (),
          signal: float = 1.5, ties: bool = False):
    """Logits [R, N, C] of ``runs`` noisy classifiers and targets [N]; ``ties`` rounds the logits."""
    g = torch.Generator().manual_seed(seed)
    present = [c for c in range(classes) if c not in absent]
    target = torch.tensor(present)[torch.randint(len(present), (n,), generator=g)]
    logits = torch.randn(runs, n, classes, generator=g) + signal * torch.nn.functional.one_hot(target, classes)
    if ties:
        logits = (logits * 2).round() / 2
    return logits, target


def _probs(logits: torch.Tensor) -> torch.Tensor:
    return logits.float().softmax(dim=-1)  # as fit_linear_probe stores them


def _reference(target: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The metrics of one run on a materialised sample, from scikit-learn."""
    pred = probs.argmax(axis=1)
    present = np.unique(target)
    auroc = [roc_auc_score(target == c, probs[:, c]) for c in present] if len(present) > 1 else [math.nan]
    return {"balanced_accuracy": balanced_accuracy_score(target, pred), "accuracy": accuracy_score(target, pred),
            "f1_macro": f1_score(target, pred, average="macro"), "auroc_macro": float(np.mean(auroc))}


@pytest.mark.parametrize("seed,classes,absent,ties", [
    (0, 2, (), False), (1, 5, (), False), (2, 9, (), False), (3, 5, (2,), False), (4, 9, (0, 7), True),
    (5, 4, (), True),
])
def test_early_stopping_point_estimate_and_bootstrap_are_one_number(seed, classes, absent, ties):
    """The three uses of a metric run the same float64 code: equal bit for bit, not within a tolerance."""
    logits, target = _case(seed, classes=classes, absent=absent, ties=ties)
    probs = _probs(logits)
    early_stopping = balanced_accuracy(confusion_matrices(probs.argmax(dim=-1), target, classes))
    point = classification_metrics(probs, target, classes)
    unit = weighted_metrics(torch.ones(1, len(target)), target, probs, classes)
    ci = bootstrap_ci(target, probs, classes, n_resamples=2, seed=0)
    assert early_stopping.dtype == torch.float64
    assert torch.equal(early_stopping, point["balanced_accuracy"])
    assert list(unit) == list(point) == list(ci) == list(CLASSIFICATION_METRICS)
    for name in CLASSIFICATION_METRICS:
        assert unit[name].dtype == point[name].dtype == torch.float64, name
        assert torch.equal(unit[name][0], point[name]), name
        assert ci[name]["estimate"] == float(point[name].mean()), name


@pytest.mark.parametrize("ties", [False, True])
def test_counts_equal_materialised_resamples(ties):
    """A resample drawn with replacement, scored plainly, equals the weighting by its draw counts."""
    logits, target = _case(6, n=60, classes=4, runs=2, signal=1.0, ties=ties)
    target[:57] %= 3  # class 3 is rare: some resamples lack it, as the metrics must allow
    probs = _probs(logits)
    g = torch.Generator().manual_seed(0)
    draws = torch.randint(60, (8, 60), generator=g)
    counts = torch.stack([torch.bincount(row, minlength=60) for row in draws])
    ours = weighted_metrics(counts, target, probs, 4)
    missing_rare = 0
    for b, rows in enumerate(draws):
        missing_rare += int((target[rows] != 3).all())
        for r in range(2):
            expected = _reference(target[rows].numpy(), probs[r, rows].double().numpy())
            for name, value in expected.items():
                assert float(ours[name][b, r]) == pytest.approx(value, abs=1e-12), (name, b, r)
    assert missing_rare > 0  # the case of a class absent from a resample was exercised


def test_scaling_the_weights_changes_nothing():
    logits, target = _case(7, n=200, classes=5, runs=2)
    weights = torch.rand(3, 200, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = weighted_metrics(weights, target, _probs(logits), 5)
    b = weighted_metrics(weights * 7.25, target, _probs(logits), 5)
    for name in CLASSIFICATION_METRICS:
        torch.testing.assert_close(a[name], b[name], rtol=1e-12, atol=1e-12)


def test_a_weighting_of_one_class_has_no_auroc():
    logits, target = _case(8, n=50, classes=3, runs=1)
    weights = (target == 0).double()[None]
    out = weighted_metrics(weights, target, _probs(logits), 3)
    assert math.isnan(float(out["auroc_macro"]))
    assert 0.0 <= float(out["balanced_accuracy"]) <= 1.0


def test_metric_subset_and_single_run_input():
    logits, target = _case(9, n=80, classes=3, runs=1)
    out = weighted_metrics(torch.ones(2, 80), target, _probs(logits)[0], 3, metrics=["accuracy"])
    assert list(out) == ["accuracy"] and out["accuracy"].shape == (2, 1)


def test_bootstrap_weights_are_draw_counts():
    g = torch.Generator().manual_seed(0)
    chunks = list(bootstrap_weights(50, 23, g, chunk=10))
    assert [c.shape for c in chunks] == [(10, 50), (10, 50), (3, 50)]
    weights = torch.cat(chunks)
    assert weights.dtype == torch.float64
    assert torch.equal(weights.sum(dim=1), torch.full((23,), 50.0, dtype=torch.float64))
    assert torch.equal(weights, weights.round()) and bool((weights >= 0).all())
    again = torch.cat(list(bootstrap_weights(50, 23, torch.Generator().manual_seed(0), chunk=10)))
    assert torch.equal(weights, again)
    assert weights.mean().item() == pytest.approx(1.0)


def test_the_chunk_size_changes_neither_the_resamples_nor_the_interval(monkeypatch):
    """Chunks are consecutive resamples of one generator stream, so the memory bound is free to move."""
    whole = next(bootstrap_weights(300, 40, torch.Generator().manual_seed(1), chunk=40))
    for chunk in (1, 7, 39):
        assert torch.equal(torch.cat(list(bootstrap_weights(300, 40, torch.Generator().manual_seed(1), chunk))), whole)
    logits, target = _case(11, n=3000, classes=5, runs=3)
    probs = _probs(logits)
    by_chunk = []
    for elements in (10**8, 3000 * 37, 3000):  # every resample in one chunk; 37 per chunk; one per chunk
        monkeypatch.setattr("evalkit.stats.bootstrap.MAX_CHUNK_ELEMENTS", elements)
        by_chunk.append(bootstrap_ci(target, probs, 5, n_resamples=100, seed=2))
    assert by_chunk[0] == by_chunk[1] == by_chunk[2]


def test_bootstrap_ci_is_reproducible_and_contains_the_estimate():
    logits, target = _case(10, n=400, classes=4, runs=3)
    probs = _probs(logits)
    a = bootstrap_ci(target, probs, 4, n_resamples=200, seed=3)
    assert a == bootstrap_ci(target, probs, 4, n_resamples=200, seed=3)
    assert a != bootstrap_ci(target, probs, 4, n_resamples=200, seed=4)
    assert set(a) == set(CLASSIFICATION_METRICS)
    for name, ci in a.items():
        assert ci["low"] < ci["estimate"] < ci["high"], name
        assert ci["n_resamples"] == 200 and ci["confidence"] == 0.95
        expected = np.mean([_reference(target.numpy(), probs[r].double().numpy())[name] for r in range(3)])
        assert ci["estimate"] == pytest.approx(expected, abs=1e-12)


def test_interval_width_shrinks_like_one_over_sqrt_n():
    """Four times the samples, half the interval (this seeded draw: width ratios 0.52-0.54, std ratios 0.50)."""
    cis = {}
    for n in (2000, 8000):
        logits, target = _case(11, n=n, classes=4, runs=2, signal=1.0)
        cis[n] = bootstrap_ci(target, _probs(logits), 4, n_resamples=400, seed=0)
    for name in CLASSIFICATION_METRICS:
        small, large = cis[2000][name], cis[8000][name]
        assert 0.35 < (large["high"] - large["low"]) / (small["high"] - small["low"]) < 0.65, name
        assert 0.4 < large["std"] / small["std"] < 0.6, name


def test_accuracy_std_is_binomial():
    logits, target = _case(12, n=4000, classes=3, runs=1, signal=1.0)
    ci = bootstrap_ci(target, _probs(logits), 3, n_resamples=1500, seed=1)
    p = ci["accuracy"]["estimate"]
    assert ci["accuracy"]["std"] == pytest.approx(math.sqrt(p * (1 - p) / 4000), rel=0.1)
    # and a 95% percentile interval is about +-1.96 standard errors
    assert ci["accuracy"]["high"] - ci["accuracy"]["low"] == pytest.approx(2 * 1.96 * ci["accuracy"]["std"], rel=0.1)


@pytest.mark.parametrize("call,match", [  # the scorer's own checks are tested in tests/metrics
    (lambda t, p: weighted_metrics(torch.ones(1, 9), t, p, 3), "weights of shape"),
    (lambda t, p: bootstrap_ci(t, p, 3, metrics=["auc"]), "expected metrics among"),
    (lambda t, p: bootstrap_ci(t, p, 3, confidence=95), "confidence"),
    (lambda t, p: bootstrap_ci(t, p, 3, n_resamples=0), "n_resamples"),
])
def test_errors_say_what_was_expected(call, match):
    target = torch.arange(10) % 3
    probs = torch.full((2, 10, 3), 1 / 3)
    with pytest.raises(EvalkitError, match=match):
        call(target, probs)
