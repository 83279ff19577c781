"""A new task type is one file and one config: the kNN probe (evaluations/knn.py) end to end on crc_demo,
through the same predict/fit pipeline and run record as the linear probe, with none of its own plumbing."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import re

import h5py
import pytest
import torch
import yaml

from evalkit.cli import main
from evalkit.errors import EvalkitError
from evalkit.evaluations.knn import KnnConfig, KnnProbe
from evalkit.heads.nonparametric import knn
from evalkit.metrics.classification import classification_metrics
from evalkit.predictions import read_predictions
from evalkit.embed import read_embeddings
from helpers import CRC_TASK, DATA, model_yaml


def _import(dotted: str):
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


@pytest.fixture(scope="module")
def knn_run(crc_cache, tmp_path_factory):
    """`evalkit predict_fit --evaluation knn` with the session's model: predict finds the pooled rows the
    linear probe's cache already holds, fit votes."""
    root = tmp_path_factory.mktemp("knn")
    model = model_yaml(root / "model.yaml", "evalkit.models.TimmModel", model_name="resnet18",
                       preprocessing={"input_size": 64})  # the model of the crc_cache fixture
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["predict_fit", "--config", str(CRC_TASK), "--config", str(model), "--evaluation", "knn",
                     "--knn.k", "5", "--data_root", str(DATA), "--embeddings_root", str(crc_cache.root),
                     "--results_root", str(root / "res"), "--stats.n_resamples", "200",
                     "--embed.accelerator", "cpu", "--embed.num_workers", "0"])
    assert code == 0, err.getvalue()
    [path] = (root / "res").rglob("results.json")
    return path, json.loads(path.read_text()), err.getvalue()


def test_knn_reuses_the_pooled_rows_of_the_linear_probe(knn_run, crc_cache):
    path, results, err = knn_run
    assert err.count("reusing cache") == 2 and not re.search(r"embedding \d+ images", err)
    assert sorted(results["provenance"]["cache_files"].values()) == sorted(
        str(c.path) for c in crc_cache.caches.values())
    assert results["timing"]["embed_reused"] is True


def test_knn_writes_the_one_run_record(knn_run, crc_cache):
    path, results, _ = knn_run
    assert results["schema_version"] == 2
    assert results["task"] == "crc_demo" and results["evaluation"] == "knn"
    assert results["protocol"] == "knn_k5" and results["n_runs"] == 1
    assert results["model"] == crc_cache.model.name and results["model_fingerprint"] == crc_cache.model.fingerprint()
    assert results["primary_metric"] == "balanced_accuracy" and results["num_classes"] == 9
    assert results["settings"] == {"k": 5, "center": False, "tie_break": "similarity"}
    assert set(results["metrics"]) == {"val"} and set(results["metrics"]["val"]) == set(KnnProbe.metrics)
    for summary in results["metrics"]["val"].values():
        assert len(summary["runs"]) == 1 and summary["std"] == 0.0 and summary["mean"] == summary["runs"][0]
        assert summary["ci_low"] <= summary["mean"] + 1e-9 <= summary["ci_high"] + 2e-9
    assert results["statistics"]["n_resamples"] == 200
    assert set(results["representation"]) == {"train", "val"}
    assert results["provenance"]["fingerprint_source"] == "weights"
    config = yaml.safe_load((path.parent / "config.yaml").read_text())
    assert config["knn"] == {"k": 5, "center": False, "tie_break": "similarity"} and config["evaluation"] == "knn"
    assert not {"head", "fewshot", "seg"} & set(config)


def test_knn_metric_info_names_the_functions_that_computed_each_number(knn_run):
    _, results, _ = knn_run
    info = results["metric_info"]
    assert set(KnnProbe.metrics) | {"rankme", "odcorr", "alpha_req"} <= set(info)
    for name, spec in info.items():
        assert spec["name"] == name and spec["higher_is_better"] in (True, False, None)
        assert callable(_import(spec["computed_by"])), spec["computed_by"]
    assert info["balanced_accuracy"]["computed_by"].startswith("evalkit.metrics.")


def test_knn_predictions_are_one_run_of_class_probabilities(knn_run, crc_cache):
    path, results, _ = knn_run
    preds = read_predictions(path.parent)
    assert list(preds) == ["val"]
    val = preds["val"]
    assert val.probs.shape == (1, 16, 9) and len(val.ids) == 16
    assert torch.allclose(val.probs.sum(-1), torch.ones(1, 16), atol=1e-5)
    with h5py.File(path.parent / "predictions.h5", "r") as f:
        assert f["val/probs"].shape == (1, 16, 9) and f["val/probs"].dtype == "float32"
    # The numbers are the vote's: recompute them from the cache.
    train, evaluated = (read_embeddings(crc_cache.caches[s].path) for s in ("train", "val"))
    expected = knn(train.embeddings, train.labels, evaluated.embeddings, 9, k=5, center=False)
    torch.testing.assert_close(val.probs[0], expected.float(), rtol=1e-5, atol=1e-6)
    assert val.ids == evaluated.ids and torch.equal(val.target, evaluated.labels)
    scores = classification_metrics(expected.unsqueeze(0), evaluated.labels, 9)  # one value per run
    for name in KnnProbe.metrics:
        assert results["metrics"]["val"][name]["runs"] == pytest.approx(scores[name].tolist())


@pytest.mark.parametrize("config, protocol", [
    (KnnConfig(), "knn_k20"),  # the default tie-break stays out of the name: earlier runs keep their protocol
    (KnnConfig(k=5, center=True), "knn_k5_centered"),
    (KnnConfig(tie_break="lowest_class"), "knn_k20_tie_lowest_class"),
    (KnnConfig(k=7, center=True, tie_break="lowest_class"), "knn_k7_centered_tie_lowest_class"),
])
def test_knn_protocol_names_the_tie_break_only_when_not_the_default(config, protocol):
    assert KnnProbe(knn=config).protocol == protocol


def test_knn_config_refuses_an_unknown_tie_break():
    with pytest.raises(EvalkitError, match="knn.tie_break must be one of similarity, lowest_class, got 'random'"):
        KnnConfig(tie_break="random")  # type: ignore[arg-type]
