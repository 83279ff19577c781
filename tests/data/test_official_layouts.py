"""BACH, CRC, MHIST, PatchCamelyon and CoNSeP in their exact official layouts, built from real tiles.

The readers are checked against numbers written in this file (eva's BACH index ranges, the
published split sizes, the class orders), then the real command line is run on the same
folders: ``evalkit data check`` for all five tasks and ``evalkit predict_fit`` for the four
classification tasks, a few in subprocesses, the rest in-process (see ``evalkit``).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from importlib import resources
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from evalkit.data import BACH, CRC, DATASETS, MHIST, CoNSeP, PatchCamelyon
from evalkit.data.bach import bach_split
from evalkit.data.check import check_task
from evalkit.data.consep import merge_types
from evalkit.errors import EvalkitError
from fixtures import (BACH_CLASSES, BACH_FILES, BACH_SIZE, BUILDERS, CONSEP_CLASSES, MHIST_CLASSES, MHIST_HEADER,
                      PCAM_CLASSES, PCAM_LABELS, PUBLISHED, TYPE_TO_CLASS_REFERENCE, Expected, Outcome, build_all,
                      build_crc, build_mhist, gzip_file, pcam_file, pcam_patches, run_many, truncate)
from helpers import CONFIGS, CRC_CLASSES, load_task, model_yaml, read_h5, run_in_process

TASKS = CONFIGS / "tasks"
SPECS = {name: DATASETS.get(name) for name in PUBLISHED}  # every registered dataset with official counts
CLASSES = {"bach": BACH_CLASSES, "crc": CRC_CLASSES, "mhist": MHIST_CLASSES, "pcam": PCAM_CLASSES,
           "consep": CONSEP_CLASSES}
SPLITS = {"bach": ["train", "val"], "crc": ["train", "val"], "mhist": ["train", "test"],
          "pcam": ["train", "val", "test"], "consep": ["train", "test"]}
EVAL_SPLITS = {"bach": {"val"}, "crc": {"val"}, "mhist": {"test"}, "pcam": {"val", "test"}}

# The published sizes (BACH: eva's split of the 400 photos; CRC: Zenodo 1214456; MHIST: Wei et al. 2021;
# PCam: Veeling et al. 2018; CoNSeP: Graham et al. 2019), written out independently of the readers.
OFFICIAL = {
    "bach": {"train": {"Benign": 52, "InSitu": 70, "Invasive": 69, "Normal": 77},
             "val": {"Benign": 48, "InSitu": 30, "Invasive": 31, "Normal": 23}},
    "crc": {"train": {"ADI": 10407, "BACK": 10566, "DEB": 11512, "LYM": 11557, "MUC": 8896, "MUS": 13536,
                      "NORM": 8763, "STR": 10446, "TUM": 14317},
            "val": {"ADI": 1338, "BACK": 847, "DEB": 339, "LYM": 634, "MUC": 1035, "MUS": 592, "NORM": 741,
                    "STR": 421, "TUM": 1233}},
    "mhist": {"train": {"SSA": 630, "HP": 1545}, "test": {"SSA": 360, "HP": 617}},
}
OFFICIAL_TOTALS = {"bach": {"train": 268, "val": 132}, "crc": {"train": 100_000, "val": 7_180},
                   "mhist": {"train": 2_175, "test": 977}, "pcam": {"train": 262_144, "val": 32_768, "test": 32_768},
                   "consep": {"train": 27, "test": 14}}
# eva's BACH split: index ranges over the 400 photos sorted by class, then file name
# (kaiko-ai/eva, src/eva/vision/data/datasets/classification/bach.py).
EVA_BACH_RANGES = {"train": [(0, 41), (59, 60), (90, 139), (169, 240), (258, 260), (273, 345), (368, 400)],
                   "val": [(41, 59), (60, 90), (139, 169), (240, 258), (260, 273), (345, 368)]}
SUBSET = ["--task.dataset.allow_subset", "true"]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> tuple[Path, dict[str, Expected]]:
    """All five datasets under one data root; read-only (tests that damage data build their own)."""
    root = tmp_path_factory.mktemp("datasets")
    return root, build_all(root)


def _spec(task: str, **kwargs):
    return SPECS[task](**kwargs)


# ---- 1. the readers --------------------------------------------------------------------------------------

def test_bach_csv_is_evas_patient_split():
    """splits/bach.csv: 400 photos, 268 train / 132 val, equal to eva's index ranges and BACH.official_counts."""
    text = resources.files("evalkit.data").joinpath("splits/bach.csv").read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "path,split" and len(lines) == 401
    rows = list(csv.DictReader(lines))
    assert len(rows) == 400 and len({r["path"] for r in rows}) == 400
    assert set(rows[0]) == {"path", "split"}
    assert sum(r["split"] == "train" for r in rows) == 268 and sum(r["split"] == "val" for r in rows) == 132
    for split in ("train", "val"):
        counts = {name: sum(r["split"] == split and r["path"].startswith(name + "/") for r in rows) for name in BACH_CLASSES}
        assert counts == OFFICIAL["bach"][split] == BACH.official_counts[split]
    photos = [f"{name}/{prefix}{i:03d}.tif" for name, prefix in zip(BACH_CLASSES, ["b", "is", "iv", "n"])
              for i in range(1, 101)]
    assert photos == sorted(photos, key=lambda p: (BACH_CLASSES.index(p.split("/")[0]), p))
    eva = {photos[i]: split for split, ranges in EVA_BACH_RANGES.items() for lo, hi in ranges for i in range(lo, hi)}
    assert len(eva) == 400
    assert bach_split() == eva


