"""Reading results.json schema 2: old schemas refused, runs keyed by fingerprint and protocol, the
newest per key kept and the rest reported, and each metric's direction taken from its metadata."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from synthetic_runs import fingerprint, results, summary, write_run

from evalkit.errors import EvalkitError
from evalkit.report import load_results, write_report
from evalkit.report.regress import regress
from evalkit.stats.config import StatsConfig

REPORT = Path(__file__).resolve().parents[2] / "src" / "evalkit" / "report"
ECE = {"expected_calibration_error": {"name": "expected_calibration_error", "higher_is_better": False, "lower": 0.0,
                                      "upper": 1.0, "computed_by": "tests.ece", "description": "calibration error"}}
SPREAD = {"spread": {"name": "spread", "higher_is_better": None, "lower": None, "upper": None,
                     "computed_by": "tests.spread", "description": "no better end"}}


def _report(root: Path, tmp_path: Path, metric: str = "balanced_accuracy") -> tuple[str, dict]:
    out = tmp_path / "report"
    markdown = write_report([root], out, metric, StatsConfig(n_resamples=100), plots=False)
    return markdown, json.loads((out / "comparison.json").read_text())


def _rows(markdown: str) -> dict[str, str]:
    """The main table's rows by model label."""
    table = markdown.split("\n\n")[1]
    return {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}


@pytest.mark.parametrize("version, shown", [(None, 1), (1, 1), (3, 3)])
def test_another_schema_is_refused_in_one_line(tmp_path, version, shown):
    body = results("crc", "vit", {"val": {"balanced_accuracy": summary(0.9)}})
    body.pop("schema_version") if version is None else body.update(schema_version=version)
    write_run(tmp_path / "run", body)
    with pytest.raises(EvalkitError) as error:
        load_results([tmp_path])
    assert str(error.value) == (f"{tmp_path / 'run' / 'results.json'} is results.json schema {shown}; this evalkit "
                                "reads schema 2: regenerate it with `evalkit fit` (same task and model configs)")


@pytest.mark.parametrize("key", ["evaluation", "model_fingerprint", "primary_metric", "metrics"])
def test_a_schema_2_record_without_a_required_key_is_one_line(tmp_path, key):
    body = results("crc", "vit", {"val": {"balanced_accuracy": summary(0.9)}})
    body.pop(key)
    write_run(tmp_path / "run", body)
    with pytest.raises(EvalkitError, match=f"is not an evalkit results.json: it lacks {key}; regenerate it"):
        load_results([tmp_path])


def test_two_models_with_one_display_name_are_two_rows(tmp_path):
    for weights, mean in (("a", 0.9), ("b", 0.8)):
        write_run(tmp_path / "runs" / weights, results("crc", "vit", {"val": {"balanced_accuracy": summary(mean)}},
                                                       model_fingerprint=fingerprint(weights)))
    write_run(tmp_path / "runs" / "other", results("crc", "uni", {"val": {"balanced_accuracy": summary(0.7)}}))
    markdown, comparison = _report(tmp_path / "runs", tmp_path)
    rows = _rows(markdown)
    a, b = f"vit [{fingerprint('a')[:8]}]", f"vit [{fingerprint('b')[:8]}]"
    assert set(rows) == {a, b, "uni"}  # a unique display name stays as it is
    assert "**0.900" in rows[a] and "**" not in rows[b]
    assert comparison["columns"]["crc/val"]["best"] == a


def test_one_model_under_two_protocols_shows_both(tmp_path):
    runs = tmp_path / "runs"
    for protocol, mean in (("sgd_kaiko", 0.9), ("adamw_eva", 0.85)):
        write_run(runs / protocol, results("crc", "vit", {"val": {"balanced_accuracy": summary(mean)}},
                                           protocol=protocol))
    write_run(runs / "bach", results("bach", "vit", {"val": {"balanced_accuracy": summary(0.7)}}))
    markdown, _ = _report(runs, tmp_path)
    rows = _rows(markdown)
    assert set(rows) == {"vit (sgd_kaiko)", "vit (adamw_eva)"}
    assert rows["vit (adamw_eva)"].split("|")[2:4] == [" – ", " 0.850 ± 0.000 "]  # bach, crc
    assert "; protocols: bach sgd_kaiko; crc adamw_eva, sgd_kaiko" in markdown.splitlines()[0]
    assert "left out" not in markdown


