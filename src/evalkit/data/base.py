"""Datasets as cheap specs: a config that lists a split's samples and reads one image.

Listing is separate from reading so that a split's identity (ids and labels) is known
before any pixel is decoded, and the torch ``Dataset`` is a thin view over that list.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from evalkit.errors import EvalkitError

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class SplitListing:
    """The samples of one split, in dataset order."""

    ids: list[str]  # identity of each sample: path relative to the dataset root
    labels: np.ndarray  # int64 class index, -1 where unlabelled
    paths: list[Path]

    def __len__(self) -> int:
        return len(self.ids)

    def fingerprint(self) -> str:
        """Hash of ids, labels and file sizes: changes when the data on disk change."""
        sizes: dict[Path, int] = {}  # several samples may live in one file (PCam)
        h = hashlib.sha256()
        for sample_id, label, path in zip(self.ids, self.labels.tolist(), self.paths):
            if path not in sizes:
                sizes[path] = path.stat().st_size
            h.update(f"{sample_id}\t{label}\t{sizes[path]}\n".encode())
        return h.hexdigest()

    def class_counts(self, num_classes: int) -> list[int]:
        labelled = self.labels[self.labels >= 0]
        return np.bincount(labelled, minlength=num_classes).tolist()


class DatasetSpec:
    """Base of every dataset: where it lives, its classes, its splits, how to read a sample.

    A dataset with published split sizes declares them in ``official_counts`` (split ->
    class -> count); a listing that differs is refused unless ``allow_subset`` is set.

    Args:
        root: the dataset folder; a relative path is taken under ``data_root`` (``DATA_ROOT``).
        allow_subset: accept splits whose per-class counts differ from the official ones.
    """

    official_counts: dict[str, dict[str, int]] = {}
    # The evaluations (registry names, :mod:`evalkit.evaluations`) a task on these data runs unless its config
    # names others; the first is the default, ``--evaluation`` picks another.
    evaluations: tuple[str, ...] = ("linear_probe", "knn")
    class_names: list[str] | None = None  # the fixed class list of a published dataset, in label order

    def __init__(self, root: str, allow_subset: bool = False) -> None:
        self.root = root
        self.allow_subset = allow_subset

    def resolve_root(self, data_root: str | Path) -> Path:
        root = Path(data_root) / self.root
        if not root.is_dir():
            raise EvalkitError(f"dataset folder not found: {root}; set --data_root (DATA_ROOT) or the task's dataset root")
        return root

    @property
    def classes(self) -> list[str]:
        if self.class_names is None:
            raise NotImplementedError(f"{type(self).__name__} declares no class_names and does not override classes")
        return self.class_names

    def _list(self, data_root: str | Path, split: str) -> SplitListing:
        raise NotImplementedError

    def list_split(self, data_root: str | Path, split: str, check_counts: bool = True) -> SplitListing:
        """The samples of ``split``, checked against the official counts (unless ``check_counts`` is false)."""
        listing = self._list(data_root, split)
        if not check_counts:
            return listing
        mismatched = [row for row in self.count_rows(listing, split) if row[2] is not None and row[1] != row[2]]
        if mismatched and not self.allow_subset:
            shown = ", ".join(f"{name} {found}/{official}" for name, found, official in mismatched[:5])
            raise EvalkitError(
                f"{type(self).__name__} {split}: {len(listing)} samples whose counts differ from the official "
                f"ones (found/official: {shown}); check the data under {Path(data_root) / self.root}, or pass "
                "--task.dataset.allow_subset true to use a subset"
            )
        return listing

    def count_rows(self, listing: SplitListing, split: str) -> list[tuple[str, int, int | None]]:
        """Per class: name, count found, official count (None where none is published)."""
        official = self.official_counts.get(split, {})
        found = listing.class_counts(len(self.classes))
        return [(name, found[i], official.get(name)) for i, name in enumerate(self.classes)]

    def read_image(self, listing: SplitListing, index: int) -> Image.Image:
        """Decode sample ``index`` of ``listing`` as RGB (one file per sample by default)."""
        return read_rgb(listing.paths[index])

    def read_mask(self, listing: SplitListing, index: int) -> np.ndarray:
        """The class map (H×W) of sample ``index``, for dense evaluations; datasets with label maps override it."""
        raise EvalkitError(f"{type(self).__name__} has no label maps, which segmentation needs; use a dataset with "
                           "masks (e.g. CoNSeP) or another evaluation")

    def check_sample(self, listing: SplitListing, index: int) -> None:
        """Decode everything sample ``index`` holds (``evalkit data check``); raises EvalkitError if it cannot."""
        self.read_image(listing, index).load()

    def cache_file(self, split: str) -> Path | None:
        """A cache file that already holds this split's features (bring-your-own embeddings), else None."""
        return None

    def config(self) -> dict[str, Any]:
        """The arguments that decide which samples a split holds (enters the cache key)."""
        skip = {"allow_subset"}
        return {"class": type(self).__name__,
                **{k: v for k, v in vars(self).items() if not k.startswith("_") and k not in skip}}

    def identity(self) -> str:
        return json.dumps(self.config(), sort_keys=True, default=str)


def read_rgb(path: Path) -> Image.Image:
    """Decode an image fully, so a truncated file fails here, naming the file, not later in a batch."""
    try:
        with warnings.catch_warnings():  # PIL warns about damaged metadata before failing on the pixels
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(path) as image:
                return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise EvalkitError(f"cannot read image {path}: {exc}; replace or remove the file") from None


class ImageSplitDataset(torch.utils.data.Dataset):
    """The torch view of a :class:`SplitListing`: returns ``(image tensor, index, readable)``.

    With ``skip_unreadable`` an image that cannot be decoded becomes a zero tensor marked
    unreadable, which the embedding stage leaves out of the cache and counts; without it
    the error names the file and stops the run.
    """

    def __init__(self, spec: DatasetSpec, listing: SplitListing, transform: Callable[[Image.Image], torch.Tensor],
                 input_size: int, skip_unreadable: bool = False) -> None:
        self.spec = spec
        self.listing = listing
        self.transform = transform
        self.input_size = input_size
        self.skip_unreadable = skip_unreadable

    def __len__(self) -> int:
        return len(self.listing)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, bool]:
        try:
            return self.transform(self.spec.read_image(self.listing, index)), index, True
        except EvalkitError:
            if not self.skip_unreadable:
                raise
            return torch.zeros(3, self.input_size, self.input_size), index, False
