"""Paired comparisons: the bootstrap difference's known cases, McNemar against scipy."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import binomtest, chi2

from evalkit.errors import EvalkitError
from evalkit.metrics import CLASSIFICATION_METRICS, classification_metrics
from evalkit.stats import bootstrap_ci, consensus_predictions, mcnemar, paired_bootstrap


def _model(target: torch.Tensor, classes: int, signal: float, seed: int, runs: int = 3) -> torch.Tensor:
    """Probabilities [R, N, C] of ``runs`` classifiers whose logits favour the true class by ``signal``."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(runs, len(target), classes, generator=g)
    return (noise + signal * torch.nn.functional.one_hot(target, classes)).softmax(dim=-1)


def _target(n: int, classes: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(classes, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("metric", sorted(CLASSIFICATION_METRICS))
def test_identical_models_differ_by_nothing(metric):
    target = _target(300, 4)
    probs = _model(target, 4, 1.0, seed=1)
    out = paired_bootstrap(target, probs, probs.clone(), 4, metric=metric, n_resamples=200)
    assert out["diff"] == 0.0 and out["ci_low"] == 0.0 and out["ci_high"] == 0.0
    assert out["p_value"] == 1.0
    assert out["metric"] == metric and out["n_resamples"] == 200


def test_a_clearly_better_model_is_significant():
    target = _target(600, 4)
    better, worse = _model(target, 4, 2.0, seed=1), _model(target, 4, 0.5, seed=2, runs=5)
    out = paired_bootstrap(target, better, worse, 4, n_resamples=500, seed=0)
    assert out["diff"] > 0.2
    assert out["ci_low"] > 0 and out["ci_low"] < out["diff"] < out["ci_high"]
    assert out["p_value"] < 0.01
    assert out["p_value"] == pytest.approx(1 / 501)  # never below 1 / (n_resamples + 1)


@pytest.mark.parametrize("metric", CLASSIFICATION_METRICS)
def test_estimates_are_the_point_estimates(metric):
    """The paired test scores through the same float64 core as the reported numbers and bootstrap_ci."""
    target = _target(250, 4)
    a, b = _model(target, 4, 1.0, seed=1), _model(target, 4, 0.7, seed=2, runs=2)
    out = paired_bootstrap(target, a, b, 4, metric=metric, n_resamples=100, seed=3)
    assert out["estimate_a"] == float(classification_metrics(a, target, 4)[metric].mean())
    assert out["estimate_b"] == float(classification_metrics(b, target, 4)[metric].mean())
    assert out["estimate_b"] == bootstrap_ci(target, b, 4, n_resamples=1, metrics=[metric])[metric]["estimate"]


def test_a_tiny_difference_is_not_significant():
    target = _target(400, 3)
    a = _model(target, 3, 1.0, seed=1)
    b = a.clone()
    b[:, :3] = torch.flip(b[:, :3], dims=[-1])  # changes a handful of predictions
    out = paired_bootstrap(target, a, b, 3, n_resamples=300)
    assert out["ci_low"] <= 0 <= out["ci_high"] or abs(out["diff"]) < 0.01
    assert out["p_value"] > 0.05


@pytest.mark.parametrize("metric", ["balanced_accuracy", "auroc_macro"])
def test_swapping_the_models_negates_the_difference(metric):
    target = _target(300, 5)
    a, b = _model(target, 5, 1.2, seed=1), _model(target, 5, 0.9, seed=2, runs=2)
    ab = paired_bootstrap(target, a, b, 5, metric=metric, n_resamples=300, seed=7)
    ba = paired_bootstrap(target, b, a, 5, metric=metric, n_resamples=300, seed=7)
    assert ba["diff"] == -ab["diff"]
    assert ba["ci_low"] == pytest.approx(-ab["ci_high"], abs=1e-12)
    assert ba["ci_high"] == pytest.approx(-ab["ci_low"], abs=1e-12)
    assert ba["p_value"] == ab["p_value"]
    assert (ba["estimate_a"], ba["estimate_b"]) == (ab["estimate_b"], ab["estimate_a"])


def test_paired_bootstrap_is_reproducible():
    target = _target(200, 3)
    a, b = _model(target, 3, 1.0, seed=1), _model(target, 3, 0.8, seed=2)
    assert paired_bootstrap(target, a, b, 3, n_resamples=100, seed=5) == \
        paired_bootstrap(target, a, b, 3, n_resamples=100, seed=5)


def test_paired_bootstrap_errors():
    target = _target(50, 3)
    a = _model(target, 3, 1.0, seed=1)
    with pytest.raises(EvalkitError, match="expected metrics among"):
        paired_bootstrap(target, a, a, 3, metric="auc")
    with pytest.raises(EvalkitError, match="same"):
        paired_bootstrap(target, a, a[:, :40], 3)
    with pytest.raises(EvalkitError, match="target of shape"):
        paired_bootstrap(target[:40], a, a, 3)


def test_consensus_is_the_argmax_of_the_mean_probability():
    # Run 0 says class 0, run 1 says class 1 more strongly: the average says class 1.
    probs = torch.tensor([[[0.6, 0.4, 0.0]], [[0.1, 0.9, 0.0]]])
    assert consensus_predictions(probs).tolist() == [1]
    one_run = torch.tensor([[0.2, 0.3, 0.5], [0.7, 0.2, 0.1]])
    assert consensus_predictions(one_run[None]).tolist() == [2, 0]


def _disagreements(b: int, c: int, agree: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Correctness of A and B with ``b`` (A right, B wrong), ``c`` (A wrong, B right) and some agreements."""
    a = [True] * b + [False] * c + [True] * agree + [False] * agree
    other = [False] * b + [True] * c + [True] * agree + [False] * agree
    return torch.tensor(a), torch.tensor(other)


@pytest.mark.parametrize("b,c", [(0, 0), (1, 0), (3, 9), (10, 2), (0, 12), (11, 13), (12, 12)])
def test_mcnemar_exact_matches_scipy_binomtest(b, c):
    out = mcnemar(*_disagreements(b, c))
    assert (out["b"], out["c"], out["method"]) == (b, c, "exact")
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert out["p_value"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("b,c", [(13, 12), (40, 20), (5, 60), (300, 250)])
def test_mcnemar_chi2_with_continuity_correction(b, c):
    out = mcnemar(*_disagreements(b, c))
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    assert out["method"] == "chi2"
    assert out["statistic"] == pytest.approx(statistic, rel=1e-12)
    assert out["p_value"] == pytest.approx(chi2.sf(statistic, df=1), rel=1e-9)


@pytest.mark.parametrize("n", [0, 5, 12, 13, 40])
def test_mcnemar_equal_disagreements_give_p_one(n):
    assert mcnemar(*_disagreements(n, n))["p_value"] == 1.0


def test_mcnemar_errors():
    with pytest.raises(EvalkitError, match="boolean"):
        mcnemar(torch.tensor([1, 0]), torch.tensor([0, 1]))
    with pytest.raises(EvalkitError, match="same samples"):
        mcnemar(torch.tensor([True, False]), torch.tensor([True]))