def test_bach_lists_the_official_layout(layouts):
    root, expected = layouts
    spec = BACH(allow_subset=True)
    assert spec.classes == ["Benign", "InSitu", "Invasive", "Normal"]
    photos = root / "bach" / "ICIAR2018_BACH_Challenge" / "Photos"
    assignment = bach_split()
    for split in ("train", "val"):
        listing = spec.list_split(root, split)
        assert listing.ids == expected["bach"].ids(split)
        assert listing.labels.dtype == np.int64 and listing.labels.tolist() == expected["bach"].labels(split)
        assert listing.paths == [photos / i for i in listing.ids]
        assert all(assignment[i] == split for i in listing.ids)
    train, val = spec.list_split(root, "train"), spec.list_split(root, "val")
    assert (len(train), len(val)) == (7, 5)
    assert train.class_counts(4) == [2, 2, 1, 2] and val.class_counts(4) == [1, 1, 2, 1]
    # Specific photos: the split follows bach.csv, the label the class folder.
    by_id = {i: (s, label) for s, listing in (("train", train), ("val", val))
             for i, label in zip(listing.ids, listing.labels.tolist())}
    assert by_id == {f"{name}/{file}": (split, label) for label, name in enumerate(BACH_CLASSES)
                     for file, split in BACH_FILES[name].items()}
    assert by_id["Benign/b001.tif"] == ("train", 0) and by_id["Benign/b045.tif"] == ("val", 0)
    assert by_id["Benign/b060.tif"] == ("train", 0)  # eva's one-photo train range (59, 60)
    assert by_id["InSitu/is040.tif"] == ("val", 1) and by_id["InSitu/is070.tif"] == ("train", 1)
    assert by_id["Invasive/iv059.tif"] == ("train", 2) and by_id["Invasive/iv073.tif"] == ("val", 2)
    assert by_id["Normal/n046.tif"] == ("val", 3) and by_id["Normal/n100.tif"] == ("train", 3)
    image = spec.read_image(val, 0)
    assert image.mode == "RGB" and image.size == BACH_SIZE
    with pytest.raises(EvalkitError, match="'test'"):
        spec.list_split(root, "test")


def test_bach_refuses_a_photo_that_is_not_in_the_release(tmp_path):
    BUILDERS["bach"](tmp_path)
    stray = tmp_path / "bach" / "ICIAR2018_BACH_Challenge" / "Photos" / "Benign" / "b101.tif"
    Image.new("RGB", (8, 8)).save(stray)
    with pytest.raises(EvalkitError, match=re.escape(str(stray))):
        BACH(allow_subset=True).list_split(tmp_path, "train")


def test_crc_lists_the_official_layout(layouts):
    root, expected = layouts
    spec = CRC(allow_subset=True)
    assert spec.classes == ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
    for split, folder in (("train", "NCT-CRC-HE-100K"), ("val", "CRC-VAL-HE-7K")):
        listing = spec.list_split(root, split)
        assert listing.ids == expected["crc"].ids(split)
        assert listing.labels.tolist() == expected["crc"].labels(split)
        assert all(i.startswith(folder + "/") and i.endswith(".tif") for i in listing.ids)
        # every label is the index, in the official order, of the class folder the tile is in
        assert [CRC_CLASSES[label] for label in listing.labels] == [i.split("/")[1] for i in listing.ids]
    assert spec.list_split(root, "train").class_counts(9) == [2] * 9
    assert spec.list_split(root, "val").class_counts(9) == [1] * 9
    train = spec.list_split(root, "train")
    assert train.ids[:2] == ["NCT-CRC-HE-100K/ADI/ADI-AAQEFMRI.tif", "NCT-CRC-HE-100K/ADI/ADI-TCGA-EENSRDNW.tif"]
    assert train.labels[train.ids.index("NCT-CRC-HE-100K/TUM/TUM-AACHEHDV.tif")] == 8
    assert spec.read_image(train, 0).size == (224, 224)


def test_crc_nonorm_train_folder(layouts, tmp_path):
    root, expected = layouts
    (tmp_path / "crc").mkdir()
    (tmp_path / "crc" / "NCT-CRC-HE-100K-NONORM").symlink_to(root / "crc" / "NCT-CRC-HE-100K")
    (tmp_path / "crc" / "CRC-VAL-HE-7K").symlink_to(root / "crc" / "CRC-VAL-HE-7K")
    spec = CRC(train_folder="NCT-CRC-HE-100K-NONORM", allow_subset=True)
    listing = spec.list_split(tmp_path, "train")
    assert listing.ids == [i.replace("NCT-CRC-HE-100K/", "NCT-CRC-HE-100K-NONORM/") for i in expected["crc"].ids("train")]
    assert spec.identity() != CRC().identity()  # another cache key


