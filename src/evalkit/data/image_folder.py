"""Generic image classification: a folder per class, or a CSV of path, label, split."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from evalkit.data.base import IMAGE_EXTENSIONS, DatasetSpec, SplitListing
from evalkit.data.registry import DATASETS
from evalkit.errors import EvalkitError


def _class_index(classes: list[str], label: str, where: str) -> int:
    try:
        return classes.index(label)
    except ValueError:
        raise EvalkitError(f"{where}: label '{label}' is not one of the task's classes {classes}") from None


@DATASETS.register("image_folder")
class ImageFolder(DatasetSpec):
    """``root/<split folder>/<CLASS>/*.png|tif|jpg``: one folder of class folders per split.

    Args:
        root: the dataset folder, relative to ``data_root`` unless absolute.
        splits: split name -> folder under ``root`` (e.g. ``{train: NCT-CRC-HE-100K, val: CRC-VAL-HE-7K}``).
        classes: class names in label order; default: the sorted class folders of the first split.
        allow_subset: accept class counts that differ from ``official_counts`` (subclasses that have them).
    """

    def __init__(self, root: str, splits: dict[str, str] | None = None, classes: list[str] | None = None,
                 allow_subset: bool = False) -> None:
        super().__init__(root, allow_subset)
        self.splits = dict(splits or {"train": "train", "val": "val"})
        self.declared_classes = list(classes) if classes else None
        self._classes = self.declared_classes  # filled from the folders when not declared

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            raise EvalkitError("ImageFolder classes are unknown before the data is listed; list them in the task config")
        return self._classes

    def declared_splits(self) -> list[str]:
        return list(self.splits)

    def config(self) -> dict:
        return {"class": type(self).__name__, "root": self.root, "splits": self.splits,
                "classes": self.declared_classes}

    def _list(self, data_root: str | Path, split: str) -> SplitListing:
        root = self.resolve_root(data_root)
        if split not in self.splits:
            raise EvalkitError(f"dataset {root} has no split '{split}'; its splits: {', '.join(self.splits)}")
        folder = root / self.splits[split]
        if not folder.is_dir():
            raise EvalkitError(f"split folder not found: {folder}; expected {root}/<split folder>/<CLASS>/images")
        if self._classes is None:
            first = root / next(iter(self.splits.values()))
            self._classes = sorted(p.name for p in first.iterdir() if p.is_dir()) if first.is_dir() else []
        unknown = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in self._classes)
        if unknown:
            raise EvalkitError(f"{folder} has class folders {unknown} that are not in the task's classes {self._classes}")
        ids, labels, paths = [], [], []
        for index, name in enumerate(self._classes):
            class_dir = folder / name
            if not class_dir.is_dir():
                continue
            for path in sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
                ids.append(str(path.relative_to(root)))
                labels.append(index)
                paths.append(path)
        if not ids:
            raise EvalkitError(f"no images found in {folder}; expected {folder}/<CLASS>/*.png|tif|jpg")
        return SplitListing(ids, np.asarray(labels, dtype=np.int64), paths)


@DATASETS.register("image_csv")
class ImageCSV(DatasetSpec):
    """Images listed in a CSV with columns ``path,label,split`` (paths relative to ``root``).

    Args:
        root: the dataset folder, relative to ``data_root`` unless absolute.
        csv_file: the CSV file, relative to ``root``.
        classes: class names in label order; default: the sorted distinct labels.
        allow_subset: accepted so that the same override works on every task; a CSV task has
            no official counts to check, so any subset is used as listed.
    """

    def __init__(self, root: str, csv_file: str = "split.csv", classes: list[str] | None = None,
                 allow_subset: bool = True) -> None:
        super().__init__(root, allow_subset)
        self.csv_file = csv_file
        self.declared_classes = list(classes) if classes else None
        self._classes = self.declared_classes  # filled from the CSV when not declared

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            raise EvalkitError("ImageCSV classes are unknown before the CSV is read; list them in the task config")
        return self._classes

    def config(self) -> dict:
        return {"class": "ImageCSV", "root": self.root, "csv_file": self.csv_file, "classes": self.declared_classes}

    def _rows(self, root: Path) -> list[dict[str, str]]:
        file = root / self.csv_file
        if not file.is_file():
            raise EvalkitError(f"split file not found: {file}; expected a CSV with columns path,label,split")
        with open(file, newline="") as fh:
            rows = list(csv.DictReader(fh))
        missing = {"path", "label", "split"} - set(rows[0] if rows else {})
        if missing:
            raise EvalkitError(f"{file} lacks columns {sorted(missing)}; expected path,label,split")
        return rows

    def _list(self, data_root: str | Path, split: str) -> SplitListing:
        root = self.resolve_root(data_root)
        rows = self._rows(root)
        if self._classes is None:
            self._classes = sorted({r["label"] for r in rows})
        chosen = [r for r in rows if r["split"] == split]
        if not chosen:
            raise EvalkitError(f"{root / self.csv_file} has no rows of split '{split}'")
        paths = [root / r["path"] for r in chosen]
        absent = [p for p in paths if not p.is_file()]
        if absent:
            raise EvalkitError(f"{len(absent)} image(s) listed in {self.csv_file} are missing, first: {absent[0]}")
        labels = [_class_index(self._classes, r["label"], str(root / self.csv_file)) for r in chosen]
        return SplitListing([r["path"] for r in chosen], np.asarray(labels, dtype=np.int64), paths)
