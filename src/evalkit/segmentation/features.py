"""What ``predict`` embeds for segmentation: frozen-backbone feature maps of the training crop
pool and of the test grid tiles, written by the one cache writer (:mod:`evalkit.embed.cache`).

| name | content |
|---|---|
| ``features/<i>`` | [P, C_i, h_i, w_i] float16, level i of the backbone's dense features (finest first) |
| ``masks`` | [P, S, S] uint8 class maps of the crops/tiles (S = crop size) |
| ``image_index``, ``top``, ``left``, ``symmetry`` | [P] where each crop/tile comes from |
| ``full_masks/<j>`` | grids: image j's whole class map, which the stitched prediction is scored on |
| ``overlay_images/<j>`` | grids: RGB of the first few images, for the overlay PNGs |
| attrs | ``strides``, ``channels``, ``ids`` (image ids), ``heights``, ``widths``, ``crop``, and the writer's |

The crop/grid sampling lives here, with segmentation; batching, resume, devices and the
atomic rename are the writer's, the same as for pooled embeddings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2 as T

from evalkit.data.base import DatasetSpec, SplitListing
from evalkit.embed.cache import open_cache, plain_attrs
from evalkit.embed.config import EmbedConfig
from evalkit.embed.features import FeatureSet
from evalkit.errors import EvalkitError
from evalkit.models.base import Backbone, Preprocessing
from evalkit.segmentation.crops import CropPool, cut, dihedral, sample_crop_pool
from evalkit.segmentation.inference import tile_origins


@dataclass
class SegmentationCache:
    """A split's cached crops or tiles, held in memory for decoder fitting."""

    features: list[torch.Tensor]  # level i: [P, C_i, h_i, w_i] float16
    masks: torch.Tensor  # [P, S, S] int64
    image_index: torch.Tensor  # [P]
    top: torch.Tensor
    left: torch.Tensor
    full_masks: list[torch.Tensor]  # grids: [H_j, W_j] int64 per image
    overlay_images: list[np.ndarray]  # grids: [H_j, W_j, 3] uint8 of the first images
    attrs: dict[str, Any]
    path: Path

    @property
    def ids(self) -> list[str]:
        return json.loads(self.attrs["ids"])


def _normalise(preprocessing: Preprocessing) -> T.Compose:
    """Native resolution: only scaling and the backbone's normalisation (no resize, no centre crop)."""
    return T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True),
                      T.Normalize(mean=list(preprocessing.mean), std=list(preprocessing.std))])


class _CropDataset(torch.utils.data.Dataset):
    """Crop r of the pool as ``(image tensor, r, True)``; the last decoded image is kept, since the
    crops of one image are consecutive and a batch of them would otherwise decode it again and again."""

    def __init__(self, spec: DatasetSpec, listing: SplitListing, pool: CropPool, sizes: list[tuple[int, int]],
                 crop: int, preprocessing: Preprocessing, max_image_pixels: int) -> None:
        self.spec, self.listing, self.pool, self.sizes, self.crop = spec, listing, pool, sizes, crop
        self.max_image_pixels = max_image_pixels
        self.normalise = _normalise(preprocessing)
        self._last: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.pool)

    def _image(self, j: int) -> torch.Tensor:
        if self._last is None or self._last[0] != j:
            image = self.normalise(self.spec.read_image(self.listing, j, self.max_image_pixels))
            if tuple(image.shape[-2:]) != self.sizes[j]:
                raise EvalkitError(f"{self.listing.ids[j]}: image {tuple(image.shape[-2:])} and label {self.sizes[j]} "
                                   "differ in size; the label file belongs to another image")
            self._last = (j, image)
        return self._last[1]

    def __getitem__(self, r: int) -> tuple[torch.Tensor, int, bool]:
        j, top, left, k = (int(self.pool.image_index[r]), int(self.pool.top[r]), int(self.pool.left[r]),
                           int(self.pool.symmetry[r]))
        return dihedral(cut(self._image(j), top, left, self.crop), k), r, True