def test_mhist_lists_the_official_layout(layouts):
    root, expected = layouts
    spec = MHIST(allow_subset=True)
    assert spec.classes == ["SSA", "HP"]  # eva: SSA = 0, HP = 1
    header = (root / "mhist" / "annotations.csv").read_text().splitlines()[0]
    assert header == ",".join(MHIST_HEADER) == ("Image Name,Majority Vote Label,"
                                                "Number of Annotators who Selected SSA (Out of 7),Partition")
    train, test = spec.list_split(root, "train"), spec.list_split(root, "test")
    assert train.ids == expected["mhist"].ids("train") and test.ids == expected["mhist"].ids("test")
    assert train.labels.tolist() == [0, 1, 0, 1, 1, 1, 0] and test.labels.tolist() == [1, 0, 1, 0]
    assert train.ids[:3] == ["images/MHIST_aaa.png", "images/MHIST_aab.png", "images/MHIST_aad.png"]  # CSV order
    assert test.ids == ["images/MHIST_aac.png", "images/MHIST_aaf.png", "images/MHIST_aaj.png", "images/MHIST_aak.png"]
    assert train.paths[0] == root / "mhist" / "images" / "MHIST_aaa.png"
    assert spec.read_image(test, 1).size == (224, 224)
    with pytest.raises(EvalkitError, match="'val'"):
        spec.list_split(root, "val")


def test_mhist_reads_three_columns_and_a_csv_resaved_by_a_spreadsheet(tmp_path):
    """Only Image Name, Majority Vote Label and Partition are read; a re-saved file with a UTF-8
    byte-order mark and a space after each comma lists the same samples."""
    expected = build_mhist(tmp_path, ["Image Name", "Majority Vote Label", "Partition"])
    listing = MHIST(allow_subset=True).list_split(tmp_path, "train")
    assert listing.ids == expected.ids("train") and listing.labels.tolist() == expected.labels("train")
    annotations = tmp_path / "mhist" / "annotations.csv"
    annotations.write_text("\ufeff" + annotations.read_text().replace(",", ", "), encoding="utf-8")
    resaved = MHIST(allow_subset=True).list_split(tmp_path, "train")
    assert resaved.ids == listing.ids and resaved.labels.tolist() == listing.labels.tolist()


def test_pcam_lists_the_official_files(layouts):
    root, expected = layouts
    spec = PatchCamelyon(allow_subset=True)
    assert spec.classes == ["no_tumor", "tumor"]
    for split in ("train", "val", "test"):
        listing = spec.list_split(root, split)
        assert listing.ids == expected["pcam"].ids(split)
        assert listing.labels.dtype == np.int64 and listing.labels.tolist() == PCAM_LABELS[split]
        assert set(listing.paths) == {pcam_file(root, split, "x")}
        patches = pcam_patches(split)
        for index in range(len(listing)):
            image = spec.read_image(listing, index)
            assert image.mode == "RGB" and image.size == (96, 96)
            assert np.array_equal(np.asarray(image), patches[index])
    val = spec.list_split(root, "val")
    assert val.ids[0] == "camelyonpatch_level_2_split_valid_x/0"  # "val" reads the "valid" files
    assert spec.count_rows(val, "val") == [("no_tumor", 2, None), ("tumor", 2, None), ("(all)", 4, 32_768)]


def test_pcam_reads_one_patch_lazily(layouts, monkeypatch):
    """Listing reads the shape and y, never x; reading a patch asks HDF5 for that one index only."""
    root, _ = layouts
    spec = PatchCamelyon(allow_subset=True)
    calls: list[tuple[str, object]] = []
    original = h5py.Dataset.__getitem__

    def spy(self, key, *args, **kwargs):
        calls.append((self.name, key))
        return original(self, key, *args, **kwargs)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    listing = spec.list_split(root, "train")
    assert [name for name, _ in calls] == ["/y"]
    calls.clear()
    image = spec.read_image(listing, 5)
    assert calls == [("/x", 5)]
    assert np.array_equal(np.asarray(image), pcam_patches("train")[5])
    calls.clear()
    spec.read_image(listing, 2)
    assert calls == [("/x", 2)]


def test_consep_lists_images_and_reads_merged_masks(layouts):
    root, expected = layouts
    spec = CoNSeP(allow_subset=True)
    assert spec.classes == ["background", "other", "inflammatory", "epithelial", "spindle-shaped"]
    assert spec.evaluations == ("segmentation",)
    train, test = spec.list_split(root, "train"), spec.list_split(root, "test")
    assert train.ids == ["Train/Images/train_1.png", "Train/Images/train_2.png", "Train/Images/train_10.png"]
    assert test.ids == ["Test/Images/test_1.png", "Test/Images/test_2.png"]
    assert train.labels.tolist() == [-1, -1, -1] and test.labels.tolist() == [-1, -1]
    assert spec.count_rows(train, "train") == [("images", 3, 27)]
    reference = np.vectorize(TYPE_TO_CLASS_REFERENCE.get)
    for listing in (train, test):
        for index, sample_id in enumerate(listing.ids):
            type_map = expected["consep"].extra["type_maps"][sample_id]
            assert set(np.unique(type_map)) == set(range(8))  # every type is drawn
            mask = spec.read_mask(listing, index)
            assert mask.dtype == np.int64 and mask.shape == type_map.shape == (224, 224)
            assert np.array_equal(mask, reference(type_map))
            assert set(np.unique(mask)) == {0, 1, 2, 3, 4}
            image = spec.read_image(listing, index)  # train_1/test_1 are RGBA PNGs
            assert image.mode == "RGB" and image.size == (224, 224)
    assert spec.mask_path(train, 2) == root / "consep" / "Train" / "Labels" / "train_10.mat"


