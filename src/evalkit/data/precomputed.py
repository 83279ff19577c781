"""Bring your own embeddings: a task over existing cache files, no images and no model."""

from __future__ import annotations

import os
from pathlib import Path

from evalkit.data.base import DatasetSpec, SplitListing
from evalkit.data.registry import DATASETS
from evalkit.errors import EvalkitError


@DATASETS.register("precomputed")
class PrecomputedEmbeddings(DatasetSpec):
    """Cache files written elsewhere (evalkit's HDF5 schema), one per split.

    Args:
        train_h5: training embeddings; default ``$TRAIN_H5``.
        val_h5: validation embeddings; default ``$VAL_H5``.
        test_h5: optional test embeddings; default ``$TEST_H5``.
    """

    def __init__(self, train_h5: str | None = None, val_h5: str | None = None, test_h5: str | None = None) -> None:
        super().__init__(root=".")
        self.files = {
            "train": train_h5 or os.environ.get("TRAIN_H5"),
            "val": val_h5 or os.environ.get("VAL_H5"),
            "test": test_h5 or os.environ.get("TEST_H5"),
        }

    def cache_file(self, split: str) -> Path:
        path = self.files.get(split)
        if not path:
            raise EvalkitError(f"no embeddings file for split '{split}'; set {split.upper()}_H5 or --task.dataset.{split}_h5")
        if not Path(path).is_file():  # the user's own file: `evalkit predict` cannot make it
            where = "" if Path(path).is_absolute() else f", relative to {Path.cwd()}"
            raise EvalkitError(f"embeddings file for split '{split}' not found: {path} (from {split.upper()}_H5 or "
                               f"--task.dataset.{split}_h5); check the path{where}")
        return Path(path)

    def _list(self, data_root: str | Path, split: str) -> SplitListing:
        raise EvalkitError("the precomputed task has no images to embed; run `evalkit fit` on it")
