"""The real command line on the shipped CRC tiles: predict_fit, cache reuse, model comparison, report."""

from __future__ import annotations

import csv
import json
import re
import shutil
import statistics
from pathlib import Path

import h5py
import pytest
import torch
import yaml

from evalkit import __version__
from evalkit.cli import main
from evalkit.evaluations.linear_probe import LinearProbe
from evalkit.metrics.spec import METRICS
from helpers import CONFIGS, CRC_TASK, DATA, RESNET_RANDOM, model_yaml, run_cli, run_in_process

EMBEDDING_LINE = re.compile(r"embedding \d+ images")


def _predict_fit(emb: Path, res: Path, cwd: Path, run=run_cli):
    return run("predict_fit", "--config", CRC_TASK, "--config", RESNET_RANDOM, "--model.init_args.model_name",
               "resnet18", "--model.init_args.preprocessing.input_size", "112", "--head.max_steps", "300",
               "--head.n_runs", "2", "--data_root", DATA, "--embeddings_root", emb, "--results_root", res, cwd=cwd)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    proc = _predict_fit(root / "emb", root / "res", root)
    return root, proc


def _results(res: Path) -> list[Path]:
    return sorted(res.rglob("results.json"))


def test_predict_fit_writes_results(first_run):
    root, proc = first_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(EMBEDDING_LINE.findall(proc.stderr)) == 2  # train and val
    assert "Predicting" not in proc.stdout and "\r" not in proc.stdout  # no progress bars in a pipe
    [path] = _results(root / "res")
    assert path.parent.parent == root / "res" / "crc_demo" / "resnet18-random"
    results = json.loads(path.read_text())

    assert results["schema_version"] == 2
    assert results["task"] == "crc_demo"
    assert results["evaluation"] == "linear_probe"  # the task's default
    assert results["model"] == "resnet18-random"
    assert results["protocol"] == "sgd_kaiko"
    assert results["n_runs"] == 2
    assert results["num_classes"] == 9
    assert results["primary_metric"] == "balanced_accuracy"
    assert set(results["metrics"]) == {"val"}
    assert set(results["metrics"]["val"]) == set(LinearProbe.metrics)
    for name in LinearProbe.metrics:
        summary = results["metrics"]["val"][name]
        assert len(summary["runs"]) == 2
        assert all(0.0 <= v <= 1.0 for v in summary["runs"])
        assert summary["mean"] == pytest.approx(statistics.fmean(summary["runs"]))
        assert summary["std"] == pytest.approx(statistics.stdev(summary["runs"]))
    assert {"mean", "std", "runs"} <= set(results["metrics"]["val"]["balanced_accuracy"])
    for summary in results["metrics"]["val"].values():  # bootstrap CI of the mean over runs
        assert summary["ci_low"] <= summary["mean"] + 1e-9 and summary["mean"] - 1e-9 <= summary["ci_high"]
    assert results["statistics"]["n_resamples"] == 1000
    assert set(results["representation"]) == {"train", "val"}
    assert {"rankme", "odcorr", "alpha_req"} <= set(results["representation"]["val"])
    assert 1.0 <= results["representation"]["train"]["rankme"] <= 25  # at most min(N, D) = 25 train tiles
    from evalkit.predictions import read_predictions

    preds = read_predictions(path.parent)["val"]
    assert preds.probs.shape == (2, 16, 9) and len(preds.ids) == 16
    assert torch.allclose(preds.probs.sum(-1), torch.ones(2, 16), atol=1e-5)
    assert results["timing"]["embed_s"] > 0 and results["timing"]["fit_s"] > 0

    # Every reported metric's metadata, from the registry: direction, bounds and the function that computed it.
    info = results["metric_info"]
    assert set(info) == set(LinearProbe.metrics) | set(results["representation"]["val"])
    for name, spec in info.items():
        assert spec == METRICS.get(name).as_dict()
    assert info["balanced_accuracy"]["higher_is_better"] is True and info["odcorr"]["higher_is_better"] is False

    # The resolved settings of the fit; what was asked for is config.yaml's, the time is timing's.
    settings = results["settings"]
    assert settings["seeds"] == [0, 1] and settings["max_steps"] == 300 and settings["protocol"] == "sgd_kaiko"
    assert "requested" not in settings and "fit_s" not in settings
    assert len(settings["best_epochs"]) == 2 and len(settings["stopped_epochs"]) == 2
    assert results["curves"] == {}  # no label-efficiency curves unless --fewshot.enabled
    assert not {"head", "label_efficiency"} & set(results)

    provenance = results["provenance"]
    assert {"evalkit_version", "cache_keys", "cache_files", "packages", "git_commit", "fingerprint_source",
            "created"} <= set(provenance)
    assert not {"config", "head_config", "model_fingerprint"} & set(provenance)
    assert provenance["fingerprint_source"] == "weights"
    assert provenance["evalkit_version"] == __version__
    assert "torch" in provenance["packages"]
    caches = sorted((root / "emb" / "crc_demo" / "resnet18-random").glob("*.h5"))
    assert [c.name.split("-")[:2] for c in caches] == [["train", "rows"], ["val", "rows"]]
    for cache in caches:  # the results name the exact cache files they came from
        assert cache.stem.split("-", 1)[1] in json.dumps(provenance["cache_keys"])
        assert str(cache) in provenance["cache_files"].values()
        with h5py.File(cache, "r") as f:
            assert f.attrs["model_fingerprint"] == results["model_fingerprint"]
    assert len(results["model_fingerprint"]) == 64

    config = yaml.safe_load((path.parent / "config.yaml").read_text())  # the resolved config, beside results.json
    assert config["model"]["init_args"]["model_name"] == "resnet18"
    assert config["head"]["n_runs"] == 2 and config["head"]["max_steps"] == 300
    assert config["task"]["name"] == "crc_demo"
    assert "seg" not in config and "knn" not in config


