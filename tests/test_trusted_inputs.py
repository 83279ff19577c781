"""Inputs that must never become a wrong number or an escaped path: labels outside the class list,
classes that cannot be learned, a declared split the task ignores, names that would leave their
root, and the run folder of a fit that was killed while writing."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from evalkit.data import PrecomputedEmbeddings
from evalkit.data.image_folder import ImageFolder
from evalkit.embed.cache import SCHEMA_VERSION
from evalkit.errors import EvalkitError
from evalkit.evaluations import get_evaluation
from evalkit.locks import FileLock
from evalkit.models import TimmModel
from evalkit.paths import inside, safe_name
from evalkit.pipeline import fit
from evalkit.results import remove_leftover_runs
from evalkit.stats.config import StatsConfig
from evalkit.task import Task
from helpers import CRC_TASK, run_in_process

CLASSES = ["a", "b", "c"]


def _rows_file(path: Path, labels: list[int], classes: list[str] | None = CLASSES, dim: int = 4) -> Path:
    rng = np.random.default_rng(len(labels))
    with h5py.File(path, "w") as f:
        f.create_dataset("embeddings", data=rng.standard_normal((len(labels), dim)).astype(np.float32))
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
        f.create_dataset("ids", data=np.asarray([f"s{i}" for i in range(len(labels))], dtype=object),
                         dtype=h5py.string_dtype("utf-8"))
        f.attrs.update({"schema_version": SCHEMA_VERSION, "kind": "rows", "model": "byo", "model_fingerprint": "f" * 64,
                        "dataset": "byo", "split": path.stem, "transform": "{}", "complete": True,
                        "evalkit_version": "test", **({"classes": json.dumps(classes)} if classes else {})})
    return path


def _fit(tmp_path: Path, train: list[int], val: list[int], classes: list[str] | None = CLASSES) -> dict:
    task = Task("byo", PrecomputedEmbeddings(str(_rows_file(tmp_path / "train.h5", train, classes)),
                                             str(_rows_file(tmp_path / "val.h5", val, classes))))
    log: list[str] = []
    path = fit(task, None, get_evaluation("knn")(), str(tmp_path / "emb"), str(tmp_path / "runs"),
               StatsConfig(n_resamples=100), {}, log=log.append)
    return {"record": json.loads(path.read_text()), "log": log, "path": path}


@pytest.mark.parametrize("bad", [3, 7, -2])
def test_a_label_outside_the_class_list_is_refused_in_one_line(tmp_path, bad):
    with pytest.raises(EvalkitError) as err:
        _fit(tmp_path, [0, 1, 2, 0, 1, 2], [0, 1, bad, 2])
    message = str(err.value)
    assert f"label {bad} of sample 's2'" in message and "outside 0..2 (or -1 for unlabelled)" in message
    assert "\n" not in message and "val.h5" in message


def test_unlabelled_rows_are_left_out_without_a_warning(tmp_path):
    run = _fit(tmp_path, [0, 1, 2, -1, 0, 1, 2], [0, 1, 2, -1])
    assert run["record"]["warnings"] == []


def test_a_class_without_training_samples_is_a_warning_in_the_log_and_the_record(tmp_path):
    run = _fit(tmp_path, [0, 1, 0, 1, 0, 1], [0, 1, 2, 2])
    [line] = run["record"]["warnings"]
    assert line.startswith("class 'c' has no train samples") and "2 val sample(s) can only be misclassified" in line
    assert any("warning: class 'c' has no train samples" in entry for entry in run["log"])


def test_a_class_missing_from_validation_is_a_warning(tmp_path):
    run = _fit(tmp_path, [0, 1, 2, 0, 1, 2], [0, 1, 0, 1])
    assert run["record"]["warnings"] == ["val has no samples of class(es) ['c']: its balanced accuracy averages "
                                         "over the other classes only"]


def test_an_empty_class_folder_is_warned_about(tmp_path):
    """Through the real pipeline: an image-folder dataset whose class 'c' folder is empty in training."""
    from PIL import Image

    from evalkit.embed import EmbedConfig, embed_task
    from evalkit.models import Preprocessing

    root = tmp_path / "data" / "folders"
    rng = np.random.default_rng(0)
    for split, classes in (("train", "ab"), ("val", "abc")):
        for c in "abc":
            (root / split / c).mkdir(parents=True)
        for c in classes:
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    task = Task("folders", ImageFolder("folders", splits={"train": "train", "val": "val", "test": "val"}))
    model = TimmModel("resnet18", preprocessing=Preprocessing(input_size=32))
    embed_task(task, model, tmp_path / "data", tmp_path / "emb",
               EmbedConfig(batch_size=8, num_workers=0, accelerator="cpu", devices=1), lambda line: None)
    path = fit(task, model, get_evaluation("knn")(), str(tmp_path / "emb"), str(tmp_path / "runs"),
               StatsConfig(n_resamples=100), {}, log=lambda line: None)
    warnings = json.loads(path.read_text())["warnings"]
    assert warnings[0].startswith("the dataset declares split(s) ['test'] that task 'folders' never embeds nor scores")
    assert warnings[1].startswith("class 'c' has no train samples (an empty class folder?); its 3 val sample(s)")


# ---- names that become paths ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../../x", "/abs/path", "a/b", ".hidden", "", "two words", "..", "x" * 200])
def test_a_name_that_is_not_one_safe_folder_name_is_refused(tmp_path, name):
    with pytest.raises(EvalkitError, match="cannot be used as a folder name; use only letters"):
        Task(name, PrecomputedEmbeddings())
    if name:  # an empty model name means "the adapter's default"
        with pytest.raises(EvalkitError, match="model name .* cannot be used as a folder name"):
            TimmModel("resnet18", name=name).name
    with pytest.raises(EvalkitError, match="cannot be used as a folder name"):
        inside(tmp_path, "task", name)


def test_derived_names_are_encoded_not_refused():
    assert TimmModel("hf-hub:org/model", pretrained=False).name == "hf-hub_org_model-random"
    assert safe_name("../../evil") == "_.._evil" and safe_name("/etc") == "_etc"


def test_cli_refuses_an_escaping_model_name_before_any_work(tmp_path):
    result = run_in_process("predict_fit", "--config", CRC_TASK, "--config", "configs/models/resnet50_random.yaml",
                            "--model.name", "../../../escaped", cwd=Path(__file__).resolve().parents[1],
                            EMBEDDINGS_ROOT=str(tmp_path / "emb"), RESULTS_ROOT=str(tmp_path / "runs"))
    assert result.returncode != 0
    assert "evalkit: error: model name '../../../escaped' cannot be used as a folder name" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path.parent / "escaped").exists()
    assert not list(tmp_path.rglob("*.h5"))


def test_a_byo_file_naming_an_escaping_model_writes_inside_the_results_root(tmp_path, monkeypatch):
    original = _rows_file

    def escaping(path, labels, classes=CLASSES, dim=4):
        original(path, labels, classes, dim)
        with h5py.File(path, "r+") as f:
            f.attrs["model"] = "../../outside"
        return path

    monkeypatch.setitem(globals(), "_rows_file", escaping)
    run = _fit(tmp_path, [0, 1, 2, 0, 1, 2], [0, 1, 2, 0])
    assert run["record"]["model"] == "_.._outside"
    assert run["path"].resolve().is_relative_to((tmp_path / "runs").resolve())


# ---- the run folder of a killed fit ----------------------------------------------------------------

def test_a_fit_killed_while_writing_leaves_no_run_folder_and_the_next_fit_cleans_up(tmp_path, monkeypatch):
    import evalkit.results as results

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands for a kill in the middle of writing predictions.h5

    monkeypatch.setattr(results, "write_predictions", killed)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, [0, 1, 2, 0, 1, 2], [0, 1, 2, 0])
    model_dir = tmp_path / "runs" / "byo" / "byo"
    assert [p.name for p in model_dir.iterdir() if not p.name.startswith(".")] == []  # no visible run folder
    monkeypatch.undo()
    run = _fit(tmp_path, [0, 1, 2, 0, 1, 2], [0, 1, 2, 0])
    assert sorted(p.name for p in model_dir.iterdir()) == [run["path"].parent.name]
    assert any("left by a fit that was stopped while writing" in line for line in run["log"])


def test_a_live_fits_folder_is_never_removed(tmp_path):
    model_dir = tmp_path / "m"
    (model_dir / ".20260101-000000-abcd.partial").mkdir(parents=True)
    (model_dir / ".20260101-000000-dead.partial").mkdir()
    (model_dir / ".20260101-000000-dead.partial" / "predictions.h5.tmp").write_bytes(b"x")
    (model_dir / ".20260101-000000-dead.lock").touch()
    live = FileLock(model_dir / ".20260101-000000-abcd.lock", "test")
    live.acquire()
    try:
        removed = remove_leftover_runs(model_dir)
    finally:
        live.release()
    assert [p.name for p in removed] == [".20260101-000000-dead.partial"]
    assert (model_dir / ".20260101-000000-abcd.partial").is_dir()
    assert not (model_dir / ".20260101-000000-dead.lock").exists()
