"""Precision, transform and cost in the run record, the report and regress (issue 20, items 6-8)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from synthetic_runs import results, summary, write_run

from evalkit.errors import EvalkitError
from evalkit.report import write_report
from evalkit.report.regress import model_key, regress
from evalkit.report.runs import load_results
from evalkit.report.tables import PREPROCESSING_DIFFERS, describe_transform, preprocessing_outliers
from evalkit.results import embedding_record
from evalkit.stats.config import StatsConfig

IMAGENET = {"input_size": 224, "resize_size": None, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "interpolation": "bilinear"}
TAG = {**IMAGENET, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic"}


def _cost(images: int, seconds: float, peak: int = 2**30) -> dict:
    return {"images": images, "seconds": seconds, "images_per_s": images / seconds, "peak_memory_bytes": peak,
            "memory_kind": "process peak RSS", "device": "cpu (2 threads)", "precision": "fp32"}


def _embedding(precision: str = "fp32", preprocessing: dict | None = None, reused: bool | None = False) -> dict:
    return {"precision": precision, "preprocessing": preprocessing or IMAGENET, "reused": reused,
            "cost": {"train": _cost(300, 3.0), "val": _cost(100, 1.0)}}


def _run(root: Path, model: str, mean: float, **fields) -> Path:
    body = results("demo", model, {"val": {"balanced_accuracy": summary(mean, 0.01)}}, **fields)
    return write_run(root / model / fields.get("run_id", "r1"), body)


def test_embedding_record_reads_what_the_caches_recorded() -> None:
    attrs = {"precision": "bf16", "preprocessing": json.dumps(IMAGENET), "embedding_cost": json.dumps(_cost(10, 2.0))}
    data = {"train": SimpleNamespace(attrs=attrs), "val": SimpleNamespace(attrs=dict(attrs))}
    record = embedding_record(data, reused=True)
    assert record == {"precision": "bf16", "preprocessing": IMAGENET, "reused": True,
                      "cost": {"train": _cost(10, 2.0), "val": _cost(10, 2.0)}}
    # a cache written before these were recorded: nothing is invented (a GPU made such caches in bf16)
    old = embedding_record({"train": SimpleNamespace(attrs={})}, reused=None)
    assert old == {"precision": None, "preprocessing": None, "reused": None, "cost": None}
    # splits embedded with different transforms are kept per split, never merged
    other = {**attrs, "preprocessing": json.dumps(TAG)}
    mixed = embedding_record({"train": SimpleNamespace(attrs=attrs), "val": SimpleNamespace(attrs=other)}, None)
    assert mixed["preprocessing"] == {"train": IMAGENET, "val": TAG}


def test_report_shows_cost_and_flags_a_model_with_another_normalisation(tmp_path: Path) -> None:
    _run(tmp_path, "vit_a", 0.80, embedding=_embedding())
    _run(tmp_path, "vit_b", 0.78, embedding=_embedding())
    _run(tmp_path, "vit_own_weights", 0.70, embedding=_embedding(preprocessing=TAG, reused=True),
         timing={"fit_s": 3.0, "seconds_per_head_fit": 0.6})
    runs = load_results([tmp_path])
    assert [run.model for run in preprocessing_outliers(runs)] == ["vit_own_weights"]
    markdown = write_report([tmp_path], tmp_path / "report", plots=False)
    table = markdown.split("\n\n")[1]
    assert f"| vit_own_weights {PREPROCESSING_DIFFERS} |" in table
    assert f"vit_a {PREPROCESSING_DIFFERS}" not in table
    assert "another normalisation or interpolation" in markdown.splitlines()[0]
    # the cost table: 400 images in 4 s -> 100 images/s; the reused cache says so; 1 GiB peak; 0.6 s per head fit
    row = next(line for line in markdown.splitlines() if line.startswith("| vit_own_weights | demo |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2:8] == ["cpu (2 threads)", "fp32", "100.0 (reused)", "1.00 GiB", "4.0", "0.60"]
    assert cells[8] == describe_transform(TAG) + f" {PREPROCESSING_DIFFERS}"
    assert describe_transform(TAG) == "224 px, bicubic, mean 0.5/0.5/0.5, std 0.5/0.5/0.5"


def test_same_transform_everywhere_is_not_flagged(tmp_path: Path) -> None:
    _run(tmp_path, "vit_a", 0.80, embedding=_embedding())
    _run(tmp_path, "vit_b", 0.78, embedding=_embedding())
    _run(tmp_path, "old_record", 0.75)  # written before the transform was recorded: not judged
    markdown = write_report([tmp_path], tmp_path / "report", plots=False)
    assert PREPROCESSING_DIFFERS not in markdown


def test_two_precisions_of_one_model_are_two_rows(tmp_path: Path) -> None:
    _run(tmp_path, "vit_a", 0.80, embedding=_embedding("fp32"), run_id="r1")
    _run(tmp_path, "vit_a", 0.79, embedding=_embedding("bf16"), run_id="r2")
    runs = load_results([tmp_path])
    assert sorted(run.label for run in runs) == ["vit_a bf16", "vit_a fp32"]
    assert all(not run.superseded for run in runs)


def test_regress_refuses_a_precision_mismatch_like_a_protocol_mismatch(tmp_path: Path) -> None:
    baseline = _run(tmp_path / "baseline", "vit_a", 0.80, embedding=_embedding("fp32"))
    new = _run(tmp_path / "new", "vit_a", 0.80, embedding=_embedding("bf16"))
    with pytest.raises(EvalkitError, match="embedded in fp32, the new result in bf16; embed with --embed.precision fp32"):
        regress([str(new)], str(baseline), ["balanced_accuracy"], 0.01, 2.0, StatsConfig(n_resamples=100))
    same = _run(tmp_path / "same", "vit_a", 0.80, embedding=_embedding("fp32"))
    _, passed = regress([str(same)], str(baseline), ["balanced_accuracy"], 0.01, 2.0, StatsConfig(n_resamples=100))
    assert passed


def test_a_published_row_matches_a_run_of_the_preset_it_names(tmp_path: Path) -> None:
    """eva's leaderboard writes kaiko_vits16 and mahmood_uni2_h; runs of presets are named kaiko-vits16, uni2-h."""
    assert model_key("kaiko_vits16") == model_key("KAIKO-ViTS16") == "kaiko-vits16"
    assert model_key("pathology/mahmood_uni2_h") == "uni2-h"
    assert model_key("my_own_model") == "my_own_model"
    table = tmp_path / "published.csv"
    table.write_text("model,task,split,metric,mean,std,protocol,source\n"
                     "kaiko_vits16,demo,val,balanced_accuracy,0.812,,sgd_kaiko,test\n"
                     "mahmood_uni2_h,demo,val,balanced_accuracy,0.900,,sgd_kaiko,test\n")
    run = _run(tmp_path / "new", "kaiko-vits16", 0.75)
    text, passed = regress([str(run)], str(table), ["balanced_accuracy"], 0.01, 2.0, StatsConfig(n_resamples=100))
    assert not passed  # 0.75 against the published 0.812: compared, and a regression
    assert "kaiko_vits16 → kaiko-vits16" in text and "FAIL" in text
    assert "1 entry of the published table for other models or tasks not compared" in text


def test_a_record_without_precision_is_compared_with_any(tmp_path: Path) -> None:
    """Records written before precision was recorded (the shipped baselines) stay comparable, as a missing
    protocol is."""
    baseline = _run(tmp_path / "baseline", "vit_a", 0.80)
    new = _run(tmp_path / "new", "vit_a", 0.80, embedding=_embedding("bf16"))
    _, passed = regress([str(new)], str(baseline), ["balanced_accuracy"], 0.01, 2.0, StatsConfig(n_resamples=100))
    assert passed