def test_second_run_reuses_the_cache(first_run):
    root, proc = first_run
    assert proc.returncode == 0, proc.stderr
    caches = sorted((root / "emb").rglob("*.h5"))
    before = {c: c.read_bytes() for c in caches}
    again = _predict_fit(root / "emb", root / "res", root, run=run_in_process)  # the first run was the subprocess
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("reusing cache") == 2
    assert not EMBEDDING_LINE.search(again.stderr)
    assert {c: c.read_bytes() for c in sorted((root / "emb").rglob("*.h5"))} == before
    newest = json.loads(_results(root / "res")[-1].read_text())
    assert newest["timing"]["embed_reused"] is True
    assert len(_results(root / "res")) == 2  # a new run folder, the first results kept


def test_two_models_in_one_predict_fit_print_one_table(tmp_path):
    timm_cfg = model_yaml(tmp_path / "timm_r18.yaml", "evalkit.models.TimmModel", model_name="resnet18",
                          name="timm-r18", preprocessing={"input_size": 64})
    tv_cfg = model_yaml(tmp_path / "tv_r18.yaml", "evalkit.models.TorchvisionModel", model_name="resnet18",
                        name="tv-r18", preprocessing={"input_size": 64})
    proc = run_in_process("predict_fit", "--config", CRC_TASK, "--config", timm_cfg, "--config", tv_cfg,
                          "--head.max_steps", "100", "--head.n_runs", "2", "--data_root", DATA,
                          "--embeddings_root", tmp_path / "emb", "--results_root", tmp_path / "res", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert rows[0].replace(" ", "") == "|model|crc_demo/val|"
    assert any(line.startswith("| timm-r18 |") for line in rows)
    assert any(line.startswith("| tv-r18 |") for line in rows)
    assert {p.parent.parent.name for p in _results(tmp_path / "res")} == {"timm-r18", "tv-r18"}
    report = tmp_path / "res" / "crc_demo"
    assert "timm-r18" in (report / "report.md").read_text() and "tv-r18" in (report / "report.csv").read_text()
    assert {p.parent.name for p in (tmp_path / "emb" / "crc_demo").glob("*/*.h5")} == {"timm-r18", "tv-r18"}


def test_report_writes_markdown_and_csv(first_run, tmp_path, capsys):
    root, proc = first_run
    assert proc.returncode == 0, proc.stderr
    source = _results(root / "res")[0]
    runs = tmp_path / "runs"
    shutil.copytree(source.parent, runs / "crc_demo" / "resnet18-random" / source.parent.name)
    other = json.loads(source.read_text())
    other["model"] = "other-model"
    other["model_fingerprint"] = "0" * 64  # another model: runs are told apart by fingerprint, not by name
    other["metrics"]["val"]["balanced_accuracy"] = {"mean": 0.5, "std": 0.25, "runs": [0.25, 0.75]}
    (runs / "crc_demo" / "other-model" / "run-1").mkdir(parents=True)
    (runs / "crc_demo" / "other-model" / "run-1" / "results.json").write_text(json.dumps(other))

    assert main(["report", str(runs)]) == 0
    markdown = (runs / "report.md").read_text()
    assert markdown in capsys.readouterr().out
    mine = json.loads(source.read_text())["metrics"]["val"]["balanced_accuracy"]
    rows = {line.split("|")[1].strip(): line for line in markdown.split("\n\n")[1].splitlines()}
    assert f"{mine['mean']:.3f} ± {mine['std']:.3f}" in rows["resnet18-random"]
    assert f"[{mine['ci_low']:.3f}, {mine['ci_high']:.3f}]" in rows["resnet18-random"]
    assert "0.500 ± 0.250" in rows["other-model"]
    best = "other-model" if 0.5 > mine["mean"] else "resnet18-random"
    assert "**" in rows[best] and "**" not in rows[({"other-model", "resnet18-random"} - {best}).pop()]
    assert "no predictions.h5" in markdown  # the hand-made run has none: no paired test, said so
    assert (runs / "bars_balanced_accuracy.png").stat().st_size > 10_000
    with open(runs / "report.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    by_model = {row["model"]: row for row in table}
    assert set(by_model) == {"resnet18-random", "other-model"}
    assert float(by_model["other-model"]["crc_demo/val_mean"]) == 0.5
    assert float(by_model["other-model"]["crc_demo/val_std"]) == 0.25
    assert float(by_model["resnet18-random"]["crc_demo/val_mean"]) == pytest.approx(mine["mean"])


def test_report_of_nothing_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("evalkit: error:") and str(tmp_path / "empty") in err


@pytest.mark.slow
def test_make_demo(tmp_path):
    """`make demo`'s three commands as shipped: two backbones x two demo tasks with label-efficiency
    curves at the full protocol defaults (5 runs, 12,500 steps), then one report over both tasks."""
    vit = RESNET_RANDOM.parent / "vit_small_patch16_224_random.yaml"
    roots = ["--data_root", DATA, "--embeddings_root", tmp_path / "emb", "--results_root", tmp_path / "res"]
    for task in (CRC_TASK, CRC_TASK.parent / "kather16_demo.yaml"):
        proc = run_cli("predict_fit", "--config", task, "--config", CONFIGS / "fewshot" / "demo.yaml",
                       "--config", vit, "--config", RESNET_RANDOM, *roots, cwd=tmp_path, timeout=3000)
        assert proc.returncode == 0, proc.stderr
    proc = run_cli("report", tmp_path / "res", "--output_dir", tmp_path / "report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| model |"))
    assert header.replace(" ", "") == "|model|crc_demo/val|kather16_demo/val|"
    assert "Friedman test over 2 task/split columns and 2 models" in proc.stdout
    assert len(list((tmp_path / "report").glob("*.png"))) == 5
    for path in _results(tmp_path / "res"):
        results = json.loads(path.read_text())
        assert results["n_runs"] == 5 and len(results["metrics"]["val"]["balanced_accuracy"]["runs"]) == 5
        assert results["settings"]["max_steps"] == 12_500
        assert set(results["curves"]["label_efficiency"]["heads"]) == {"linear", "knn", "simpleshot", "logreg"}
