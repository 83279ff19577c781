"""CoNSeP nuclear segmentation: images and .mat label maps, types merged into 4 classes + background."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evalkit.data.base import MAX_IMAGE_PIXELS, DatasetSpec, SplitListing
from evalkit.data.registry import DATASETS
from evalkit.errors import EvalkitError

CLASSES = ["background", "other", "inflammatory", "epithelial", "spindle-shaped"]
# CoNSeP's 7 nucleus types -> the 4 classes of HoVer-Net (Graham et al., 2019) and eva:
# 1 other, 2 inflammatory, 3+4 (healthy, malignant epithelial) -> epithelial,
# 5+6+7 (fibroblast, muscle, endothelial) -> spindle-shaped; 0 stays background.
TYPE_TO_CLASS = np.array([0, 1, 2, 3, 3, 4, 4, 4], dtype=np.int64)
_FOLDERS = {"train": "Train", "test": "Test"}


def merge_types(type_map: np.ndarray) -> np.ndarray:
    """CoNSeP ``type_map`` (0..7) -> class map (0 background, 1..4 nucleus classes)."""
    values = np.asarray(type_map).astype(np.int64)
    if values.min() < 0 or values.max() >= len(TYPE_TO_CLASS):
        raise ValueError(f"type_map values must be 0..7, found {values.min()}..{values.max()}")
    return TYPE_TO_CLASS[values]


@DATASETS.register("consep")
class CoNSeP(DatasetSpec):
    """``{Train,Test}/Images/*.png`` (1000×1000 px, 40×) and ``{Train,Test}/Labels/*.mat``.

    27 train and 14 test images (Graham et al., "HoVer-Net", Medical Image Analysis 2019).
    Each label file holds ``inst_map`` (nucleus instances) and ``type_map`` (7 types),
    merged by :func:`merge_types`. A segmentation dataset: its samples carry no class label.

    Args:
        root: the CoNSeP folder, under ``data_root``.
        allow_subset: accept other numbers of images (tests, quick runs).
    """

    evaluations = ("segmentation",)
    official_images = {"train": 27, "test": 14}
    class_names = CLASSES
    official_counts = {split: {} for split in official_images}

    def __init__(self, root: str = "consep", allow_subset: bool = False) -> None:
        super().__init__(root, allow_subset)

    def _list(self, data_root: str | Path, split: str) -> SplitListing:
        if split not in _FOLDERS:
            raise EvalkitError(f"CoNSeP has the splits train and test, not '{split}'")
        root = self.resolve_root(data_root)
        images, labels = root / _FOLDERS[split] / "Images", root / _FOLDERS[split] / "Labels"
        for folder in (images, labels):
            if not folder.is_dir():
                raise EvalkitError(f"CoNSeP folder missing: {folder}; expected {_FOLDERS[split]}/Images/*.png and "
                                   f"{_FOLDERS[split]}/Labels/*.mat")
        paths = sorted(images.glob("*.png"), key=lambda p: (len(p.stem), p.stem))  # train_2 before train_10
        for path in paths:
            if not (labels / f"{path.stem}.mat").is_file():
                raise EvalkitError(f"CoNSeP label missing: {labels / (path.stem + '.mat')} (for {path.name})")
        ids = [str(p.relative_to(root)) for p in paths]
        return SplitListing(ids, np.full(len(paths), -1, dtype=np.int64), paths)

    def count_rows(self, listing: SplitListing, split: str) -> list[tuple[str, int, int | None]]:
        return [("images", len(listing), self.official_images.get(split))]

    def mask_path(self, listing: SplitListing, index: int) -> Path:
        image = listing.paths[index]
        return image.parent.parent / "Labels" / f"{image.stem}.mat"

    def sample_files(self, listing: SplitListing, index: int) -> tuple[Path, ...]:
        return listing.paths[index], self.mask_path(listing, index)

    def check_sample(self, listing: SplitListing, index: int, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
        super().check_sample(listing, index, max_pixels)
        self.read_mask(listing, index)

    def read_mask(self, listing: SplitListing, index: int) -> np.ndarray:
        """The merged class map (H×W, int64) of sample ``index``."""
        from scipy.io import loadmat

        path = self.mask_path(listing, index)
        try:
            content = loadmat(path)
            return merge_types(content["type_map"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EvalkitError(f"cannot read CoNSeP label {path}: {type(exc).__name__}: {exc}") from None
