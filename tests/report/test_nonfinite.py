"""NaN and ±inf in results and baselines: `regress` gives them their own failing status (NaN compares
false with every bound, so judged it would pass), `report` shows them marked and never crowns, tests
or ranks them, and an undefined representation metric (null) is `n/a`, not a failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from synthetic_runs import results, summary, write_run

from evalkit.cli import main
from evalkit.report import write_report
from evalkit.stats.config import StatsConfig

NAN, INF = float("nan"), float("inf")
CSV_HEADER = "model,task,split,metric,mean,std,protocol,source\n"


def _crc_run(root: Path, mean: float, std: float = 0.0, **fields) -> Path:
    """A crc/val linear-probe run of ``vit`` with ``balanced_accuracy`` = mean ± std; returns its folder's parent."""
    write_run(root / "vit", results("crc", "vit", {"val": {"balanced_accuracy": summary(mean, std)}}, **fields))
    return root


def _table_rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("| vit ")]


@pytest.mark.parametrize("side, field, value, status", [
    ("new", "mean", NAN, "NONFINITE (new mean)"),
    ("baseline", "mean", NAN, "NONFINITE (baseline mean)"),
    ("new", "mean", -INF, "NONFINITE (new mean)"),
    ("baseline", "std", INF, "NONFINITE (baseline std)"),
    ("new", "std", NAN, "NONFINITE (new std)"),
])
def test_a_non_finite_result_or_baseline_fails_as_nonfinite(tmp_path, capsys, side, field, value, status):
    numbers = {"new": {"mean": 0.9, "std": 0.01}, "baseline": {"mean": 0.9, "std": 0.01}}
    numbers[side][field] = value
    new = _crc_run(tmp_path / "new", **numbers["new"])
    base = _crc_run(tmp_path / "base", **numbers["baseline"])
    assert main(["regress", str(new), "--baseline", str(base)]) == 1
    out = capsys.readouterr().out
    [row] = _table_rows(out)
    assert row.split("|")[-2].strip() == status
    assert row.split("|")[6:9] == [" – ", " – ", " – "]  # no difference, allowed worsening or p is made up
    assert "0 of 1 passed; 1 not judged, a mean or std being NaN or inf (NONFINITE)" in out
    assert "regression(s)" not in out


@pytest.mark.parametrize("column, cell", [("mean", "nan"), ("mean", "inf"), ("std", "-Infinity"), ("std", "NaN")])
def test_a_non_finite_cell_of_a_baseline_csv_fails_as_nonfinite(tmp_path, capsys, column, cell):
    new = _crc_run(tmp_path / "new", 0.9)
    numbers = {"mean": "0.9", "std": "0.01", column: cell}
    table = tmp_path / "published.csv"
    table.write_text(CSV_HEADER + f"vit,crc,val,balanced_accuracy,{numbers['mean']},{numbers['std']},sgd_kaiko,paper\n")
    assert main(["regress", str(new), "--baseline", str(table)]) == 1
    [row] = _table_rows(capsys.readouterr().out)
    assert row.split("|")[-2].strip() == f"NONFINITE (baseline {column})"


def test_finite_rows_beside_a_non_finite_one_are_still_judged(tmp_path, capsys):
    new = _crc_run(tmp_path / "new", 0.9)
    write_run(new / "uni", results("crc", "uni", {"val": {"balanced_accuracy": summary(0.8)}}))
    table = tmp_path / "published.csv"
    table.write_text(CSV_HEADER + "vit,crc,val,balanced_accuracy,nan,,sgd_kaiko,paper\n"
                     "uni,crc,val,balanced_accuracy,0.8,0.01,sgd_kaiko,paper\n")
    assert main(["regress", str(new), "--baseline", str(table)]) == 1
    out = capsys.readouterr().out
    assert "| uni | crc/val | balanced_accuracy | 0.8000 | 0.8000 | +0.0000 | 0.0200 | – | PASS |" in out
    assert "1 of 2 passed; 1 not judged" in out


def _report(root: Path, tmp_path: Path) -> tuple[str, dict, Path]:
    out = tmp_path / "report"
    markdown = write_report([root], out, "balanced_accuracy", StatsConfig(n_resamples=100), plots=True, html=True)
    return markdown, json.loads((out / "comparison.json").read_text()), out


