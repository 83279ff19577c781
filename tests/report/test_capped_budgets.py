"""The report's label-efficiency table names the k-shot budgets that a class could not fill."""

from __future__ import annotations

import torch

from evalkit.heads.label_efficiency import LabelEfficiencyConfig, label_efficiency
from evalkit.heads.linear import LinearProbeConfig
from evalkit.report.tables import _capped_budgets
from evalkit.stats.config import StatsConfig


def test_capped_budgets_from_the_curve_points():
    y = torch.tensor([0] * 2 + [1] * 9 + [2] * 9)
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(0)) + 3 * torch.nn.functional.one_hot(y, 8)
    out = label_efficiency((x, y), (x, y), {"val": (x, y)}, 3, LabelEfficiencyConfig(shots=[1, 3, 4], draws=1,
                                                                                     heads=["knn"]),
                           LinearProbeConfig(), StatsConfig(n_resamples=100), [str(i) for i in range(20)],
                           log=lambda _: None)
    assert _capped_budgets(out) == "3, 4 (2 in class 0)"


def test_results_without_the_fields_list_nothing():
    point = {"value": 4, "n_labels": 8, "mean": 0.5, "ci_low": 0.4, "ci_high": 0.6}
    assert _capped_budgets({"curves": {"knn": {"val": {"shots": [point], "fraction": []}}}}) == ""
    odd = {**point, "short_classes": [1], "per_class": "garbled"}
    assert _capped_budgets({"curves": {"knn": {"val": {"shots": [odd]}}}}) == "4 (? in class 1)"
    two = {**point, "short_classes": [0, 1], "per_class": {"0": 2, "1": 2, "2": 5}}
    assert _capped_budgets({"curves": {"knn": {"val": {"shots": [two]}}}}) == "4 (2 in classes 0, 1)"