def test_consep_merge_types():
    assert merge_types(np.arange(8)).tolist() == [0, 1, 2, 3, 3, 4, 4, 4]
    assert merge_types(np.array([[7, 0], [4, 2]], dtype=np.uint8)).tolist() == [[4, 0], [3, 2]]
    assert merge_types(np.array([[5.0, 3.0]])).dtype == np.int64  # .mat files may hold doubles
    for bad in (np.array([8]), np.array([-1])):
        with pytest.raises(ValueError):
            merge_types(bad)


def test_consep_bad_label_file_is_named(tmp_path):
    from scipy.io import savemat

    BUILDERS["consep"](tmp_path)
    labels = tmp_path / "consep" / "Train" / "Labels"
    savemat(labels / "train_2.mat", {"inst_map": np.zeros((4, 4)), "type_map": np.full((4, 4), 9)})
    savemat(labels / "train_10.mat", {"inst_map": np.zeros((4, 4))})  # no type_map
    truncate(tmp_path / "consep" / "Train" / "Labels" / "train_1.mat")
    spec = CoNSeP(allow_subset=True)
    listing = spec.list_split(tmp_path, "train")
    for index, stem in enumerate(["train_1", "train_2", "train_10"]):
        with pytest.raises(EvalkitError, match=re.escape(str(labels / f"{stem}.mat"))):
            spec.read_mask(listing, index)


# ---- 2. official counts ----------------------------------------------------------------------------------

def test_official_counts_are_the_published_ones():
    for task in ("bach", "crc", "mhist"):
        assert SPECS[task].official_counts == OFFICIAL[task]
        for split, counts in OFFICIAL[task].items():
            assert sum(counts.values()) == OFFICIAL_TOTALS[task][split]
    assert PatchCamelyon.official_totals == OFFICIAL_TOTALS["pcam"]
    assert CoNSeP.official_images == OFFICIAL_TOTALS["consep"]


# What the refusal of the fixture's first split must say: the counts found and the official ones.
REFUSALS = {"bach": [r"Benign 2/52", r"InSitu 2/70", r"Invasive 1/69"], "crc": [r"ADI 2/10407", r"BACK 2/10566"],
            "mhist": [r"SSA 3/630", r"HP 4/1545"], "pcam": [r"\b8\b.*\b262144\b"], "consep": [r"\b3\b.*\b27\b"]}


def test_every_published_dataset_has_its_reference_numbers():
    """A newly registered dataset with official counts is parametrised into this module: it needs its numbers."""
    tables = {"BUILDERS (tests/data/fixtures.py)": BUILDERS, "CLASSES": CLASSES, "SPLITS": SPLITS,
              "OFFICIAL_TOTALS": OFFICIAL_TOTALS, "REFUSALS": REFUSALS}
    for table, entries in tables.items():
        missing = sorted(set(SPECS) - set(entries))
        assert not missing, f"add the published dataset(s) {missing} to {table}"


def _patch_official(monkeypatch, task: str, expected: Expected) -> None:
    """Make the fixture's counts the official ones."""
    cls = SPECS[task]
    if task == "pcam":
        monkeypatch.setattr(cls, "official_totals", {s: len(v) for s, v in expected.splits.items()})
    elif task == "consep":
        monkeypatch.setattr(cls, "official_images", {s: len(v) for s, v in expected.splits.items()})
    else:
        monkeypatch.setattr(cls, "official_counts", {
            s: dict(zip(CLASSES[task], expected.counts(s, len(CLASSES[task])))) for s in expected.splits})


@pytest.mark.parametrize("task", list(SPECS))
def test_a_subset_is_refused_unless_allowed(layouts, monkeypatch, task):
    root, expected = layouts
    split = SPLITS[task][0]
    with pytest.raises(EvalkitError) as info:
        _spec(task).list_split(root, split)
    message = str(info.value)
    assert "\n" not in message and "allow_subset" in message
    for pattern in REFUSALS[task]:
        assert re.search(pattern, message), message
    for split in SPLITS[task]:
        assert _spec(task, allow_subset=True).list_split(root, split).ids == expected[task].ids(split)
    # The same files pass without allow_subset once they are the official counts ...
    _patch_official(monkeypatch, task, expected[task])
    for split in SPLITS[task]:
        assert _spec(task).list_split(root, split).ids == expected[task].ids(split)


