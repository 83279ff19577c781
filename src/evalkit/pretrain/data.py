"""Unlabelled images for pretraining: folders of tiles (any layout, searched recursively)
and, through :mod:`evalkit.data.wsi`, patches read online from whole-slide images."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from evalkit.data.base import IMAGE_EXTENSIONS, read_rgb
from evalkit.errors import EvalkitError

def find_tiles(folders: list[str]) -> list[Path]:
    paths = sorted(p for folder in folders for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    missing = [f for f in folders if not Path(f).is_dir()]
    if missing:
        raise EvalkitError(f"tile folder not found: {missing[0]}; fix data.tile_folders")
    return paths


class TileImages(torch.utils.data.Dataset):
    """Every image under the folders, each turned into its views."""

    def __init__(self, folders: list[str], views: Callable) -> None:
        self.paths = find_tiles(folders)
        self.views = views

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> list[torch.Tensor]:
        return self.views(read_rgb(self.paths[index]))


class ViewsOf(torch.utils.data.Dataset):
    """Any dataset of PIL images (e.g. WSI patches) turned into views."""

    def __init__(self, images: torch.utils.data.Dataset, views: Callable) -> None:
        self.images = images
        self.views = views

    def __len__(self) -> int:
        return len(self.images)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> list[torch.Tensor]:
        item = self.images[index]
        return self.views(item[0] if isinstance(item, tuple) else item)


def collate_views(batch: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Samples of V views -> V batches, one per view."""
    return [torch.stack(views) for views in zip(*batch)]
