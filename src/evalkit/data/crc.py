"""CRC: NCT-CRC-HE-100K (train) and CRC-VAL-HE-7K (val), 9 tissue classes."""

from __future__ import annotations

from pathlib import Path

from evalkit.data.base import SplitListing
from evalkit.data.image_folder import ImageFolder
from evalkit.data.registry import DATASETS
from evalkit.errors import EvalkitError

CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]


@DATASETS.register("crc")
class CRC(ImageFolder):
    """``NCT-CRC-HE-100K/<CLASS>/*.tif`` and ``CRC-VAL-HE-7K/<CLASS>/*.tif``, as unzipped from Zenodo.

    Class order and counts are those of the release (Kather et al., Zenodo 1214456):
    100,000 train and 7,180 val tiles of 224×224 px at 0.5 µm/px.

    Args:
        root: the folder that holds both unzipped folders, under ``data_root``.
        train_folder: ``NCT-CRC-HE-100K`` or ``NCT-CRC-HE-100K-NONORM`` (same counts).
        allow_subset: accept a subset of the tiles (tests, quick runs).
    """

    official_counts = {
        "train": {"ADI": 10407, "BACK": 10566, "DEB": 11512, "LYM": 11557, "MUC": 8896, "MUS": 13536,
                  "NORM": 8763, "STR": 10446, "TUM": 14317},
        "val": {"ADI": 1338, "BACK": 847, "DEB": 339, "LYM": 634, "MUC": 1035, "MUS": 592, "NORM": 741,
                "STR": 421, "TUM": 1233},
    }

    def __init__(self, root: str = "crc", train_folder: str = "NCT-CRC-HE-100K", allow_subset: bool = False) -> None:
        super().__init__(root, splits={"train": train_folder, "val": "CRC-VAL-HE-7K"}, classes=CLASSES,
                         allow_subset=allow_subset)

    def _list(self, data_root: str | Path, split: str) -> SplitListing:
        folder = self.resolve_root(data_root) / self.splits.get(split, split)
        missing = [name for name in CLASSES if not (folder / name).is_dir()]
        if split in self.splits and missing:
            raise EvalkitError(f"CRC folder missing: {folder / missing[0]}; expected {folder}/<CLASS>/*.tif for "
                               f"the 9 classes {', '.join(CLASSES)}")
        return super()._list(data_root, split)