@pytest.mark.parametrize("task", ["bach", "crc", "mhist"])
def test_one_class_count_off_is_refused_naming_it(layouts, monkeypatch, task):
    """... and not when a single class differs, even with the same total."""
    root, expected = layouts
    _patch_official(monkeypatch, task, expected[task])
    counts = SPECS[task].official_counts
    first, second = CLASSES[task][:2]
    split = SPLITS[task][0]
    changed = {**counts, split: {**counts[split], first: counts[split][first] + 1, second: counts[split][second] - 1}}
    monkeypatch.setattr(SPECS[task], "official_counts", changed)
    with pytest.raises(EvalkitError) as info:
        _spec(task).list_split(root, split)
    found = expected[task].counts(split, len(CLASSES[task]))
    assert f"{first} {found[0]}/{found[0] + 1}" in str(info.value)
    assert f"{second} {found[1]}/{found[1] - 1}" in str(info.value)
    shown = str(info.value).split("found/official")[1]
    assert all(f"{name} " not in shown for name in CLASSES[task][2:]), shown


@pytest.mark.parametrize("task", list(SPECS))
def test_listing_without_the_count_check_returns_a_subset(layouts, task):
    """``list_split(check_counts=False)`` (what ``evalkit data check`` uses to show the counts) lists any subset.

    PatchCamelyon and CoNSeP check their totals inside ``_list``, so they refuse here.
    """
    root, expected = layouts
    for split in SPLITS[task]:
        assert _spec(task).list_split(root, split, check_counts=False).ids == expected[task].ids(split)


# ---- 3. missing pieces -----------------------------------------------------------------------------------

def _rm(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


BACH_PHOTOS = Path("bach/ICIAR2018_BACH_Challenge/Photos")
PCAM = Path("patch_camelyon")
# name -> (task, split listed, what is removed (relative to the data root), what the message must name, extra text)
MISSING = {
    "bach_class_folder": ("bach", "train", BACH_PHOTOS / "InSitu", BACH_PHOTOS / "InSitu", None),
    "bach_photos_folder": ("bach", "val", BACH_PHOTOS.parent, BACH_PHOTOS / "Benign", "ICIAR2018_BACH_Challenge.zip"),
    "crc_val_class_folder": ("crc", "val", Path("crc/CRC-VAL-HE-7K/MUS"), Path("crc/CRC-VAL-HE-7K/MUS"), None),
    "crc_train_folder": ("crc", "train", Path("crc/NCT-CRC-HE-100K"), Path("crc/NCT-CRC-HE-100K"), None),
    "mhist_annotations": ("mhist", "train", Path("mhist/annotations.csv"), Path("mhist/annotations.csv"), None),
    "mhist_images_folder": ("mhist", "test", Path("mhist/images"), Path("mhist/images"), None),
    "mhist_listed_image": ("mhist", "test", Path("mhist/images/MHIST_aaj.png"), Path("mhist/images/MHIST_aaj.png"),
                           "annotations.csv"),
    "pcam_valid_y": ("pcam", "val", PCAM / "camelyonpatch_level_2_split_valid_y.h5",
                     PCAM / "camelyonpatch_level_2_split_valid_y.h5", None),
    "pcam_test_x": ("pcam", "test", PCAM / "camelyonpatch_level_2_split_test_x.h5",
                    PCAM / "camelyonpatch_level_2_split_test_x.h5", None),
    "consep_label": ("consep", "train", Path("consep/Train/Labels/train_2.mat"), Path("consep/Train/Labels/train_2.mat"),
                     "train_2.png"),
    "consep_test_images": ("consep", "test", Path("consep/Test/Images"), Path("consep/Test/Images"), None),
}


@pytest.mark.parametrize("name", list(MISSING))
def test_a_missing_piece_is_one_error_naming_it(tmp_path, name):
    task, split, removed, named, extra = MISSING[name]
    BUILDERS[task](tmp_path)
    _rm(tmp_path / removed)
    with pytest.raises(EvalkitError) as info:
        _spec(task, allow_subset=True).list_split(tmp_path, split)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / named) in message, message
    assert extra is None or extra in message, message
    assert "gunzip" not in message


def test_pcam_gzipped_file_gets_the_gunzip_hint(tmp_path):
    BUILDERS["pcam"](tmp_path)
    gz = gzip_file(pcam_file(tmp_path, "val", "y"))
    with pytest.raises(EvalkitError) as info:
        PatchCamelyon(allow_subset=True).list_split(tmp_path, "val")
    message = str(info.value)
    assert str(pcam_file(tmp_path, "val", "y")) in message and gz.name in message and "gunzip" in message
    assert PatchCamelyon(allow_subset=True).list_split(tmp_path, "train")  # the other splits are whole


@pytest.mark.parametrize("task", list(SPECS))
def test_a_missing_dataset_folder_names_it(tmp_path, task):
    with pytest.raises(EvalkitError) as info:
        _spec(task, allow_subset=True).list_split(tmp_path, SPLITS[task][0])
    assert str(tmp_path / _spec(task).root) in str(info.value) and "--data_root" in str(info.value)


