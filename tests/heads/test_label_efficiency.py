"""Label-efficiency curves: the area formula, the config's checks, the curves' shape and the
linear head's per-run training subsets."""

from __future__ import annotations

import json
import math

import pytest
import torch

from evalkit.errors import EvalkitError
from evalkit.heads.label_efficiency import LabelEfficiencyConfig, label_efficiency, normalised_area
from evalkit.heads.linear import LinearProbeConfig, fit_linear_probe
from evalkit.stats.config import StatsConfig


def _blobs(n_per_class: int, classes: int = 3, dim: int = 16, spread: float = 1.5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 2
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = centres[y] + spread * torch.randn(len(y), dim, generator=g)
    return x, y


def test_area_of_a_flat_curve_is_its_level_and_of_a_line_in_log_budget_its_midpoint():
    assert normalised_area([0.7, 0.7, 0.7], [1, 4, 16]) == pytest.approx(0.7)
    assert normalised_area([0.2, 0.4, 0.6], [1, 2, 4]) == pytest.approx(0.4)  # linear in log2(k)
    assert normalised_area([0.6, 0.2, 0.4], [4, 1, 2]) == pytest.approx(0.4)  # order of the points is irrelevant
    assert normalised_area([0.3], [8]) == pytest.approx(0.3)
    # unequal spacing: trapezoid on log budget, by hand
    expected = (0.5 * (0.2 + 0.5) * math.log(2) + 0.5 * (0.5 + 0.9) * math.log(8)) / math.log(16)
    assert normalised_area([0.2, 0.5, 0.9], [1, 2, 16]) == pytest.approx(expected)


@pytest.mark.parametrize("kwargs, message", [
    ({"heads": ["nope"]}, "unknown few-shot head 'nope'"),
    ({"draws": 0}, "draws must be at least 1"),
    ({"shots": [0]}, "shots must be integers"),
    ({"fractions": [1.5]}, "fractions must be in (0, 1]"),
])
def test_config_refuses_bad_settings_in_one_line(kwargs, message):
    with pytest.raises(EvalkitError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        LabelEfficiencyConfig(**kwargs)


def test_curves_off_by_default():
    assert not LabelEfficiencyConfig().enabled
    assert LabelEfficiencyConfig(shots=[1]).enabled


def test_curves_for_every_head_budget_and_split():
    train, val, test = _blobs(30), _blobs(10, seed=1), _blobs(20, seed=2)
    cfg = LabelEfficiencyConfig(shots=[1, 8], fractions=[0.5, 1.0], draws=2, seed=3)
    ids = [f"tile-{i}" for i in range(len(train[1]))]
    out = label_efficiency(train, val, {"val": val, "test": test}, 3, cfg,
                           LinearProbeConfig(n_runs=5, max_steps=200), StatsConfig(n_resamples=200), ids,
                           log=lambda _: None)
    json.dumps(out)  # results.json-ready
    assert out["heads"] == ["linear", "knn", "simpleshot", "logreg"]
    assert [(s["kind"], s["value"], s["seed"]) for s in out["subsets"]] == [
        ("shots", 1, 3), ("shots", 1, 4), ("shots", 8, 3), ("shots", 8, 4),
        ("fraction", 0.5, 3), ("fraction", 0.5, 4), ("fraction", 1.0, 3), ("fraction", 1.0, 4)]
    one_shot = out["subsets"][0]
    assert one_shot["n"] == 3 and len(one_shot["ids"]) == 3 and set(one_shot["ids"]) <= set(ids)
    assert out["subsets"][-1]["n"] == 90
    for head in out["heads"]:
        for split in ("val", "test"):
            shots = out["curves"][head][split]["shots"]
            assert [p["value"] for p in shots] == [1, 8] and [p["n_labels"] for p in shots] == [3, 24]
            for point in shots + out["curves"][head][split]["fraction"]:
                assert len(point["draws"]) == 2
                assert point["mean"] == pytest.approx(sum(point["draws"]) / 2)
                assert point["ci_low"] - 1e-9 <= point["mean"] <= point["ci_high"] + 1e-9
            assert 0.0 <= out["auc"][head][split]["shots"] <= 1.0
        # more labels help on overlapping blobs: all labels beat one per class
        full = out["curves"][head]["test"]["fraction"][-1]["mean"]
        assert full > out["curves"][head]["test"]["shots"][0]["mean"] - 0.02


def test_same_seed_same_draws():
    train, val = _blobs(20), _blobs(5, seed=1)
    cfg = LabelEfficiencyConfig(shots=[2], draws=2, heads=["knn"])
    runs = [label_efficiency(train, val, {"val": val}, 3, cfg, LinearProbeConfig(), StatsConfig(n_resamples=100),
                             [str(i) for i in range(60)], log=lambda _: None) for _ in range(2)]
    assert runs[0]["subsets"] == runs[1]["subsets"]
    assert runs[0]["curves"] == runs[1]["curves"]


def test_linear_run_on_a_subset_is_the_run_fitted_on_that_subset_alone():
    x, y = _blobs(40, spread=2.0)
    val = _blobs(10, seed=1)
    g = torch.Generator().manual_seed(0)
    subsets = torch.stack([torch.randperm(len(y), generator=g)[:60], torch.nonzero(y != 2).flatten()[:60]])
    cfg = LinearProbeConfig(n_runs=2, max_steps=300, seed=7)
    together = fit_linear_probe((x, y), val, 3, cfg, {"val": val}, subsets=subsets)
    for r in range(2):
        rows = subsets[r]
        alone = fit_linear_probe((x[rows], y[rows]), val, 3, LinearProbeConfig(n_runs=1, max_steps=300, seed=7 + r),
                                 {"val": val})
        assert torch.allclose(together.probs["val"][r], alone.probs["val"][0], atol=1e-6)
        assert together.best_epochs[r] == alone.best_epochs[0]


def _counting(monkeypatch):
    """Counts the linear fits (and their runs) and the few-shot head fits label_efficiency makes."""
    import evalkit.heads.label_efficiency as le
    from evalkit.heads.fewshot import FEWSHOT_HEADS

    calls = {"linear_fits": 0, "linear_runs": 0, "knn": 0}
    fit = le.fit_linear_probe

    def counting_fit(*args, **kwargs):
        calls["linear_fits"] += 1
        calls["linear_runs"] += args[3].n_runs
        return fit(*args, **kwargs)

    monkeypatch.setattr(le, "fit_linear_probe", counting_fit)
    knn = FEWSHOT_HEADS.get("knn")

    def counting_knn(*args, **kwargs):
        calls["knn"] += 1
        return knn(*args, **kwargs)

    monkeypatch.setattr(FEWSHOT_HEADS, "get", lambda name: counting_knn if name == "knn" else FEWSHOT_HEADS._items[name])
    return calls


def test_identical_subsets_are_fitted_once_and_budgets_in_one_linear_fit(monkeypatch):
    """Class sizes 4, 6 and 8: 8 shots and the fraction 1.0 both draw the whole set (every draw the
    same rows), and the fraction 0.25 (1, 2, 2 per class) is the 2-shot draw only where it agrees."""
    calls = _counting(monkeypatch)
    y = torch.tensor([0] * 4 + [1] * 6 + [2] * 8)
    x = torch.randn(18, 8, generator=torch.Generator().manual_seed(0)) + 3 * torch.nn.functional.one_hot(y, 8)
    val = _blobs(5, dim=8, seed=1)
    cfg = LabelEfficiencyConfig(shots=[2, 8], fractions=[1.0], draws=3, heads=["linear", "knn"])
    out = label_efficiency((x, y), val, {"val": val}, 3, cfg, LinearProbeConfig(n_runs=5, max_steps=50),
                           StatsConfig(n_resamples=100), [str(i) for i in range(18)], log=lambda _: None)
    # knn: 3 distinct 2-shot draws + the whole set once (8 shots and fraction 1.0, every draw)
    assert calls["knn"] == 4
    # linear: one batched fit; runs are distinct (rows, seed): 3 two-shot draws + the whole set at 3 seeds
    assert calls["linear_fits"] == 1 and calls["linear_runs"] == 6
    curves = out["curves"]["linear"]["val"]
    assert curves["shots"][1]["draws"] == curves["fraction"][0]["draws"]  # the same fits, reported twice


def test_budgets_larger_than_a_class_report_the_samples_used():
    y = torch.tensor([0] * 2 + [1] * 9 + [2] * 9)
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(0)) + 3 * torch.nn.functional.one_hot(y, 8)
    val = _blobs(5, dim=8, seed=1)
    lines: list[str] = []
    out = label_efficiency((x, y), val, {"val": val}, 3, LabelEfficiencyConfig(shots=[1, 4], draws=2, heads=["knn"]),
                           LinearProbeConfig(), StatsConfig(n_resamples=100), [str(i) for i in range(20)],
                           log=lines.append)
    one, four = out["curves"]["knn"]["val"]["shots"]
    assert one["per_class"] == {"0": 1, "1": 1, "2": 1} and one["short_classes"] == []
    assert four["value"] == 4 and four["n_labels"] == 10
    assert four["per_class"] == {"0": 2, "1": 4, "2": 4} and four["short_classes"] == [0]
    assert any("shots 4" in line and "class 0 has 2" in line for line in lines)
    json.dumps(out)


def test_the_probes_own_runs_are_not_refitted(monkeypatch):
    """Runs on the whole training set with the probe's seeds come from the probe (whole_set_fits)."""
    from evalkit.heads.label_efficiency import whole_set_fits

    train, val = _blobs(6), _blobs(4, seed=1)
    linear = LinearProbeConfig(n_runs=3, max_steps=40)
    probe = fit_linear_probe(train, val, 3, linear, {"val": val})
    calls = _counting(monkeypatch)
    cfg = LabelEfficiencyConfig(shots=[1], fractions=[1.0], draws=3, heads=["linear"])
    out = label_efficiency(train, val, {"val": val}, 3, cfg, linear, StatsConfig(n_resamples=100),
                           [str(i) for i in range(18)], log=lambda _: None, known=whole_set_fits(probe, 18))
    assert calls["linear_runs"] == 3  # only the 1-shot draws
    whole = out["curves"]["linear"]["val"]["fraction"][0]
    assert whole["draws"] == probe.metrics["val"]["balanced_accuracy"]
