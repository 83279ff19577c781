"""Bad input through the real command line: non-zero exit, one `evalkit: error:` line naming the thing,
no traceback, and nothing half-written left as a cache.

Every case runs once per module (fixture ``outcomes``); the tests then read the outcomes. The cases in
``SUBPROCESS`` run as ``python -m evalkit`` (a DataLoader worker's error, settings read at import); the rest
call the same entry point, ``evalkit.cli.main``, in-process, which spares the ~3 s of imports each
subprocess pays.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torchvision

from evalkit.metrics.spec import METRICS
from helpers import CRC_TASK, DATA, PRECOMPUTED_TASK, REPO, RESNET_RANDOM, cli_env, copy_crc_demo, \
    evalkit_cmd, model_yaml, run_in_process, write_foreign_h5, write_schema1_h5


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    root: Path  # the case's folder: its data, its embeddings root
    names: str  # what the message must name


def _fast_model(*extra: str) -> list[str]:
    return ["--config", str(RESNET_RANDOM), "--model.init_args.model_name", "resnet18",
            "--model.init_args.preprocessing.input_size", "32", *extra]


def _schema2_run(run_dir: Path) -> Path:
    """A minimal schema-2 run record of the linear probe, as `evalkit fit` writes it."""
    run_dir.mkdir(parents=True)
    names = ("balanced_accuracy", "accuracy", "f1_macro", "auroc_macro")
    record = {"schema_version": 2, "task": "crc_demo", "evaluation": "linear_probe", "protocol": "sgd_kaiko",
              "model": "m", "model_fingerprint": "f" * 64, "n_runs": 2, "num_classes": 9,
              "primary_metric": "balanced_accuracy",
              "metrics": {"val": {name: {"mean": 0.5, "std": 0.0, "runs": [0.5, 0.5]} for name in names}},
              "metric_info": {name: METRICS.get(name).as_dict() for name in names}, "representation": {},
              "settings": {}, "curves": {}, "per_class": {}, "statistics": {}, "timing": {},
              "provenance": {"fingerprint_source": "weights", "cache_keys": [], "cache_files": {}}}
    (run_dir / "results.json").write_text(json.dumps(record))
    return run_dir


def _cases(base: Path) -> dict[str, tuple[list[str], dict[str, str], str]]:
    """name -> (argv, extra env, what the message must name)."""
    cases = {}

    missing = base / "missing_data"
    cases["missing_data_folder"] = (
        ["predict", "--config", str(CRC_TASK), *_fast_model(), "--data_root", str(missing / "nowhere")], {},
        str(missing / "nowhere" / "crc_demo"))

    truncated = copy_crc_demo(base / "truncated_png")
    bad_png = truncated / "DEB" / "DEB-TCGA-AHQCDGMY.png"  # a training tile in the first batch
    bad_png.write_bytes(bad_png.read_bytes()[:400])
    cases["truncated_png"] = (
        ["predict", "--config", str(CRC_TASK), *_fast_model(), "--data_root", str(truncated.parent),
         "--embed.num_workers", "1"], {}, str(bad_png))  # raised inside a DataLoader worker

    garbage = copy_crc_demo(base / "garbage_tif")
    bad_tif = garbage / "BACK" / "BACK-AAQSHYMA.tif"  # a training tile
    bad_tif.write_bytes(b"\x89garbage, not an image\x00" * 64)
    cases["garbage_tif"] = (
        ["predict", "--config", str(CRC_TASK), *_fast_model(), "--data_root", str(garbage.parent),
         "--embed.num_workers", "0"], {}, str(bad_tif))

    cases["unknown_timm_model"] = (
        ["predict", "--config", str(CRC_TASK), "--config", str(RESNET_RANDOM), "--model.init_args.model_name",
         "no_such_net_v9", "--data_root", str(DATA)], {}, "no_such_net_v9")

    adapter = model_yaml(base / "unknown_adapter" / "model.yaml", "evalkit.models.NoSuchAdapter", model_name="x")
    cases["unknown_adapter_class_path"] = (
        ["predict", "--config", str(CRC_TASK), "--config", str(adapter), "--data_root", str(DATA)], {},
        "evalkit.models.NoSuchAdapter")

    (base / "foreign_h5").mkdir()
    foreign = write_foreign_h5(base / "foreign_h5" / "features.h5")
    cases["foreign_h5_as_train_h5"] = (
        ["fit", "--config", str(PRECOMPUTED_TASK)], {"TRAIN_H5": str(foreign), "VAL_H5": str(foreign)}, str(foreign))

    (base / "wrong_keys").mkdir()
    state = torchvision.models.resnet18().state_dict()
    state["head.weight"] = state.pop("fc.weight")
    torch.save(state, base / "wrong_keys" / "weights.pth")
    checkpoint = model_yaml(base / "wrong_keys" / "model.yaml", "evalkit.models.LocalCheckpointModel",
                            builder="torchvision.models.resnet18",
                            checkpoint_path=str(base / "wrong_keys" / "weights.pth"))
    cases["checkpoint_wrong_keys"] = (
        ["predict", "--config", str(CRC_TASK), "--config", str(checkpoint), "--data_root", str(DATA)], {},
        str(base / "wrong_keys" / "weights.pth"))

    cases["pretrained_offline"] = (
        ["predict", "--config", str(CRC_TASK), "--config", str(RESNET_RANDOM), "--model.init_args.model_name",
         "resnet18", "--model.init_args.pretrained", "true", "--data_root", str(DATA)],
        {"HF_HUB_CACHE": str(base / "pretrained_offline" / "hf"), "TORCH_HOME": str(base / "pretrained_offline")},
        "resnet18")

    # Misspelt or out-of-range settings, refused before any work starts.
    cases["misspelt_model_option"] = (
        ["predict", "--config", str(CRC_TASK), *_fast_model("--model.init_args.model_nam", "resnet34")], {},
        "TimmModel has no option 'model_nam'; its options: model_name")
    cases["unknown_interpolation"] = (
        ["predict", "--config", str(CRC_TASK), *_fast_model("--model.init_args.preprocessing.interpolation", "lanczos")],
        {}, "'lanczos' is not one of bilinear, bicubic, nearest")
    cases["model_kwargs_the_net_refuses"] = (
        ["predict", "--config", str(CRC_TASK), *_fast_model("--model.init_args.model_kwargs", "{bogus: 1}"),
         "--data_root", str(DATA)], {}, "unexpected keyword argument 'bogus'")
    cases["absent_gpu_for_the_probe"] = (
        ["fit", "--config", str(CRC_TASK), *_fast_model(), "--head.device", "cuda:99"], {}, "head.device")
    cases["report_of_a_binary_file"] = (
        ["report", str(REPO / "results" / "baselines" / "crc_demo" / "predictions.h5")], {},
        "predictions.h5 is not an evalkit results.json")
    run = _schema2_run(base / "report_of_a_metric_not_reported" / "runs" / "crc_demo" / "m" / "run-1")
    cases["report_of_a_metric_not_reported"] = (
        ["report", str(run), "--metric", "balanced_acc", "--plots", "false"],
        {}, "one they report: accuracy, auroc_macro, balanced_accuracy, f1_macro")

    (base / "schema1_h5").mkdir()
    old = write_schema1_h5(base / "schema1_h5" / "train.h5")
    cases["schema1_h5_as_train_h5"] = (
        ["fit", "--config", str(PRECOMPUTED_TASK)], {"TRAIN_H5": str(old), "VAL_H5": str(old)}, "schema 1")

    if not torch.cuda.is_available():
        cases["absent_gpu_for_embedding"] = (
            ["predict", "--config", str(CRC_TASK), *_fast_model("--embed.accelerator", "gpu"), "--data_root",
             str(DATA)], {}, "--embed.accelerator gpu")
    return cases


CASE_NAMES = ["missing_data_folder", "truncated_png", "garbage_tif", "unknown_timm_model",
              "unknown_adapter_class_path", "foreign_h5_as_train_h5", "checkpoint_wrong_keys", "pretrained_offline",
              "misspelt_model_option", "unknown_interpolation", "model_kwargs_the_net_refuses",
              "absent_gpu_for_the_probe", "report_of_a_binary_file", "report_of_a_metric_not_reported",
              "schema1_h5_as_train_h5"]
CASE_NAMES += [] if torch.cuda.is_available() else ["absent_gpu_for_embedding"]
# Raised inside a DataLoader worker; the hub cache location, which huggingface_hub reads once, at import.
SUBPROCESS = ("truncated_png", "pretrained_offline")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    base = tmp_path_factory.mktemp("bad_inputs")
    cases = _cases(base)
    assert sorted(cases) == sorted(CASE_NAMES)
    argvs = {}
    for name, (argv, _, _) in cases.items():
        (base / name).mkdir(exist_ok=True)
        argvs[name] = argv + {"fit": ["--results_root", str(base / name / "res")],
                              "predict": ["--embeddings_root", str(base / name / "emb")]}.get(argv[0], [])
    running = {name: subprocess.Popen(evalkit_cmd(*argvs[name]), cwd=base / name, env=cli_env(**cases[name][1]),
                                      text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for name in SUBPROCESS}  # they run while the in-process cases do
    done: dict[str, Outcome] = {}
    for name, (_, env, names) in cases.items():
        if name not in SUBPROCESS:
            proc = run_in_process(*argvs[name], cwd=base / name, **env)
            done[name] = Outcome(proc.returncode, proc.stdout, proc.stderr, base / name, names)
    for name, proc in running.items():
        try:
            out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        done[name] = Outcome(proc.returncode, out, err, base / name, cases[name][2])
    return done


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_is_one_clear_line(outcomes, name):
    outcome = outcomes[name]
    names_what = outcome.names
    assert outcome.returncode not in (0, None), outcome.stderr
    assert "Traceback" not in outcome.stderr and "Traceback" not in outcome.stdout
    lines = outcome.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("evalkit: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], outcome.stderr
    assert not any(line.startswith(("usage:", "error:")) for line in lines), outcome.stderr
    assert names_what in errors[0], f"expected the message to name {names_what!r}: {errors[0]}"
    # Nothing that claims to be a finished cache was written.
    assert not list((outcome.root / "emb").rglob("*.h5")), "a failed run left a cache file"



def test_an_old_schema_cache_says_how_to_regenerate_it(outcomes):
    """A schema-1 file (evalkit before schema versions) is refused, never read as if it were current."""
    [error] = [line for line in outcomes["schema1_h5_as_train_h5"].stderr.splitlines() if "evalkit: error:" in line]
    assert "schema 1" in error and "evalkit predict" in error and "train.h5" in error
    assert not list((outcomes["schema1_h5_as_train_h5"].root / "res").rglob("results.json"))