def test_data_check_in_process_finds_an_unreadable_label(tmp_path):
    """``check_task`` decodes the CoNSeP label maps too, and names a truncated one."""
    BUILDERS["consep"](tmp_path)
    truncate(tmp_path / "consep" / "Test" / "Labels" / "test_1.mat")
    task = load_task(TASKS / "consep.yaml", *SUBSET)
    lines: list[str] = []
    counts, unreadable = check_task(task, tmp_path, log=lines.append)
    assert counts == []  # the subset is allowed
    assert len(unreadable) == 1 and unreadable[0].startswith("test: ") and "test_1." in unreadable[0], unreadable
    assert any(line.startswith("  unreadable: 1 of 2") for line in lines), lines
    assert any("test_1." in line for line in lines if "unreadable" in line or "cannot read" in line), lines


# ---- 5.-8. the command line ------------------------------------------------------------------------------
# Every command line of this module runs once (fixture ``evalkit``): those in SUBPROCESS as the real
# `python -m evalkit`, in subprocesses started together (fixture ``outcomes``), one `data check` of each kind (one
# that passes, one refused for its counts, one naming a corrupt file); the others, predict_fit included (its
# subprocess runs are in test_end_to_end.py), call the same entry point, `evalkit.cli.main`, in-process, sparing
# the ~4 s of imports each subprocess pays.
SUBPROCESS = ("check_bach", "check_strict_pcam", "check_corrupt_consep")
# task -> (file damaged, relative to the data root; what the error must name)
CORRUPT = {
    "bach": ("bach/ICIAR2018_BACH_Challenge/Photos/Invasive/iv073.tif", "Invasive/iv073.tif"),
    "crc": ("crc/NCT-CRC-HE-100K/LYM/LYM-AATTSRNN.tif", "NCT-CRC-HE-100K/LYM/LYM-AATTSRNN.tif"),
    "mhist": ("mhist/images/MHIST_aae.png", "images/MHIST_aae.png"),
    "pcam": ("patch_camelyon/camelyonpatch_level_2_split_test_x.h5", "camelyonpatch_level_2_split_test_x.h5"),
    "consep": ("consep/Test/Images/test_2.png", "Test/Images/test_2.png"),
}
SKIPPED_CRC = "NCT-CRC-HE-100K/DEB/DEB-TCGA-AHQCDGMY.tif"  # a training tile, truncated


def _check(task: str, data_root: Path, *extra: str) -> list[str]:
    return ["data", "check", "--config", str(TASKS / f"{task}.yaml"), "--data_root", str(data_root), *extra]


def _predict_fit(task: str, data_root: Path, folder: Path, model: Path, *extra: str) -> list[str]:
    return ["predict_fit", "--config", str(TASKS / f"{task}.yaml"), "--config", str(model),
            "--data_root", str(data_root), "--embeddings_root", str(folder / "emb"), "--results_root",
            str(folder / "res"), *SUBSET, *(() if task == "consep" else ("--head.n_runs", "2", "--head.max_steps", "50")),
            "--embed.num_workers", "0", *extra]


@pytest.fixture(scope="module")
def cli_data(layouts, tmp_path_factory) -> dict:
    """The data roots and the argv of every command line of this module."""
    root, expected = layouts
    base = tmp_path_factory.mktemp("cli")
    model = model_yaml(base / "resnet18.yaml", "evalkit.models.TimmModel", model_name="resnet18", pretrained=False,
                       seed=0, preprocessing={"input_size": 64})
    argv: dict[str, list[str]] = {}
    for task in ("bach", "crc", "mhist", "pcam"):
        argv[f"fit_{task}"] = _predict_fit(task, root, base / f"fit_{task}", model)
    unreadable = base / "unreadable_data"
    build_crc(unreadable)
    truncate(unreadable / "crc" / SKIPPED_CRC, keep=400)
    argv["fit_crc_skip_unreadable"] = _predict_fit("crc", unreadable, base / "fit_crc_skip_unreadable", model,
                                                   "--embed.skip_unreadable", "true")
    argv["fit_crc_unreadable"] = _predict_fit("crc", unreadable, base / "fit_crc_unreadable", model)
    argv["fit_consep"] = _predict_fit("consep", root, base / "fit_consep", model, "--seg.n_runs", "1",
                                      "--seg.max_steps", "3", "--seg.crops_per_image", "2", "--seg.batch_size", "2",
                                      "--seg.overlays", "1")
    for task in SPECS:
        argv[f"check_{task}"] = _check(task, root, *SUBSET)
        argv[f"check_strict_{task}"] = _check(task, root)
        corrupt = base / f"corrupt_data_{task}"
        BUILDERS[task](corrupt)
        truncate(corrupt / CORRUPT[task][0])
        argv[f"check_corrupt_{task}"] = _check(task, corrupt, *SUBSET)
    missing = base / "missing_data_pcam"
    BUILDERS["pcam"](missing)
    gzip_file(pcam_file(missing, "test", "y"))
    argv["check_missing_pcam"] = _check("pcam", missing, *SUBSET)
    return {"root": root, "expected": expected, "base": base, "model": model, "unreadable": unreadable, "argv": argv}


@pytest.fixture(scope="module")
def outcomes(cli_data) -> dict[str, Outcome]:
    """The subprocess runs, all at once."""
    done = run_many({name: cli_data["argv"][name] for name in SUBPROCESS}, cli_data["base"], max_parallel=3)
    print("subprocess seconds:", ", ".join(f"{name} {o.seconds:.1f}" for name, o in done.items()))  # shown with -s
    return dict(done)


