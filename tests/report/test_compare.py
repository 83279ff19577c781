"""The comparison report on hand-made runs with known differences: CIs, bold best, ≈ where a
difference is noise, paired tests, Friedman/Nemenyi, and readable PNG plots."""

from __future__ import annotations

import json

import pytest

from evalkit.predictions import read_predictions
from evalkit.report import write_report
from evalkit.stats.config import StatsConfig


def test_table_marks_the_best_and_what_is_not_significantly_different(runs, tmp_path):
    out = tmp_path / "report"
    markdown = write_report([runs], out, stats=StatsConfig(n_resamples=500))
    main_table = markdown.split("Paired comparisons")[0]
    rows = {line.split("|")[1].strip(): line for line in main_table.splitlines() if line.startswith("| ")}
    assert rows["best"].count("**") == 4  # bold in both columns
    assert rows["twin"].count("≈") == 2  # 4 changed samples out of 400: noise
    assert "≈" not in rows["weak"] and "**" not in rows["weak"]
    comparison = json.loads((out / "comparison.json").read_text())
    weak = comparison["columns"]["task_a/test"]["versus_best"]["weak"]
    assert weak["significant"] and weak["p_value"] < 0.01 and weak["mcnemar_p"] < 0.001
    assert weak["ci_low"] > 0  # best - weak, excluding 0
    twin = comparison["columns"]["task_a/test"]["versus_best"]["twin"]
    assert not twin["significant"] and twin["p_value"] >= 0.05 and twin["mcnemar_p"] >= 0.05


def test_friedman_and_critical_difference_over_the_columns(runs, tmp_path):
    out = tmp_path / "report"
    markdown = write_report([runs], out, stats=StatsConfig(n_resamples=200))
    friedman = json.loads((out / "comparison.json").read_text())["friedman"]
    assert friedman["k"] == 3 and friedman["n_blocks"] == 2
    assert friedman["average_ranks"] == {"best": 1.0, "twin": 2.0, "weak": 3.0}
    # Demšar: q_0.05(k=3) = 2.343, CD = q * sqrt(k(k+1) / (6N))
    assert friedman["critical_difference"] == pytest.approx(2.343 * (3 * 4 / 12) ** 0.5, abs=2e-3)
    assert "Friedman test over 2 task/split columns and 3 models" in markdown


def test_plots_are_written_and_readable_images(runs, tmp_path):
    import matplotlib.image

    out = tmp_path / "report"
    write_report([runs], out, stats=StatsConfig(n_resamples=200))
    names = {"bars_balanced_accuracy.png", "balanced_accuracy_vs_representation.png", "critical_difference.png",
             "label_efficiency_task_a.png"}
    assert names <= {p.name for p in out.glob("*.png")}
    assert not (out / "label_efficiency_task_b.png").exists()  # no curves for task_b
    for name in names:
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 200 and image.shape[1] > 400
        assert image[..., :3].std() > 0.05  # not blank


def test_runs_on_different_samples_are_refused_in_one_line(runs, tmp_path):
    from evalkit.errors import EvalkitError

    pred = read_predictions(runs / "task_a" / "twin" / "run-1")["test"]
    with pytest.raises(EvalkitError, match="different samples"):
        pred.aligned_to([f"other{i}" for i in range(len(pred.ids))])
