"""Is model A better than model B on this test set? Two paired tests over the same samples.

Both models are scored on the same samples, so their errors are correlated and comparing two
separate intervals is needlessly weak. ``paired_bootstrap`` resamples the samples once for both
models (any reported metric, each model's mean over its runs); ``mcnemar`` is the classical
test of two classifiers' disagreements, for which each model's runs are first averaged into one
classifier with :func:`consensus_predictions`.
"""

from __future__ import annotations

import math

import torch

from evalkit.errors import EvalkitError
from evalkit.metrics.classification import ClassificationScorer
from evalkit.stats.bootstrap import check_resampling, percentile_interval, resampled_run_means

# Below this many disagreements the chi-square approximation is poor: use the exact binomial test.
MCNEMAR_EXACT_BELOW = 25


def paired_bootstrap(
    target: torch.Tensor,
    probs_a: torch.Tensor,
    probs_b: torch.Tensor,
    num_classes: int,
    metric: str = "balanced_accuracy",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Difference of ``metric`` between model A and model B, with its bootstrap interval and p-value.

    ``probs_a`` [R_a, N, C] and ``probs_b`` [R_b, N, C] (or [N, C]) score the same samples in the
    order of ``target`` [N]. The difference ``diff`` is A's mean over its runs minus B's; each
    resample of the samples scores both models, so the correlation between them is kept.
    Returns ``diff``, its percentile interval ``ci_low``/``ci_high``, ``p_value``, each model's
    mean ``estimate_a``/``estimate_b``, ``metric``, ``confidence`` and ``n_resamples``.

    The p-value is two-sided, from the bootstrap distribution shifted to the null (centred on
    zero): ``p = (1 + #{|d* - d| >= |d|}) / (1 + n_resamples)`` with ``d`` the observed and ``d*``
    the resampled differences (Hall & Wilson 1991). It is never below ``1 / (n_resamples + 1)``,
    is 1 when ``d = 0``, and does not change when A and B swap.
    """
    check_resampling(n_resamples, confidence)
    shape_a, shape_b = torch.as_tensor(probs_a).shape, torch.as_tensor(probs_b).shape
    if shape_a[-2:] != shape_b[-2:]:
        raise EvalkitError(f"expected both models' probs over the same [samples, classes], got "
                           f"{list(shape_a)} and {list(shape_b)}")
    scorer_a = ClassificationScorer(target, probs_a, num_classes, [metric])
    scorer_b = ClassificationScorer(target, probs_b, num_classes, [metric])
    if scorer_a.probs.device != scorer_b.probs.device:
        raise EvalkitError(f"expected both models' probs on one device, got {scorer_a.probs.device} "
                           f"and {scorer_b.probs.device}")
    ones = torch.ones(1, scorer_a.n)
    estimate_a = float(scorer_a(ones)[metric].mean())
    estimate_b = float(scorer_b(ones)[metric].mean())
    observed = estimate_a - estimate_b

    resampled_a, resampled_b = resampled_run_means([scorer_a, scorer_b], n_resamples, seed)
    differences = resampled_a[metric] - resampled_b[metric]
    low, high = percentile_interval(differences, confidence)
    valid = differences[~differences.isnan()]  # an AUROC can be undefined on a degenerate resample
    extreme = int(((valid - observed).abs() >= abs(observed)).sum())
    return {"metric": metric, "diff": observed, "ci_low": low, "ci_high": high,
            "p_value": (1 + extreme) / (1 + len(valid)), "estimate_a": estimate_a, "estimate_b": estimate_b,
            "confidence": confidence, "n_resamples": n_resamples}


def consensus_predictions(probs: torch.Tensor) -> torch.Tensor:
    """Class predictions [N] of the run-averaged classifier: argmax of the mean probability over runs.

    McNemar compares two classifiers, not two sets of runs; averaging the runs' probabilities
    gives one classifier per model that uses every run.
    """
    probs = torch.as_tensor(probs)
    if probs.ndim == 2:
        probs = probs.unsqueeze(0)
    if probs.ndim != 3 or not probs.is_floating_point():
        raise EvalkitError(f"expected float probs of shape [runs, samples, classes], got {list(probs.shape)} "
                           f"{probs.dtype}")
    return probs.double().mean(dim=0).argmax(dim=-1)


def mcnemar(correct_a: torch.Tensor, correct_b: torch.Tensor) -> dict:
    """McNemar's test of two classifiers on the same samples, from which samples each got right.

    Only the disagreements count: ``b`` samples A got right and B wrong, ``c`` the reverse.
    With ``b + c < 25`` the p-value is the exact two-sided binomial test of ``b`` out of ``b + c``
    at 1/2 (``statistic`` is ``min(b, c)``); otherwise the chi-square test with 1 degree of
    freedom and continuity correction, ``(|b - c| - 1)**2 / (b + c)``, where the correction
    stops at zero (as R's ``mcnemar.test``) so that ``b = c`` gives p = 1.
    """
    correct_a, correct_b = torch.as_tensor(correct_a), torch.as_tensor(correct_b)
    if correct_a.dtype != torch.bool or correct_b.dtype != torch.bool:
        raise EvalkitError(f"expected boolean 'is correct' tensors (e.g. preds == target), "
                           f"got {correct_a.dtype} and {correct_b.dtype}")
    if correct_a.ndim != 1 or correct_a.shape != correct_b.shape:
        raise EvalkitError(f"expected two [N] tensors over the same samples, got shapes "
                           f"{list(correct_a.shape)} and {list(correct_b.shape)}")
    b = int((correct_a & ~correct_b).sum())
    c = int((~correct_a & correct_b).sum())
    n = b + c
    if n < MCNEMAR_EXACT_BELOW:
        # Two-sided binomial at 1/2 is symmetric: twice the smaller tail, in exact integers.
        tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
        return {"b": b, "c": c, "statistic": float(min(b, c)), "p_value": min(1.0, 2 * tail / 2**n),
                "method": "exact"}
    statistic = max(abs(b - c) - 1, 0) ** 2 / n
    # Survival function of chi-square with 1 degree of freedom: P(|Z| > sqrt(x)).
    return {"b": b, "c": c, "statistic": statistic, "p_value": math.erfc(math.sqrt(statistic / 2)),
            "method": "chi2"}
