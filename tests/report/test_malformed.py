"""A results.json or baseline CSV of the wrong shape is refused at load in one line that names the file,
where in it the bad value is, what was expected, what was found and what to do; never a traceback
from deep inside a renderer. Through the functions, and once per command through the real CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
from synthetic_runs import results, summary, write_run

from evalkit.errors import EvalkitError
from evalkit.report import load_results, write_report
from evalkit.report.regress import regress
from evalkit.stats.config import StatsConfig
from helpers import cli_env, evalkit_cmd

REGENERATE = "; regenerate it with `evalkit fit`"
CSV_HEADER = "model,task,split,metric,mean,std,protocol,source\n"


def _body() -> dict[str, Any]:
    return results("crc", "vit", {"val": {"balanced_accuracy": summary(0.9)}},
                   representation={"val": {"rankme": 12.0, "odcorr": 0.3, "alpha_req": None}})


def _metric(body: dict[str, Any]) -> dict[str, Any]:
    return body["metrics"]["val"]["balanced_accuracy"]


# name -> (how to damage a good record, the message after "<file> is not an evalkit results.json: ")
DAMAGE: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "mean_is_a_string": (lambda b: _metric(b).update(mean="0.9"),
                         'metrics.val.balanced_accuracy.mean should be a number, found the string "0.9"'),
    "metric_is_null": (lambda b: b["metrics"]["val"].update(balanced_accuracy=None),
                       "metrics.val.balanced_accuracy should be an object with mean and std, found null"),
    "metrics_is_a_list": (lambda b: b.update(metrics=[{"balanced_accuracy": 0.9}]),
                          "metrics should be an object of splits, found a list"),
    "split_is_not_an_object": (lambda b: b["metrics"].update(val=0.9),
                               "metrics.val should be an object of metrics, found the number 0.9"),
    "runs_is_not_a_list": (lambda b: _metric(b).update(runs=0.9),
                           "metrics.val.balanced_accuracy.runs should be a list of numbers, found the number 0.9"),
    "a_run_is_not_a_number": (lambda b: _metric(b).update(runs=[0.9, None]),
                              "metrics.val.balanced_accuracy.runs[1] should be a number, found null"),
    "mean_is_a_boolean": (lambda b: _metric(b).update(mean=True),
                          "metrics.val.balanced_accuracy.mean should be a number, found true"),
    "no_std": (lambda b: _metric(b).pop("std"), "metrics.val.balanced_accuracy lacks std"),
    "ci_low_without_ci_high": (lambda b: _metric(b).update(ci_low=0.8),
                               "metrics.val.balanced_accuracy lacks ci_high"),
    "primary_metric_is_null": (lambda b: b.update(primary_metric=None),
                               "primary_metric should be a string, found null"),
    "no_primary_metric": (lambda b: b.pop("primary_metric"), "it lacks primary_metric"),
    "fingerprint_is_a_number": (lambda b: b.update(model_fingerprint=7),
                                "model_fingerprint should be a string or null, found the number 7"),
    "direction_is_a_string": (lambda b: b["metric_info"]["balanced_accuracy"].update(higher_is_better="yes"),
                              'metric_info.balanced_accuracy.higher_is_better should be a boolean or null, found '
                              'the string "yes"'),
    "representation_is_text": (lambda b: b["representation"]["val"].update(rankme="undefined"),
                               'representation.val.rankme should be a number or null, found the string "undefined"'),
    "label_efficiency_area_is_text": (
        lambda b: b.update(curves={"label_efficiency": {"metric": "balanced_accuracy", "heads": ["knn"], "curves": {},
                                                        "auc": {"knn": {"val": {"shots": "0.5"}}}}}),
        'curves.label_efficiency.auc.knn.val.shots should be a number, found the string "0.5"'),
    "packages_is_a_list": (lambda b: b["provenance"].update(packages=["torch"]),
                           "provenance.packages should be an object of versions or null, found a list"),
    "top_level_is_a_list": (lambda b: [b], "the top level should be a JSON object, found a list"),
}


def _damaged(run_dir: Path, name: str) -> Path:
    """A run folder whose results.json has the damage ``name``; returns the file."""
    damage, _ = DAMAGE[name]
    body = _body()
    replaced = damage(body)
    write_run(run_dir, body)
    file = run_dir / "results.json"
    if isinstance(replaced, list):  # a damage that returns a new top level
        file.write_text(json.dumps(replaced))
    return file


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_a_results_json_of_the_wrong_shape_is_refused_in_one_line(tmp_path, name):
    file = _damaged(tmp_path / "run", name)
    with pytest.raises(EvalkitError) as error:
        load_results([tmp_path])
    assert str(error.value) == f"{file} is not an evalkit results.json: {DAMAGE[name][1]}{REGENERATE}"


def test_a_file_that_is_not_json_says_what_to_point_at(tmp_path):
    file = tmp_path / "run" / "results.json"
    file.parent.mkdir()
    file.write_text('{"schema_version": 2, "task": ')
    with pytest.raises(EvalkitError) as error:
        load_results([tmp_path])
    assert str(error.value) == (f"{file} is not an evalkit results.json (not JSON); point at a results.json "
                                "written by `evalkit fit`, or a folder of them")


def test_nan_and_inf_are_numbers_to_the_shape_check(tmp_path):
    """Non-finite values are results, flagged by the readers (test_nonfinite.py), not malformed files."""
    body = _body()
    _metric(body).update(mean=float("nan"), std=float("inf"), ci_low=float("-inf"), ci_high=float("nan"))
    write_run(tmp_path / "run", body)
    [run] = load_results([tmp_path])
    assert run.metric("val", "balanced_accuracy")["std"] == float("inf")


def test_report_and_regress_check_the_results_and_the_baseline(tmp_path):
    good = tmp_path / "good" / "vit"
    write_run(good, _body())
    bad = _damaged(tmp_path / "bad" / "vit", "metric_is_null")
    expected = f"{bad} is not an evalkit results.json: {DAMAGE['metric_is_null'][1]}{REGENERATE}"
    for check in (lambda: write_report([tmp_path / "bad"], tmp_path / "out", plots=False),
                  lambda: regress([str(tmp_path / "bad")], str(good), ["balanced_accuracy"], 0.01, 2.0, StatsConfig()),
                  lambda: regress([str(good)], str(bad.parent), ["balanced_accuracy"], 0.01, 2.0, StatsConfig())):
        with pytest.raises(EvalkitError) as error:
            check()
        assert str(error.value) == expected


@pytest.mark.parametrize("row, column, found", [
    ("vit,crc,val,balanced_accuracy,0.9x,0.01,sgd_kaiko,paper", "mean", "'0.9x'"),
    ("vit,crc,val,balanced_accuracy,,0.01,sgd_kaiko,paper", "mean", "an empty cell"),
    ("vit,crc,val,balanced_accuracy,0.9,±0.01,sgd_kaiko,paper", "std", "'±0.01'"),
    ("vit,crc,val,balanced_accuracy", "mean", "an empty cell"),  # a row shorter than the header
])
def test_a_malformed_number_in_a_baseline_csv_names_the_file_line_and_column(tmp_path, row, column, found):
    write_run(tmp_path / "new" / "vit", _body())
    table = tmp_path / "published.csv"
    table.write_text(CSV_HEADER + "uni,crc,val,balanced_accuracy,0.8,0.01,sgd_kaiko,paper\n" + row + "\n")
    with pytest.raises(EvalkitError) as error:
        regress([str(tmp_path / "new")], str(table), ["balanced_accuracy"], 0.01, 2.0, StatsConfig())
    assert str(error.value) == (f"{table} line 3, column {column}: expected a number, found {found}; write a decimal "
                                "number there (std may be left empty)")


def test_the_command_line_refuses_a_malformed_results_json_in_one_line(tmp_path):
    """`evalkit report` on a bad result and `evalkit regress` on a bad baseline, run side by side."""
    good = tmp_path / "good" / "vit"
    write_run(good, _body())
    bad_result = _damaged(tmp_path / "bad_result" / "vit", "mean_is_a_string")
    bad_baseline = _damaged(tmp_path / "bad_baseline" / "vit", "metrics_is_a_list")
    commands = {
        bad_result: ["report", bad_result.parent.parent, "--output_dir", tmp_path / "out", "--plots", "false"],
        bad_baseline: ["regress", good.parent, "--baseline", bad_baseline.parent.parent],
    }
    running = {file: subprocess.Popen(evalkit_cmd(*argv), cwd=tmp_path, env=cli_env(), text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for file, argv in commands.items()}
    for file, proc in running.items():
        out, err = proc.communicate(timeout=300)
        name = "mean_is_a_string" if file == bad_result else "metrics_is_a_list"
        assert proc.returncode == 1, err
        assert "Traceback" not in out + err and out == ""
        assert err.strip().splitlines() == [
            f"evalkit: error: {file} is not an evalkit results.json: {DAMAGE[name][1]}{REGENERATE}"]