@pytest.fixture(scope="module")
def evalkit(cli_data, outcomes):
    """``evalkit(name)``: the subprocess outcome where one ran, else ``evalkit.cli.main`` in-process, once, in
    the case's own folder as the subprocesses run."""

    def run(name: str) -> Outcome:
        if name not in outcomes:
            folder = cli_data["base"] / name
            folder.mkdir(exist_ok=True)
            proc = run_in_process(*cli_data["argv"][name], cwd=folder)
            outcomes[name] = Outcome(proc.returncode, proc.stdout, proc.stderr, folder)
        return outcomes[name]

    return run


def _assert_clean_failure(outcome: Outcome, *names: str) -> str:
    """Non-zero exit, one `evalkit: error:` line (the last), naming each of ``names``, no traceback."""
    assert outcome.returncode not in (0, None), outcome.stdout + outcome.stderr
    assert "Traceback" not in outcome.stderr and "Traceback" not in outcome.stdout, outcome.stderr
    assert len(outcome.error_lines) == 1, outcome.stderr
    assert outcome.stderr.strip().splitlines()[-1] == outcome.error_lines[0]
    for name in names:
        assert name in outcome.error_lines[0], outcome.error_lines[0]
    return outcome.error_lines[0]


def _table_rows(task: str, expected: Expected, split: str) -> list[tuple[str, int, str]]:
    """The rows `evalkit data check` must print for ``split``: name, found, official."""
    if task == "consep":
        return [("images", len(expected.splits[split]), str(OFFICIAL_TOTALS[task][split]))]
    found = expected.counts(split, len(CLASSES[task]))
    official = OFFICIAL.get(task, {}).get(split, {})
    rows = [(name, found[i], str(official.get(name, "-"))) for i, name in enumerate(CLASSES[task])]
    if task == "pcam":
        rows.append(("(all)", len(expected.splits[split]), str(OFFICIAL_TOTALS[task][split])))
    return rows


@pytest.mark.parametrize("task", list(SPECS))
def test_cli_data_check_prints_found_and_official_counts(cli_data, evalkit, task):
    outcome = evalkit(f"check_{task}")
    assert outcome.returncode == 0, outcome.stderr
    assert "Traceback" not in outcome.stderr and not outcome.error_lines
    lines = outcome.stdout.splitlines()
    expected = cli_data["expected"][task]
    folder = cli_data["root"] / expected.folder
    assert lines[-1] == "ok"
    for split in SPLITS[task]:
        n = len(expected.splits[split])
        start = lines.index(f"{task} / {split}: {n} samples under {folder}")
        assert re.fullmatch(r"\s+class\s+found\s+official", lines[start + 1])
        rows = _table_rows(task, expected, split)
        for offset, (name, found, official) in enumerate(rows, start=2):
            line = lines[start + offset]
            marker = "" if official in ("-", str(found)) else r"  differs \(subset allowed\)"
            assert re.fullmatch(rf"  {re.escape(name)}\s+{found}\s+{official}{marker}", line), line
        assert lines[start + 2 + len(rows)] == f"  unreadable: 0 of {n}"


@pytest.mark.parametrize("task", list(SPECS))
def test_cli_data_check_without_allow_subset_fails_in_one_line(evalkit, task):
    _assert_clean_failure(evalkit(f"check_strict_{task}"), "allow_subset", "official")


@pytest.mark.parametrize("task", list(SPECS))
def test_cli_data_check_without_allow_subset_still_shows_the_counts(cli_data, evalkit, task):
    """The refusal comes after the table of every split (DESIGN: differing counts are reported)."""
    outcome, expected = evalkit(f"check_strict_{task}"), cli_data["expected"][task]
    for split in SPLITS[task]:
        assert f"{task} / {split}: {len(expected.splits[split])} samples under" in outcome.stdout, outcome.stderr
        for name, found, official in _table_rows(task, expected, split):
            marker = "" if official in ("-", str(found)) else "  differs"
            assert re.search(rf"^  {re.escape(name)}\s+{found}\s+{official}{marker}$", outcome.stdout, re.M)


@pytest.mark.parametrize("task", list(SPECS))
def test_cli_data_check_names_a_corrupt_file(evalkit, task):
    outcome = evalkit(f"check_corrupt_{task}")
    error = _assert_clean_failure(outcome, CORRUPT[task][1])
    assert "allow_subset" not in error  # not a count problem
    if task != "pcam":  # PCam: the truncated HDF5 file cannot be opened at all, before any table
        assert re.search(r"^  unreadable: 1 of \d+", outcome.stdout, re.M), outcome.stdout
        assert CORRUPT[task][1] in outcome.stdout.split("unreadable: 1 of")[1]


def test_cli_data_check_gzipped_pcam_file(evalkit):
    _assert_clean_failure(evalkit("check_missing_pcam"), "camelyonpatch_level_2_split_test_y.h5", "gunzip",
                          "camelyonpatch_level_2_split_test_y.h5.gz")


