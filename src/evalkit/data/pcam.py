"""PatchCamelyon: 96×96 px lymph-node patches in the six official HDF5 files, read lazily."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from evalkit.data.base import MAX_IMAGE_PIXELS, DatasetSpec, SplitListing, check_pixels, to_rgb
from evalkit.data.registry import DATASETS
from evalkit.errors import EvalkitError

CLASSES = ["no_tumor", "tumor"]
_FILE_SPLIT = {"train": "train", "val": "valid", "test": "test"}
_OPEN: dict[tuple[int, str], h5py.File] = {}  # (process id, path) -> open file: one handle per worker


def _h5(path: Path) -> h5py.File:
    key = (os.getpid(), str(path))
    if key not in _OPEN:
        _OPEN[key] = h5py.File(path, "r")
    return _OPEN[key]


@DATASETS.register("pcam")
class PatchCamelyon(DatasetSpec):
    """``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`` (x: N×96×96×3 uint8, y: N×1×1×1).

    Images are read one at a time from the open file, never the whole array. Splits
    are named ``train``, ``val`` (the ``valid`` files) and ``test``: 262,144 / 32,768 /
    32,768 patches (Veeling et al., 2018). Only totals are checked: the per-class counts
    are not published per split.

    Args:
        root: the folder with the six (gunzipped) files, under ``data_root``.
        allow_subset: accept files with other sizes (tests, quick runs).
    """

    official_totals = {"train": 262_144, "val": 32_768, "test": 32_768}
    class_names = CLASSES
    official_counts = {split: {} for split in official_totals}

    def __init__(self, root: str = "patch_camelyon", allow_subset: bool = False) -> None:
        super().__init__(root, allow_subset)

    def files(self, data_root: str | Path, split: str) -> tuple[Path, Path]:
        if split not in _FILE_SPLIT:
            raise EvalkitError(f"PCam has the splits train, val and test, not '{split}'")
        root = self.resolve_root(data_root)
        x, y = (root / f"camelyonpatch_level_2_split_{_FILE_SPLIT[split]}_{kind}.h5" for kind in ("x", "y"))
        for path in (x, y):
            if not path.is_file():
                gz = path.with_suffix(".h5.gz")
                hint = f" (found {gz.name}: gunzip it first)" if gz.is_file() else ""
                raise EvalkitError(f"PCam file missing: {path}{hint}")
        return x, y

    def _list(self, data_root: str | Path, split: str) -> SplitListing:
        x_path, y_path = self.files(data_root, split)
        try:
            with h5py.File(x_path, "r") as fx, h5py.File(y_path, "r") as fy:
                shape, dtype = fx["x"].shape, fx["x"].dtype
                labels = fy["y"][...].reshape(-1).astype(np.int64)
        except (OSError, KeyError) as exc:
            raise EvalkitError(f"cannot read PCam files {x_path.name}/{y_path.name}: {exc}") from None
        if len(shape) != 4 or shape[1:] != (96, 96, 3) or shape[0] != len(labels) or dtype != np.uint8:
            raise EvalkitError(f"{x_path} holds x of shape {shape} ({dtype}) and {len(labels)} labels; expected "
                               "N×96×96×3 uint8 and N labels")
        stem = x_path.stem
        return SplitListing([f"{stem}/{i}" for i in range(shape[0])], labels, [x_path] * shape[0])

    def count_rows(self, listing: SplitListing, split: str) -> list[tuple[str, int, int | None]]:
        rows = super().count_rows(listing, split)
        return rows + [("(all)", len(listing), self.official_totals.get(split))]

    def read_image(self, listing: SplitListing, index: int, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
        """Patch ``index`` as RGB, through the checks every image passes (96×96 uint8, as listed)."""
        source = f"patch {index} of {listing.paths[index]}"
        try:
            image = Image.fromarray(_h5(listing.paths[index])["x"][index])
        except (OSError, KeyError) as exc:
            raise EvalkitError(f"cannot read {source}: {exc}") from None
        check_pixels(image.size, max_pixels, source)
        return to_rgb(image, source)
