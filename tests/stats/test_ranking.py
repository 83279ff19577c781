"""Friedman against scipy, Nemenyi against Demšar (2006), CD-diagram cliques on hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import f as f_dist
from scipy.stats import friedmanchisquare

from evalkit.errors import EvalkitError
from evalkit.stats import cliques, friedman, nemenyi_critical_difference


@pytest.mark.parametrize("seed,n_blocks,k,ties", [
    (0, 10, 3, False), (1, 14, 4, False), (2, 8, 6, True), (3, 20, 5, True), (4, 3, 3, True),
])
def test_friedman_matches_scipy(seed, n_blocks, k, ties):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, (n_blocks, k)).astype(float) if ties else rng.random((n_blocks, k))
    ours = friedman(scores, higher_is_better=True)
    expected = friedmanchisquare(*scores.T)  # scipy takes one argument per model (treatment)
    assert ours["statistic"] == pytest.approx(expected.statistic, rel=1e-12)
    assert ours["p_value"] == pytest.approx(expected.pvalue, rel=1e-10)
    # Iman-Davenport's F from the same statistic
    chi = expected.statistic
    f = (n_blocks - 1) * chi / (n_blocks * (k - 1) - chi)
    assert ours["iman_davenport_f"] == pytest.approx(f, rel=1e-12)
    assert ours["iman_davenport_p"] == pytest.approx(f_dist.sf(f, k - 1, (k - 1) * (n_blocks - 1)), rel=1e-10)
    assert (ours["n_blocks"], ours["k"]) == (n_blocks, k)


def test_average_ranks_by_hand():
    scores = torch.tensor([
        [0.9, 0.8, 0.8, 0.7],  # ranks 1, 2.5, 2.5, 4 (a tie shares ranks 2 and 3)
        [0.6, 0.9, 0.7, 0.5],  # ranks 3, 1, 2, 4
        [0.8, 0.7, 0.9, 0.6],  # ranks 2, 3, 1, 4
    ])
    out = friedman(scores, higher_is_better=True)
    assert out["average_ranks"] == pytest.approx([2.0, 6.5 / 3, 5.5 / 3, 4.0])
    lower = friedman(scores, higher_is_better=False)  # the same scores as errors: ranks reverse
    assert lower["average_ranks"] == pytest.approx([5 - r for r in out["average_ranks"]])
    assert lower["statistic"] == pytest.approx(out["statistic"])


def test_identical_rankings_and_all_ties():
    same = np.tile([0.9, 0.8, 0.7], (5, 1))
    out = friedman(same, higher_is_better=True)
    assert out["statistic"] == pytest.approx(5 * 2)  # the maximum, n (k - 1)
    assert out["iman_davenport_f"] == math.inf and out["iman_davenport_p"] == 0.0
    flat = friedman(np.ones((4, 3)), higher_is_better=True)
    assert flat["statistic"] == 0.0 and flat["p_value"] == 1.0 and flat["average_ranks"] == [2.0, 2.0, 2.0]


# Demšar (2006), Table 5: critical values of the two-tailed Nemenyi test, k = 2..6. The table's
# last digit is sometimes truncated, sometimes rounded (2.343 for 2.3437, 2.728 for 2.7277): within 1e-3.
@pytest.mark.parametrize("alpha,q", [
    (0.05, [1.960, 2.343, 2.569, 2.728, 2.850]),
    (0.10, [1.645, 2.052, 2.291, 2.459, 2.589]),
])
def test_nemenyi_q_matches_demsar_table_5(alpha, q):
    for k, expected in zip(range(2, 7), q):
        cd = nemenyi_critical_difference(k, 10, alpha)
        assert cd / math.sqrt(k * (k + 1) / 60) == pytest.approx(expected, abs=1e-3), k


def test_nemenyi_demsar_example():
    """Demšar's worked example: four classifiers on 14 data sets, CD = 1.25 at alpha = 0.05."""
    assert nemenyi_critical_difference(4, 14) == pytest.approx(1.25, abs=5e-3)


@pytest.mark.parametrize("k,n_blocks", [(1, 10), (5, 1), (0, 0)])
def test_nemenyi_needs_two_models_and_two_tasks(k, n_blocks):
    with pytest.raises(EvalkitError, match="at least 2 models and 2 tasks"):
        nemenyi_critical_difference(k, n_blocks)


def test_friedman_errors():
    with pytest.raises(EvalkitError, match="at least 2 models and 2 tasks"):
        friedman(np.ones((1, 4)), True)
    with pytest.raises(EvalkitError, match="at least 2 models and 2 tasks"):
        friedman(np.ones((5, 1)), True)
    with pytest.raises(EvalkitError, match="shape"):
        friedman(np.ones(5), True)
    with pytest.raises(EvalkitError, match="finite"):
        friedman(np.array([[0.5, np.nan], [0.4, 0.3]]), True)
    with pytest.raises(EvalkitError, match="no better end cannot be ranked"):  # e.g. alpha_req: never ranked
        friedman(np.ones((3, 3)), None)


def test_cliques_by_hand():
    # In rank order 0, 1, 2, 3, 4; cd 1.6: {0, 1, 2} span 1.5, {2, 3} and {3, 4} overlap.
    assert cliques([1.0, 2.0, 2.5, 3.9, 4.2], 1.6) == [[0, 1, 2], [2, 3], [3, 4]]
    # Input order does not matter: indices come back in rank order.
    assert cliques(torch.tensor([4.2, 2.5, 1.0, 3.9, 2.0]), 1.6) == [[2, 4, 1], [1, 3], [3, 0]]


def test_cliques_edges():
    assert cliques([1.0, 1.5, 2.0], 5.0) == [[0, 1, 2]]  # all alike: one bar
    assert cliques([1.0, 3.0, 5.0], 1.0) == []  # all different: no bars
    assert cliques([1.0, 2.0], 1.0) == []  # a difference of exactly CD is significant
    assert cliques([1.0, 2.0, 2.0], 1.0) == [[1, 2]]
