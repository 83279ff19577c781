"""MHIST: colorectal polyps, HP vs SSA, with the official train/test partition."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from evalkit.data.base import DatasetSpec, SplitListing
from evalkit.data.registry import DATASETS
from evalkit.errors import EvalkitError

CLASSES = ["SSA", "HP"]  # eva's order (SSA = 0, HP = 1)
_COLUMNS = ("Image Name", "Majority Vote Label", "Partition")


@DATASETS.register("mhist")
class MHIST(DatasetSpec):
    """``images/*.png`` + ``annotations.csv`` (Image Name, Majority Vote Label, Partition).

    3,152 tiles of 224×224 px: 2,175 train (1,545 HP, 630 SSA) and 977 test (617 HP,
    360 SSA), as released (Wei et al., "A Petri Dish for Histopathology Image Analysis",
    AIME 2021). eva validates on ``test``, there being no other held-out split.

    Args:
        root: the MHIST folder, under ``data_root``.
        allow_subset: accept a subset of the tiles (tests, quick runs).
    """

    class_names = CLASSES
    official_counts = {"train": {"SSA": 630, "HP": 1545}, "test": {"SSA": 360, "HP": 617}}

    def __init__(self, root: str = "mhist", allow_subset: bool = False) -> None:
        super().__init__(root, allow_subset)

    def _list(self, data_root: str | Path, split: str) -> SplitListing:
        if split not in self.official_counts:
            raise EvalkitError(f"MHIST has the splits train and test, not '{split}'")
        root = self.resolve_root(data_root)
        annotations, images = root / "annotations.csv", root / "images"
        for path in (annotations, images):
            if not path.exists():
                raise EvalkitError(f"MHIST file missing: {path}; expected images/*.png and annotations.csv")
        with open(annotations, newline="", encoding="utf-8-sig") as fh:  # as released, or re-saved by a spreadsheet
            rows = list(csv.DictReader(fh, skipinitialspace=True))
        absent = [c for c in _COLUMNS if rows and c not in rows[0]]
        if not rows or absent:
            raise EvalkitError(f"{annotations} lacks the columns {absent or list(_COLUMNS)}")
        ids, labels, paths = [], [], []
        for row in rows:
            if row["Partition"] != split:
                continue
            if row["Majority Vote Label"] not in CLASSES:
                raise EvalkitError(f"{annotations}: label '{row['Majority Vote Label']}' of {row['Image Name']} is not HP or SSA")
            path = images / row["Image Name"]
            if not path.is_file():
                raise EvalkitError(f"MHIST image missing: {path} (listed in annotations.csv)")
            ids.append(f"images/{row['Image Name']}")
            labels.append(CLASSES.index(row["Majority Vote Label"]))
            paths.append(path)
        return SplitListing(ids, np.asarray(labels, dtype=np.int64), paths)