def test_cli_unreadable_file_is_not_called_a_subset_problem(tmp_path):
    """The allow_subset hint is for count problems only, wherever the data lives (here: under 'official_release')."""
    data_root = tmp_path / "official_release"
    BUILDERS["mhist"](data_root)
    truncate(data_root / CORRUPT["mhist"][0])
    proc = run_in_process(*_check("mhist", data_root, *SUBSET), cwd=tmp_path)
    error = _assert_clean_failure(Outcome(proc.returncode, proc.stdout, proc.stderr, tmp_path), CORRUPT["mhist"][1])
    assert "allow_subset" not in error


def _caches(folder: Path, task: str) -> dict[str, Path]:
    files = sorted((folder / "emb" / task / "resnet18-random").glob("*.h5"))
    by_split = {f.name.split("-")[0]: f for f in files}
    assert len(by_split) == len(files), files
    return by_split


def _results(folder: Path, task: str) -> dict:
    [path] = list((folder / "res" / task / "resnet18-random").glob("*/results.json"))
    return json.loads(path.read_text())


@pytest.mark.parametrize("task", ["bach", "crc", "mhist", "pcam"])
def test_cli_predict_fit_on_the_official_layout(cli_data, evalkit, task):
    outcome, expected = evalkit(f"fit_{task}"), cli_data["expected"][task]
    assert outcome.returncode == 0, outcome.stderr
    assert "Traceback" not in outcome.stderr and not outcome.error_lines
    caches = _caches(outcome.folder, task)
    assert sorted(caches) == sorted(SPLITS[task])
    for split, path in caches.items():
        data = read_h5(path)
        n = len(expected.splits[split])
        assert data["embeddings"].shape == (n, 512) and np.isfinite(data["embeddings"]).all()
        assert data["ids"] == expected.ids(split)
        assert data["labels"].tolist() == expected.labels(split)
        assert json.loads(data["attrs"]["classes"]) == CLASSES[task]
        assert data["attrs"]["split"] == split and data["attrs"]["dataset"] == task
        assert json.loads(data["attrs"]["skipped_ids"]) == []
    results = _results(outcome.folder, task)
    assert results["task"] == task and results["model"] == "resnet18-random"
    assert results["num_classes"] == len(CLASSES[task]) and results["n_runs"] == 2
    assert set(results["metrics"]) == EVAL_SPLITS[task]
    for metrics in results["metrics"].values():
        assert len(metrics["balanced_accuracy"]["runs"]) == 2
    assert set(results["provenance"]["cache_files"]) == set(SPLITS[task])
    assert results["provenance"]["skipped_unreadable"] == {split: [] for split in SPLITS[task]}


def test_cli_predict_fit_on_consep_trains_the_decoder_on_cached_crops(evalkit):
    outcome = evalkit("fit_consep")
    assert outcome.returncode == 0, outcome.stderr
    caches = sorted(p.name.split("-")[:2] for p in outcome.folder.rglob("*.h5") if p.name != "predictions.h5")
    assert caches == [["test", "grid"], ["train", "crop_pool"]]
    [path] = outcome.folder.rglob("results.json")
    results = json.loads(path.read_text())
    assert (results["evaluation"], results["protocol"]) == ("segmentation", "mask2former")
    assert {"dice", "miou", "dice_epithelial"} <= set(results["metrics"]["test"])
    assert results["metric_info"]["dice_epithelial"]["higher_is_better"] is True
    # DESIGN.md's provenance: the cache keys name the files the decoder was trained and scored on
    assert sorted(results["provenance"]["cache_keys"]) == sorted(
        p.stem for p in (outcome.folder / "emb").rglob("*.h5"))
    assert (path.parent / "overlay_test_test_1.png").is_file() and (path.parent / "training_curve_test.png").is_file()


def test_cli_skip_unreadable_leaves_the_file_out_and_records_it(cli_data, evalkit):
    outcome, expected = evalkit("fit_crc_skip_unreadable"), cli_data["expected"]["crc"]
    assert outcome.returncode == 0, outcome.stderr
    assert "Traceback" not in outcome.stderr
    assert f"left out 1 unreadable image(s), first: {SKIPPED_CRC}" in outcome.stderr
    caches = _caches(outcome.folder, "crc")
    train, val = read_h5(caches["train"]), read_h5(caches["val"])
    kept = [(i, label) for i, label in expected.splits["train"] if i != SKIPPED_CRC]
    assert len(kept) == len(expected.splits["train"]) - 1
    assert train["embeddings"].shape[0] == len(kept)
    assert train["ids"] == [i for i, _ in kept] and train["labels"].tolist() == [label for _, label in kept]
    assert json.loads(train["attrs"]["skipped_ids"]) == [SKIPPED_CRC]
    assert val["ids"] == expected.ids("val") and json.loads(val["attrs"]["skipped_ids"]) == []
    results = _results(outcome.folder, "crc")
    assert results["provenance"]["skipped_unreadable"] == {"train": [SKIPPED_CRC], "val": []}


def test_cli_unreadable_image_without_skip_fails_naming_it(cli_data, evalkit):
    outcome = evalkit("fit_crc_unreadable")
    _assert_clean_failure(outcome, str(cli_data["unreadable"] / "crc" / SKIPPED_CRC))
    assert not list(outcome.folder.rglob("*.h5")), "a failed run left a cache file"