def _main_rows(markdown: str) -> dict[str, list[str]]:
    """The main table's cells by model label."""
    table = markdown.split("\n\n")[1]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.split("|")[1:-1]]
                                              for line in table.splitlines()[2:])}


def test_a_non_finite_cell_is_shown_marked_and_never_best_tested_or_ranked(tmp_path):
    """vit has the highest crc mean but a NaN std, res an inf mean: uni is the best of crc; the two
    finite columns still rank all three; a column with no finite value has no best."""
    root = tmp_path / "runs"
    scores = {"crc": {"vit": summary(0.95, NAN), "uni": summary(0.8), "res": summary(INF)},
              "bach": {"vit": summary(0.6), "uni": summary(0.7), "res": summary(0.5)},
              "pcam": {"vit": summary(0.9), "uni": summary(0.8), "res": summary(0.7)},
              "mhist": {"vit": summary(NAN)}}
    for task, by_model in scores.items():
        for model, value in by_model.items():
            write_run(root / task / model, results(task, model, {"val": {"balanced_accuracy": value}}))
    markdown, comparison, out = _report(root, tmp_path)
    rows = _main_rows(markdown)
    header = markdown.split("\n\n")[1].splitlines()[0]
    assert header == "| model | bach/val | crc/val | mhist/val | pcam/val |"
    assert rows["vit"][1:3] == ["0.950 ± nan (non-finite)", "nan ± 0.000 (non-finite)"]
    assert rows["res"][1] == "inf ± 0.000 (non-finite)"
    assert rows["uni"][1] == "**0.800 ± 0.000**"
    assert comparison["columns"]["crc/val"]["best"] == "uni"
    assert comparison["columns"]["crc/val"]["versus_best"] == {
        "res": {"note": "non-finite balanced_accuracy (mean): not compared"},
        "vit": {"note": "non-finite balanced_accuracy (std): not compared"}}
    assert comparison["columns"]["mhist/val"] == {
        "best": None, "note": "balanced_accuracy has no finite value in this column: no best, no tests"}
    assert comparison["non_finite"] == [
        {"model": "res", "column": "crc/val", "fields": ["mean"]},
        {"model": "vit", "column": "crc/val", "fields": ["std"]},
        {"model": "vit", "column": "mhist/val", "fields": ["mean"]}]
    friedman = comparison["friedman"]
    assert friedman["blocks"] == ["bach/val", "pcam/val"]
    assert friedman["average_ranks"] == {"res": 3.0, "uni": 1.5, "vit": 1.5}
    assert ("3 non-finite balanced_accuracy value(s) (NaN or ±inf), marked (non-finite) in the table and left out of "
            "the best, the paired comparisons and the Friedman test: res on crc/val (mean); vit on crc/val (std); "
            "vit on mhist/val (mean); check the runs that produced them.") in markdown
    assert "| crc/val | uni vs vit | – | – | – | – | non-finite balanced_accuracy (std): not compared |" \
        in markdown
    assert "Friedman test over 2 task/split columns and 3 models" in markdown
    assert "at alpha 0.05. Columns with a non-finite value are left out of it." in markdown
    html = (out / "report.html").read_text()
    assert "0.950 ± nan (non-finite)" in html and "<strong>0.950" not in html
    assert {p.name for p in out.glob("*.png")} == {"bars_balanced_accuracy.png", "critical_difference.png"}


def test_undefined_representation_metrics_are_na_and_not_failures(tmp_path, capsys):
    undefined = {"val": {"rankme": None, "odcorr": None, "alpha_req": None}}
    base = _crc_run(tmp_path / "base", 0.9, representation=undefined)
    new = _crc_run(tmp_path / "new", 0.9, representation={"val": {"rankme": None, "odcorr": 0.25, "alpha_req": INF}})
    assert main(["regress", str(new), "--baseline", str(base)]) == 0
    assert "1 of 1 passed\n" in capsys.readouterr().out
    markdown, _, out = _report(new, tmp_path)
    assert "| vit | crc/val | n/a | 0.250 | inf (non-finite) |" in markdown
    assert '<td class="num">n/a</td>' in (out / "report.html").read_text()
    assert not (out / "balanced_accuracy_vs_representation.png").exists()  # RankMe undefined: no point to plot
