"""`evalkit regress`: pass on unchanged results, fail on degraded ones, tolerate noise, report
missing entries and refuse results fitted under another protocol or of another model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from synthetic_runs import fingerprint, results, write_run

from evalkit.cli import main
from evalkit.errors import EvalkitError
from evalkit.predictions import SplitPredictions, write_predictions
from evalkit.report.regress import regress
from evalkit.results import summarize
from evalkit.stats.bootstrap import weighted_metrics
from evalkit.stats.config import StatsConfig

N, C, R = 400, 4, 3
TARGET = torch.randint(C, (N,), generator=torch.Generator().manual_seed(7))


def _probs(accuracy: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    wrong = torch.rand(R, N, generator=g) > accuracy
    pred = torch.where(wrong, (TARGET + 1) % C, TARGET)
    return torch.nn.functional.one_hot(pred, C).float() * 0.7 + 0.3 / C


def _run(root: Path, model: str, probs: torch.Tensor, protocol: str = "sgd_kaiko", weights: str | None = None,
         config: dict | None = None) -> Path:
    """A crc run of ``model``; ``weights`` names other weights under the same display name (another fingerprint)."""
    run_dir = root / "crc" / model / "run-1"
    values = weighted_metrics(torch.ones(1, N, dtype=torch.float64), TARGET, probs, C)
    metrics = {name: summarize(v[0].tolist()) for name, v in values.items()}
    write_run(run_dir, results("crc", model, {"val": metrics}, protocol=protocol, n_runs=R, num_classes=C,
                               model_fingerprint=fingerprint(weights or model)), config)
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
    # the option is named because the run's config.yaml shows which one chose the protocol
    assert "fit with the baseline's protocol (--head.protocol sgd_kaiko)" in err


def test_the_protocol_option_is_named_only_when_the_config_shows_it(tmp_path):
    base = _run(tmp_path / "base", "vit", _probs(0.9, 1), protocol="mask2former", config={"seg": {}})
    new = _run(tmp_path / "new", "vit", _probs(0.9, 1), protocol="linear", config={"seg": {}})
    with pytest.raises(EvalkitError) as error:
        regress([str(new)], str(base), ["balanced_accuracy"], 0.01, 2.0, StatsConfig())
    message = str(error.value)
    assert message.endswith("'mask2former', the new result with 'linear'; fit with the baseline's protocol")
    assert "--" not in message


def test_a_baseline_of_other_weights_is_refused_unless_allowed(tmp_path, capsys):
    base = _run(tmp_path / "base", "vit", _probs(0.9, 1), weights="vit-2024")
    new = _run(tmp_path / "new", "vit", _probs(0.9, 1), weights="vit-2025")
    args = [str(new)], str(base), ["balanced_accuracy"], 0.01, 2.0, StatsConfig()
    with pytest.raises(EvalkitError) as error:
        regress(*args)
    message = str(error.value)
    assert "\n" not in message and message.count("vit") == 2
    assert fingerprint("vit-2024")[:12] in message and fingerprint("vit-2025")[:12] in message
    assert message.endswith("pass --allow_other_model to compare them anyway")
    table, passed = regress(*args, allow_other_model=True)
    assert passed and "| vit | crc/val | balanced_accuracy |" in table
    # a renamed model with new weights is paired with the baseline's only model of the task, and named so
    renamed = _run(tmp_path / "renamed", "vit-v2", _probs(0.9, 1))
    with pytest.raises(EvalkitError, match=r"the baseline is vit \(fingerprint \w{12}\), the result vit-v2"):
        regress([str(renamed)], str(base), ["balanced_accuracy"], 0.01, 2.0, StatsConfig())
    table, passed = regress([str(renamed)], str(base), ["balanced_accuracy"], 0.01, 2.0, StatsConfig(),
                            allow_other_model=True)
    assert passed and "| vit → vit-v2 | crc/val |" in table


def test_two_models_of_one_name_are_matched_by_fingerprint(tmp_path):
    base = _run(tmp_path / "base" / "a", "vit", _probs(0.9, 1), weights="a").parent
    _run(tmp_path / "base" / "b", "vit", _probs(0.6, 2), weights="b")
    new = _run(tmp_path / "new", "vit", _probs(0.6, 2), weights="b")  # b is unchanged; a has no new result
    table, passed = regress([str(new)], str(base), ["balanced_accuracy"], 0.01, 2.0, StatsConfig(),
                            allow_missing=True)
    assert passed and table.count("PASS") == 1 and table.count("OK-MISSING") == 1


def test_published_csv_baseline_uses_its_std(tmp_path, capsys):
    new = _run(tmp_path / "new", "vit", _probs(0.9, 1))
    mean = json.loads(next(new.rglob("results.json")).read_text())["metrics"]["val"]["balanced_accuracy"]["mean"]
    table = tmp_path / "published.csv"
    header = "model,task,split,metric,mean,std,protocol,source\n"
    table.write_text(header + f"vit,crc,val,balanced_accuracy,{mean + 0.03},0.02,sgd_kaiko,paper\n")
    # published numbers carry no fingerprint: other weights under the same name are compared by name
    _run(tmp_path / "other", "vit", _probs(0.9, 1), weights="vit-2025")
    assert main(["regress", str(tmp_path / "other"), "--baseline", str(table)]) == 0
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
    other = _run(tmp_path / "other", "vit", _probs(0.9, 1), weights="vit-2025")
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.evalkit
        def test_unchanged(evalkit_regress):
            assert "PASS" in evalkit_regress({str(tmp_path / "same")!r}, baseline={str(base)!r})

        @pytest.mark.evalkit
        def test_degraded(evalkit_regress):
            evalkit_regress({str(degraded)!r}, baseline={str(base)!r}, tolerance=0.02)

        @pytest.mark.evalkit
        def test_other_weights_allowed(evalkit_regress):
            evalkit_regress({str(other)!r}, baseline={str(base)!r}, allow_other_model=True)

        @pytest.mark.evalkit
        def test_other_weights_refused(evalkit_regress):
            evalkit_regress({str(other)!r}, baseline={str(base)!r})

        @pytest.mark.evalkit
        def test_missing_baseline(evalkit_regress):
            evalkit_regress({str(degraded)!r}, baseline="nowhere")

        def test_not_selected():
            pass
    """)
    result = pytester.runpytest_inprocess("-m", "evalkit", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=3, deselected=1)
    result.stdout.fnmatch_lines(["*results regressed against*", "*| vit | crc/val | balanced_accuracy |*FAIL |",
                                 "*pass --allow_other_model to compare them anyway",
                                 "*evalkit regress: baseline not found: nowhere"])
