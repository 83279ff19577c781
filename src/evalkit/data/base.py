"""Datasets as cheap specs: a config that lists a split's samples and reads one image.

Listing is separate from reading so that a split's identity (ids and labels) is known
before any pixel is decoded, and the torch ``Dataset`` is a thin view over that list.
"""

from __future__ import annotations

import hashlib
import json
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
        h = hashlib.sha256()
        for sample_id, label, path in zip(self.ids, self.labels.tolist(), self.paths):
            h.update(f"{sample_id}\t{label}\t{path.stat().st_size}\n".encode())
        return h.hexdigest()


class DatasetSpec:
    """Base of every dataset: where it lives, its classes, its splits, how to read a sample.

    Args:
        root: the dataset folder; a relative path is taken under ``data_root`` (``DATA_ROOT``).
    """

    def __init__(self, root: str) -> None:
        self.root = root

    def resolve_root(self, data_root: str | Path) -> Path:
        root = Path(data_root) / self.root
        if not root.is_dir():
            raise EvalkitError(f"dataset folder not found: {root}; set --data_root (DATA_ROOT) or the task's dataset root")
        return root

    @property
    def classes(self) -> list[str]:
        raise NotImplementedError

    def list_split(self, data_root: str | Path, split: str) -> SplitListing:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The arguments that decide which samples a split holds (enters the cache key)."""
        return {"class": type(self).__name__, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}

    def identity(self) -> str:
        return json.dumps(self.config(), sort_keys=True, default=str)


def read_rgb(path: Path) -> Image.Image:
    """Decode an image fully, so a truncated file fails here, naming the file, not later in a batch."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise EvalkitError(f"cannot read image {path}: {exc}; replace or remove the file") from None


class ImageSplitDataset(torch.utils.data.Dataset):
    """The torch view of a :class:`SplitListing`: returns ``(image tensor, index)``."""

    def __init__(self, listing: SplitListing, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.listing = listing
        self.transform = transform

    def __len__(self) -> int:
        return len(self.listing)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(read_rgb(self.listing.paths[index])), index
