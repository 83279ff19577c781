"""Datasets on small fake trees made from the real tiles, and bring-your-own-embeddings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from evalkit import pipeline
from evalkit.cli import main
from evalkit.data import DATASETS, ImageCSV, ImageFolder, PrecomputedEmbeddings, read_rgb
from evalkit.embed import embed_task, read_embeddings
from evalkit.errors import EvalkitError
from evalkit.evaluations.linear_probe import LinearProbe
from evalkit.heads import LinearProbeConfig
from evalkit.stats.config import StatsConfig
from fixtures import BUILDERS, WITHOUT_IMAGES
from helpers import CONFIGS, CRC_DEMO, PRECOMPUTED_TASK, cpu_embed, load_task, small_timm

TILES = sorted(p for p in CRC_DEMO.rglob("*") if p.suffix in (".png", ".tif"))


def make_folder_tree(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    """``root/<split folder>/<class>/<n real tiles>``."""
    tiles = iter(TILES * 10)
    for split, classes in layout.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                tile = next(tiles)
                shutil.copy(tile, root / split / name / f"{name}-{i}{tile.suffix}")
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder_tree(tmp_path / "ds", {"train": {"TUM": 3, "ADI": 2, "NORM": 2},
                                              "val": {"TUM": 1, "ADI": 1, "NORM": 1}})


# ---- every registered dataset ------------------------------------------------------------------------

def test_every_registered_dataset_has_a_fixture():
    covered = set(BUILDERS) | set(WITHOUT_IMAGES)
    missing, unknown = sorted(set(DATASETS.names()) - covered), sorted(covered - set(DATASETS.names()))
    assert not missing, f"add a fixture for the dataset(s) {missing}: a builder in BUILDERS in tests/data/fixtures.py"
    assert not unknown, f"tests/data/fixtures.py has fixtures for {unknown}, which evalkit.data.DATASETS does not register"


@pytest.mark.parametrize("name", [name for name in DATASETS.names() if name not in WITHOUT_IMAGES])
def test_every_registered_dataset_lists_and_reads_its_fixture(name, tmp_path):
    expected = BUILDERS[name](tmp_path)
    spec = DATASETS.get(name)(root=expected.folder, allow_subset=True)
    for split in expected.splits:
        listing = spec.list_split(tmp_path, split, check_counts=False)
        assert listing.ids == expected.ids(split) and listing.labels.tolist() == expected.labels(split)
        image = spec.read_image(listing, len(listing) - 1)
        assert image.mode == "RGB" and min(image.size) > 0


# ---- ImageFolder -------------------------------------------------------------------------------------

def test_image_folder_inferred_classes(folder):
    ds = ImageFolder(str(folder))
    listing = ds.list_split(folder.parent, "train")
    assert ds.classes == ["ADI", "NORM", "TUM"]  # sorted class folders of the first split
    assert listing.labels.dtype == np.int64
    assert listing.labels.tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert [i.rsplit(".", 1)[0] for i in listing.ids] == [
        "train/ADI/ADI-0", "train/ADI/ADI-1", "train/NORM/NORM-0", "train/NORM/NORM-1",
        "train/TUM/TUM-0", "train/TUM/TUM-1", "train/TUM/TUM-2"]
    assert all((folder / i).is_file() for i in listing.ids)
    assert [str(p) for p in listing.paths] == [str(folder / i) for i in listing.ids]


def test_image_folder_explicit_classes_set_the_label_order(tmp_path, folder):
    ds = ImageFolder(str(folder), classes=["TUM", "NORM", "ADI", "MUC"])  # MUC has no folder: allowed
    listing = ds.list_split(tmp_path, "val")
    assert [i.split("/")[1] for i in listing.ids] == ["TUM", "NORM", "ADI"]
    assert listing.labels.tolist() == [0, 1, 2]
    assert ds.classes == ["TUM", "NORM", "ADI", "MUC"]


def test_image_folder_relative_root_is_under_data_root(folder):
    listing = ImageFolder("ds").list_split(folder.parent, "val")
    assert len(listing) == 3


def test_image_folder_unknown_class_folder(folder):
    with pytest.raises(EvalkitError) as info:
        ImageFolder(str(folder), classes=["ADI", "TUM"]).list_split(folder.parent, "train")
    assert "NORM" in str(info.value) and str(folder / "train") in str(info.value)


def test_image_folder_class_only_in_val_is_unknown(tmp_path):
    root = make_folder_tree(tmp_path / "ds", {"train": {"A": 1, "B": 1}, "val": {"A": 1, "C": 1}})
    ds = ImageFolder(str(root))
    ds.list_split(tmp_path, "train")
    with pytest.raises(EvalkitError, match="'C'"):
        ds.list_split(tmp_path, "val")


def test_image_folder_missing_split_folder_names_the_path(folder):
    ds = ImageFolder(str(folder), splits={"train": "train", "val": "validation"})
    with pytest.raises(EvalkitError) as info:
        ds.list_split(folder.parent, "val")
    assert str(folder / "validation") in str(info.value)


def test_image_folder_missing_root_and_unknown_split(tmp_path, folder):
    with pytest.raises(EvalkitError, match=str(tmp_path / "nowhere")):
        ImageFolder("nowhere").list_split(tmp_path, "train")
    with pytest.raises(EvalkitError, match="'test'"):
        ImageFolder(str(folder)).list_split(tmp_path, "test")


def test_image_folder_without_images(tmp_path):
    (tmp_path / "ds" / "train" / "A").mkdir(parents=True)
    (tmp_path / "ds" / "train" / "A" / "notes.txt").write_text("no image here")
    with pytest.raises(EvalkitError, match="no images"):
        ImageFolder(str(tmp_path / "ds")).list_split(tmp_path, "train")


def test_image_folder_task_config_predicts_and_fits(folder, tmp_path):
    """The shipped generic task (classes: null) through embed and fit: both stages find the same cache."""
    task = load_task(CONFIGS / "tasks" / "image_folder.yaml", "--task.dataset.init_args.root", str(folder))
    caches = embed_task(task, small_timm(input_size=32), tmp_path, tmp_path / "emb", cpu_embed())
    train = read_embeddings(caches[0].path)
    assert train.classes == ["ADI", "NORM", "TUM"] and len(train.ids) == 7
    fresh = load_task(CONFIGS / "tasks" / "image_folder.yaml", "--task.dataset.init_args.root", str(folder))
    probe = LinearProbe(head=LinearProbeConfig(n_runs=1, max_steps=5))
    results = pipeline.fit(fresh, small_timm(input_size=32), probe, str(tmp_path / "emb"), str(tmp_path / "res"),
                           StatsConfig(n_resamples=100), {}, {}, lambda message: None)
    assert json.loads(results.read_text())["num_classes"] == 3


def test_read_rgb_converts_and_names_broken_files(tmp_path):
    from PIL import Image

    Image.new("RGBA", (8, 8)).save(tmp_path / "rgba.png")
    Image.new("L", (8, 8)).save(tmp_path / "gray.png")
    assert read_rgb(tmp_path / "rgba.png").mode == "RGB" and read_rgb(tmp_path / "gray.png").mode == "RGB"
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((CRC_DEMO / "ADI" / "ADI-TCGA-EENSRDNW.png").read_bytes()[:300])
    with pytest.raises(EvalkitError, match="truncated.png"):
        read_rgb(truncated)
    (tmp_path / "garbage.tif").write_bytes(b"garbage" * 50)
    with pytest.raises(EvalkitError, match="garbage.tif"):
        read_rgb(tmp_path / "garbage.tif")


# ---- ImageCSV ----------------------------------------------------------------------------------------

def make_csv_dataset(root: Path, rows: list[str], header: str = "path,label,split") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for tile in TILES[:4]:
        shutil.copy(tile, root / tile.name)
    (root / "split.csv").write_text("\n".join([header, *rows]) + "\n")
    return root


def _rows():
    names = [t.name for t in TILES[:4]]
    return [f"{names[0]},TUM,train", f"{names[1]},ADI,train", f"{names[2]},TUM,val", f"{names[3]},ADI,train"]


def test_image_csv_lists_rows_in_file_order(tmp_path):
    root = make_csv_dataset(tmp_path / "ds", _rows())
    ds = ImageCSV(str(root), classes=["TUM", "ADI"])
    listing = ds.list_split(tmp_path, "train")
    assert listing.ids == [r.split(",")[0] for r in _rows() if r.endswith("train")]
    assert listing.labels.tolist() == [0, 1, 1]
    inferred = ImageCSV(str(root))
    assert inferred.list_split(tmp_path, "train").labels.tolist() == [1, 0, 0]
    assert inferred.classes == ["ADI", "TUM"]


def test_image_csv_shipped_demo_split():
    ds = ImageCSV("crc_demo", classes=["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"])
    train, val = ds.list_split(CRC_DEMO.parent, "train"), ds.list_split(CRC_DEMO.parent, "val")
    assert (len(train), len(val)) == (25, 16)
    assert not set(train.ids) & set(val.ids)


def test_image_csv_missing_columns(tmp_path):
    root = make_csv_dataset(tmp_path / "ds", [r.rsplit(",", 1)[0] for r in _rows()], header="path,label")
    with pytest.raises(EvalkitError, match="split") as info:
        ImageCSV(str(root)).list_split(tmp_path, "train")
    assert "split.csv" in str(info.value)


def test_image_csv_missing_image_names_it(tmp_path):
    root = make_csv_dataset(tmp_path / "ds", _rows() + ["gone.png,TUM,train"])
    with pytest.raises(EvalkitError, match="gone.png"):
        ImageCSV(str(root)).list_split(tmp_path, "train")


def test_image_csv_unknown_label(tmp_path):
    root = make_csv_dataset(tmp_path / "ds", _rows())
    with pytest.raises(EvalkitError) as info:
        ImageCSV(str(root), classes=["TUM", "NORM"]).list_split(tmp_path, "train")
    assert "'ADI'" in str(info.value)


def test_image_csv_missing_file_and_empty_split(tmp_path):
    root = make_csv_dataset(tmp_path / "ds", _rows())
    with pytest.raises(EvalkitError, match="other.csv"):
        ImageCSV(str(root), csv_file="other.csv").list_split(tmp_path, "train")
    with pytest.raises(EvalkitError, match="'test'"):
        ImageCSV(str(root)).list_split(tmp_path, "test")


# ---- PrecomputedEmbeddings -----------------------------------------------------------------------

def test_precomputed_reads_env_files(monkeypatch, tmp_path):
    for name in ("train.h5", "val.h5", "other_val.h5"):
        (tmp_path / name).touch()
    monkeypatch.setenv("TRAIN_H5", str(tmp_path / "train.h5"))
    monkeypatch.setenv("VAL_H5", str(tmp_path / "val.h5"))
    ds = PrecomputedEmbeddings()
    assert ds.cache_file("train") == tmp_path / "train.h5" and ds.cache_file("val") == tmp_path / "val.h5"
    with pytest.raises(EvalkitError, match="TEST_H5"):
        ds.cache_file("test")
    assert PrecomputedEmbeddings(val_h5=str(tmp_path / "other_val.h5")).cache_file("val") == tmp_path / "other_val.h5"
    with pytest.raises(EvalkitError, match="fit"):
        ds.list_split(".", "train")


def test_a_precomputed_file_that_is_not_there_is_named_without_sending_the_user_to_predict(monkeypatch):
    """`evalkit predict` cannot make a bring-your-own file: the error names the path and where it came from."""
    monkeypatch.setenv("TRAIN_H5", "no/such/train.h5")
    with pytest.raises(EvalkitError) as error:
        PrecomputedEmbeddings().cache_file("train")
    message = str(error.value)
    assert "no/such/train.h5" in message and "TRAIN_H5" in message and "predict" not in message


def test_precomputed_task_fits_end_to_end(crc_cache, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TRAIN_H5", str(crc_cache.caches["train"].path))
    monkeypatch.setenv("VAL_H5", str(crc_cache.caches["val"].path))
    monkeypatch.setenv("TEST_H5", str(crc_cache.caches["val"].path))
    code = main(["fit", "--config", str(PRECOMPUTED_TASK), "--head.n_runs", "2", "--head.max_steps", "60",
                 "--task.test_split", "test", "--results_root", str(tmp_path / "res")])
    assert code == 0, capsys.readouterr().err
    [path] = list((tmp_path / "res" / "precomputed").rglob("results.json"))
    results = json.loads(path.read_text())
    assert results["task"] == "precomputed"
    assert results["model"] == crc_cache.model.name
    assert results["n_runs"] == 2 and results["num_classes"] == 9
    assert set(results["metrics"]) == {"val", "test"}
    assert results["metrics"]["val"] == results["metrics"]["test"]  # same file, same weights
    assert len(results["metrics"]["val"]["balanced_accuracy"]["runs"]) == 2
    assert (path.parent / "config.yaml").is_file()


def test_precomputed_task_without_val_file(crc_cache, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TRAIN_H5", str(crc_cache.caches["train"].path))
    code = main(["fit", "--config", str(PRECOMPUTED_TASK), "--results_root", str(tmp_path / "res")])
    assert code != 0
    err = capsys.readouterr().err
    assert "evalkit: error:" in err and "VAL_H5" in err
    assert not (tmp_path / "res").exists() or not list((tmp_path / "res").rglob("results.json"))
