"""`evalkit regress`: pass on unchanged results, fail on degraded ones, tolerate noise, report
missing entries and refuse results fitted under another protocol."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from evalkit.cli import main
from evalkit.predictions import SplitPredictions, write_predictions
from evalkit.results import summarize
from evalkit.stats.bootstrap import weighted_metrics

N, C, R = 400, 4, 3
TARGET = torch.randint(C, (N,), generator=torch.Generator().manual_seed(7))


def _probs(accuracy: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    wrong = torch.rand(R, N, generator=g) > accuracy
    pred = torch.where(wrong, (TARGET + 1) % C, TARGET)
    return torch.nn.functional.one_hot(pred, C).float() * 0.7 + 0.3 / C


def _run(root: Path, model: str, probs: torch.Tensor, protocol: str = "sgd_kaiko") -> Path:
    run_dir = root / "crc" / model / "run-1"
    run_dir.mkdir(parents=True)
    values = weighted_metrics(torch.ones(1, N, dtype=torch.float64), TARGET, probs, C)
    metrics = {name: summarize(v[0].tolist()) for name, v in values.items()}
    (run_dir / "results.json").write_text(json.dumps({"task": "crc", "model": model, "protocol": protocol,
                                                      "n_runs": R, "metrics": {"val": metrics}}))
    write_predictions(run_dir, {"val": SplitPredictions([f"s{i}" for i in range(N)], TARGET, probs)})
    return root


def test_unchanged_results_pass(tmp_path, capsys):
    base = _run(tmp_path / "base", "vit", _probs(0.9, 1))
    shutil.copytree(base, tmp_path / "new")
    assert main(["regress", str(tmp_path / "new"), "--baseline", str(base)]) == 0
    out = capsys.readouterr().out
    assert "| vit | crc/val | balanced_accuracy |" in out and "PASS" in out and "1 of 1 passed" in out


def test_a_degraded_result_fails_with_exit_code_1(tmp_path, capsys):
    base = _run(tmp_path / "base", "vit", _probs(0.9, 1))
    new = _run(tmp_path / "new", "vit", _probs(0.6, 2))
    assert main(["regress", str(new), "--baseline", str(base), "--metrics", "[balanced_accuracy, accuracy]"]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("FAIL") == 2 and "0 of 2 passed" in captured.out
    assert "regressed against the baseline" in captured.err


def test_a_drop_that_is_noise_passes(tmp_path, capsys):
    probs = _probs(0.9, 1)
    base = _run(tmp_path / "base", "vit", probs)
    twin = probs.clone()
    twin[:, :3] = torch.roll(probs[:, :3], 1, dims=-1)  # 3 of 400 samples change: about -0.5 pp
    new = _run(tmp_path / "new", "vit", twin)
    # beyond a zero tolerance, but the paired bootstrap does not call it significant
    assert main(["regress", str(new), "--baseline", str(base), "--tolerance", "0", "--std_multiple", "0"]) == 0
    assert "PASS" in capsys.readouterr().out
    # within the default 1-point tolerance it passes without a test
    assert main(["regress", str(new), "--baseline", str(base)]) == 0


def test_missing_entries_fail_unless_allowed(tmp_path, capsys):
    base = _run(tmp_path / "base", "vit", _probs(0.9, 1))
    _run(tmp_path / "base", "resnet", _probs(0.8, 3))
    new = _run(tmp_path / "new", "vit", _probs(0.9, 1))
    assert main(["regress", str(new), "--baseline", str(base)]) == 1
    assert "MISSING" in capsys.readouterr().out
    assert main(["regress", str(new), "--baseline", str(base), "--allow_missing", "true"]) == 0


def test_another_protocol_is_refused_in_one_line(tmp_path, capsys):
    base = _run(tmp_path / "base", "vit", _probs(0.9, 1))
    new = _run(tmp_path / "new", "vit", _probs(0.9, 1), protocol="adamw_eva")
    assert main(["regress", str(new), "--baseline", str(base)]) == 1
    err = capsys.readouterr().err.strip()
    assert "protocol 'sgd_kaiko'" in err and "'adamw_eva'" in err and "\n" not in err


def test_published_csv_baseline_uses_its_std(tmp_path, capsys):
    new = _run(tmp_path / "new", "vit", _probs(0.9, 1))
    mean = json.loads(next(new.rglob("results.json")).read_text())["metrics"]["val"]["balanced_accuracy"]["mean"]
    table = tmp_path / "published.csv"
    header = "model,task,split,metric,mean,std,protocol,source\n"
    table.write_text(header + f"vit,crc,val,balanced_accuracy,{mean + 0.03},0.02,sgd_kaiko,paper\n")
    assert main(["regress", str(new), "--baseline", str(table)]) == 0  # 3 points down, 2 stds of 0.02 allowed
    table.write_text(header + f"vit,crc,val,balanced_accuracy,{mean + 0.05},0.01,sgd_kaiko,paper\n")
    assert main(["regress", str(new), "--baseline", str(table)]) == 1
    table.write_text("model,task,mean\nvit,crc,0.9\n")
    assert main(["regress", str(new), "--baseline", str(table)]) == 1
    assert "lacks the column(s) split, metric, std" in capsys.readouterr().err


def test_a_published_table_is_compared_only_where_models_and_tasks_were_run(tmp_path, capsys):
    new = _run(tmp_path / "new", "vit", _probs(0.9, 1))
    mean = json.loads(next(new.rglob("results.json")).read_text())["metrics"]["val"]["balanced_accuracy"]["mean"]
    table = tmp_path / "published.csv"
    header = "model,task,split,metric,mean,std,protocol,source\n"
    table.write_text(header + f"vit,crc,val,balanced_accuracy,{mean},0.01,sgd_kaiko,paper\n"
                     "vit,consep,test,dice,0.6,,segmentation_eva_conv,paper\n"  # another metric: not asked for
                     "uni,crc,val,balanced_accuracy,0.95,0.001,sgd_kaiko,paper\n")  # a model not run
    assert main(["regress", str(new), "--baseline", str(table)]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 passed; 1 entry of the published table for other models or tasks not compared" in out
    assert main(["regress", str(new), "--baseline", str(table), "--metrics", "balanced_accuracy"]) == 0  # one name
    assert "1 of 1 passed" in capsys.readouterr().out
    assert "uni" not in out
    table.write_text(header + "uni,crc,val,balanced_accuracy,0.95,0.001,sgd_kaiko,paper\n")
    assert main(["regress", str(new), "--baseline", str(table)]) == 1
    assert "no (model, task) of" in capsys.readouterr().err
    table.write_text(header + "vit,consep,test,dice,0.6,,segmentation_eva_conv,paper\n")
    assert main(["regress", str(new), "--baseline", str(table)]) == 1  # the metric is the cause, not the model
    assert "holds none of the metrics balanced_accuracy" in capsys.readouterr().err


def test_the_pytest_plugin_fails_a_test_whose_results_regressed(tmp_path, pytester):
    base = _run(tmp_path / "base", "vit", _probs(0.9, 1))
    shutil.copytree(base, tmp_path / "same")
    degraded = _run(tmp_path / "degraded", "vit", _probs(0.6, 2))
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.evalkit
        def test_unchanged(evalkit_regress):
            assert "PASS" in evalkit_regress({str(tmp_path / "same")!r}, baseline={str(base)!r})

        @pytest.mark.evalkit
        def test_degraded(evalkit_regress):
            evalkit_regress({str(degraded)!r}, baseline={str(base)!r}, tolerance=0.02)

        @pytest.mark.evalkit
        def test_missing_baseline(evalkit_regress):
            evalkit_regress({str(degraded)!r}, baseline="nowhere")

        def test_not_selected():
            pass
    """)
    result = pytester.runpytest_inprocess("-m", "evalkit", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2, deselected=1)
    result.stdout.fnmatch_lines(["*results regressed against*", "*| vit | crc/val | balanced_accuracy |*FAIL |",
                                 "*evalkit regress: baseline not found: nowhere"])