class _MapFeatures(FeatureSet):
    """Feature maps of crops cut from the split's images; subclasses say which crops."""

    def __init__(self, crop_size: int) -> None:
        self.crop_size = crop_size
        self._masks: list[np.ndarray] = []
        self._pool: CropPool | None = None

    def _crops(self, sizes: list[tuple[int, int]]) -> CropPool:
        raise NotImplementedError

    def plan(self, spec: DatasetSpec, listing: SplitListing) -> int:
        self._masks = [np.asarray(spec.read_mask(listing, j), dtype=np.uint8) for j in range(len(listing))]
        self._pool = self._crops([m.shape for m in self._masks])
        return len(self._pool)

    def dataset(self, spec: DatasetSpec, listing: SplitListing, preprocessing: Preprocessing,
                cfg: EmbedConfig) -> torch.utils.data.Dataset:
        return _CropDataset(spec, listing, self._pool, [m.shape for m in self._masks], self.crop_size, preprocessing,
                            cfg.max_image_pixels)

    def outputs(self, backbone: Backbone, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {f"features/{i}": level for i, level in enumerate(backbone.dense(images))}

    def dtypes(self, cfg: EmbedConfig) -> dict[str, str]:
        return {name: "float16" for name in self._levels}

    def listing_index(self, n: int) -> np.ndarray:
        return self._pool.image_index

    def attrs(self, spec: DatasetSpec, listing: SplitListing, backbone: Backbone) -> dict[str, Any]:
        sizes = [m.shape for m in self._masks]
        return {"ids": json.dumps(listing.ids), "crop": self.crop_size, "channels": json.dumps(self._channels),
                "strides": json.dumps([self.crop_size // width for width in self._widths]),
                "heights": json.dumps([h for h, _ in sizes]), "widths": json.dumps([w for _, w in sizes]),
                "transform": json.dumps({**backbone.preprocessing.as_dict(), "resize": None, "crop": self.crop_size})}

    def bind(self, backbone: Backbone) -> None:
        """The levels, channels and widths of ``backbone.dense`` for one crop: they name the stored arrays."""
        with torch.inference_mode():
            maps = backbone.dense(torch.zeros(1, 3, self.crop_size, self.crop_size))
        self._levels = [f"features/{i}" for i in range(len(maps))]
        self._channels = [int(m.shape[1]) for m in maps]
        self._widths = [int(m.shape[-1]) for m in maps]

    def per_sample(self, spec: DatasetSpec, listing: SplitListing) -> dict[str, np.ndarray]:
        pool = self._pool
        masks = [torch.from_numpy(m) for m in self._masks]
        crops = np.stack([dihedral(cut(masks[int(j)], int(t), int(l), self.crop_size), int(k)).numpy()
                          for j, t, l, k in zip(pool.image_index, pool.top, pool.left, pool.symmetry)])
        return {"masks": crops, "image_index": pool.image_index, "top": pool.top, "left": pool.left,
                "symmetry": pool.symmetry}

    def read(self, path: Any) -> SegmentationCache:
        with open_cache(path, self.kind, verify=True) as f:
            try:
                features = [torch.from_numpy(f[f"features/{i}"][()]) for i in range(len(f["features"]))]
                full = [torch.from_numpy(f[f"full_masks/{j}"][()]).long() for j in range(len(f.get("full_masks", {})))]
                overlay = [f[f"overlay_images/{j}"][()] for j in range(len(f.get("overlay_images", {})))]
                return SegmentationCache(features, torch.from_numpy(f["masks"][()]).long(),
                                         *(torch.from_numpy(f[name][()]) for name in ("image_index", "top", "left")),
                                         full, overlay, plain_attrs(f), Path(path))
            except KeyError as exc:
                raise EvalkitError(f"{path} lacks {exc}; delete it and rerun `evalkit predict`") from None


class CropPoolFeatures(_MapFeatures):
    """The training split: ``crops_per_image`` seeded random crops per image, each with a random symmetry."""

    kind = "crop_pool"

    def __init__(self, crop_size: int, crops_per_image: int, seed: int) -> None:
        super().__init__(crop_size)
        self.crops_per_image = crops_per_image
        self.seed = seed

    def settings(self) -> dict[str, Any]:
        return {"crop": self.crop_size, "crops_per_image": self.crops_per_image, "seed": self.seed}

    def _crops(self, sizes: list[tuple[int, int]]) -> CropPool:
        return sample_crop_pool(sizes, self.crop_size, self.crops_per_image, self.seed)

    def describe(self, listing: SplitListing) -> str:
        return f"{len(listing) * self.crops_per_image} crops of {len(listing)} images"


class GridFeatures(_MapFeatures):
    """An evaluated split: every tile of a grid with ``stride`` whose last tile is flush with the edge."""

    kind = "grid"

    def __init__(self, crop_size: int, stride: int, overlays: int) -> None:
        super().__init__(crop_size)
        self.stride = stride
        self.overlays = overlays

    def settings(self) -> dict[str, Any]:
        return {"crop": self.crop_size, "stride": self.stride, "overlays": self.overlays}

    def _crops(self, sizes: list[tuple[int, int]]) -> CropPool:
        origins = [tile_origins(h, w, self.crop_size, self.stride) for h, w in sizes]
        index = np.concatenate([np.full(len(o), j) for j, o in enumerate(origins)]).astype(np.int64)
        return CropPool(index, np.array([t for o in origins for t, _ in o], dtype=np.int64),
                        np.array([l for o in origins for _, l in o], dtype=np.int64), np.zeros(len(index), np.int64))

    def extra(self, spec: DatasetSpec, listing: SplitListing) -> dict[str, np.ndarray]:
        out = {f"full_masks/{j}": m for j, m in enumerate(self._masks)}
        for j in range(min(self.overlays, len(listing))):
            out[f"overlay_images/{j}"] = np.asarray(spec.read_image(listing, j).convert("RGB"))
        return out

    def describe(self, listing: SplitListing) -> str:
        return f"the grid tiles of {len(listing)} images"