def test_the_newest_run_per_key_wins_and_the_report_says_what_it_left_out(tmp_path):
    runs = tmp_path / "runs"
    for day, mean in ((1, 0.7), (3, 0.9), (2, 0.8)):
        body = results("crc", "vit", {"val": {"balanced_accuracy": summary(mean)}})
        body["provenance"]["created"] = f"2025-01-0{day}T00:00:00+0000"
        write_run(runs / f"day{day}", body)
    [run] = load_results([runs])
    assert run.metric("val", "balanced_accuracy")["mean"] == 0.9
    assert sorted(path.parent.name for path in run.superseded) == ["day1", "day2"]
    markdown, _ = _report(runs, tmp_path)
    assert "2 older runs of the same (task, evaluation, protocol, model) left out" in markdown
    assert str(runs / "day1" / "results.json") in markdown


def test_a_lower_is_better_metric_crowns_the_lowest_and_regress_follows_its_direction(tmp_path):
    def run(root: Path, model: str, ece: float) -> Path:
        metrics = {"val": {"expected_calibration_error": summary(ece), "balanced_accuracy": summary(0.8)}}
        return write_run(root / model, results("crc", model, metrics, metric_info=ECE)).parent

    base = run(tmp_path / "base", "vit", 0.05)
    run(tmp_path / "base", "uni", 0.10)
    markdown, comparison = _report(base, tmp_path, "expected_calibration_error")
    rows = _rows(markdown)
    assert "**0.050" in rows["vit"] and "**" not in rows["uni"]
    assert comparison["higher_is_better"] is False and comparison["columns"]["crc/val"]["best"] == "vit"
    assert "lower is better, best in bold" in markdown.splitlines()[0]

    def check(ece: float) -> bool:
        new = run(tmp_path / f"new-{ece}", "vit", ece)
        table, passed = regress([str(new)], str(base / "vit"), ["expected_calibration_error"], 0.01, 2.0,
                                StatsConfig(n_resamples=100))
        return passed

    assert not check(0.08)  # went up by 0.03: worse beyond the tolerance
    assert check(0.01)  # went down: better
    assert check(0.055)  # up, but within the tolerance


def test_the_registry_gives_the_direction_when_metric_info_lacks_it(tmp_path):
    """odcorr is registered lower-is-better."""
    for model, value in (("vit", 0.3), ("uni", 0.2)):
        body = results("crc", model, {"val": {"odcorr": summary(value)}})
        body["metric_info"] = {}
        write_run(tmp_path / "runs" / model, body)
    markdown, comparison = _report(tmp_path / "runs", tmp_path, "odcorr")
    assert comparison["columns"]["crc/val"]["best"] == "uni" and "**0.200" in _rows(markdown)["uni"]


def test_a_metric_with_no_better_end_is_shown_never_crowned_and_not_judged(tmp_path):
    for model, value in (("vit", 1.2), ("uni", 0.9)):
        write_run(tmp_path / "runs" / model,
                  results("crc", model, {"val": {"spread": summary(value)}}, metric_info=SPREAD))
        write_run(tmp_path / "runs" / f"{model}-bach",
                  results("bach", model, {"val": {"spread": summary(value / 2)}}, metric_info=SPREAD))
    markdown, comparison = _report(tmp_path / "runs", tmp_path, "spread")
    assert "**" not in markdown and "1.200 ± 0.000" in _rows(markdown)["vit"]
    assert comparison["columns"]["crc/val"]["best"] is None
    assert "not ranked" in comparison["friedman"]["note"]
    with pytest.raises(EvalkitError) as error:
        regress([str(tmp_path / "runs")], str(tmp_path / "runs"), ["spread"], 0.01, 2.0, StatsConfig())
    assert "spread has no better end" in str(error.value) and "\n" not in str(error.value)


def _imports(path: Path) -> set[str]:
    """The evalkit.report modules that ``path`` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("evalkit.report"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("evalkit.report")}
    return found


def test_the_report_modules_import_no_circle():
    graph = {f"evalkit.report.{p.stem}" if p.stem != "__init__" else "evalkit.report": _imports(p)
             for p in REPORT.glob("*.py")}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        return any(nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt}))
                   for nxt in graph.get(start, ()))

    assert not [module for module in graph if reaches(module, module, set())]
    assert graph["evalkit.report.runs"] == set()  # the results model depends on no renderer
