"""BACH (ICIAR 2018 grand challenge), microscopy photos, with eva's patient-level split."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import numpy as np

from evalkit.data.base import DatasetSpec, SplitListing
from evalkit.data.registry import DATASETS
from evalkit.errors import EvalkitError

CLASSES = ["Benign", "InSitu", "Invasive", "Normal"]


def bach_split() -> dict[str, str]:
    """Photo path (``<Class>/<file>.tif``) -> ``train`` or ``val``, from ``splits/bach.csv``."""
    text = resources.files("evalkit.data").joinpath("splits/bach.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {row["path"]: row["split"] for row in rows}


@DATASETS.register("bach")
class BACH(DatasetSpec):
    """``ICIAR2018_BACH_Challenge/Photos/{Benign,InSitu,Invasive,Normal}/*.tif`` (2048×1536).

    The 400 photos are split by patient as eva does (268 train / 132 val); the list is
    fixed in ``evalkit/data/splits/bach.csv`` with its source. The photos are resized by
    the model's transform (eva: shorter side to 224, centre crop 224).

    Args:
        root: the folder that holds ``ICIAR2018_BACH_Challenge``, under ``data_root``.
        allow_subset: accept a subset of the photos (tests, quick runs).
    """

    class_names = CLASSES
    official_counts = {
        "train": {"Benign": 52, "InSitu": 70, "Invasive": 69, "Normal": 77},
        "val": {"Benign": 48, "InSitu": 30, "Invasive": 31, "Normal": 23},
    }

    def __init__(self, root: str = "bach", allow_subset: bool = False) -> None:
        super().__init__(root, allow_subset)

    def _list(self, data_root: str | Path, split: str) -> SplitListing:
        if split not in self.official_counts:
            raise EvalkitError(f"BACH has the splits train and val, not '{split}'")
        photos = self.resolve_root(data_root) / "ICIAR2018_BACH_Challenge" / "Photos"
        for name in CLASSES:
            if not (photos / name).is_dir():
                raise EvalkitError(f"BACH folder missing: {photos / name}; expected the unzipped ICIAR2018_BACH_Challenge.zip")
        assignment = bach_split()
        ids, labels, paths = [], [], []
        for index, name in enumerate(CLASSES):
            for path in sorted(p for p in (photos / name).iterdir() if p.suffix.lower() == ".tif"):
                sample_id = f"{name}/{path.name}"
                if sample_id not in assignment:
                    raise EvalkitError(f"{path} is not one of the 400 BACH photos; remove it or check the data")
                if assignment[sample_id] == split:
                    ids.append(sample_id)
                    labels.append(index)
                    paths.append(path)
        return SplitListing(ids, np.asarray(labels, dtype=np.int64), paths)
