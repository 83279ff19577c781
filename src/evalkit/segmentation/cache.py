"""The segmentation feature cache: frozen-backbone feature maps of the training crop pool and
of the test grid tiles, written once by ``predict`` and read by every decoder fit.

One HDF5 file per (model, dataset, split, crop settings), content-addressed like the
embedding cache (:mod:`evalkit.embed.cache`) and written to a temporary name, then renamed:

| name | content |
|---|---|
| ``features/<i>`` | [P, C_i, h_i, w_i] float16, level i of the backbone's dense features (finest first) |
| ``masks`` | [P, S, S] uint8 class maps of the crops/tiles (S = crop size) |
| ``image_index``, ``top``, ``left``, ``symmetry`` | [P] where each crop/tile comes from |
| ``full_masks/<j>`` | test splits: image j's whole class map, which the stitched prediction is scored on |
| ``overlay_images/<j>`` | test splits: RGB of the first few images, for the overlay PNGs |
| attrs | ``strides``, ``channels``, ``ids`` (image ids), ``heights``, ``widths``, ``classes``, ``kind`` (``pool`` or ``grid``), ``model``, ``model_fingerprint``, ``complete`` |
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import torch
from torchvision.transforms import v2 as T

from evalkit import __version__
from evalkit.data.base import DatasetSpec, SplitListing
from evalkit.embed.cache import split_cache_file
from evalkit.errors import EvalkitError
from evalkit.models.base import Backbone
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
    full_masks: list[torch.Tensor]  # test: [H_j, W_j] int64 per image
    overlay_images: list[np.ndarray]  # test: [H_j, W_j, 3] uint8 of the first images
    attrs: dict[str, Any]
    path: Path

    @property
    def ids(self) -> list[str]:
        return json.loads(self.attrs["ids"])


def crop_settings(split: str, kind: str, crop: int, crops_per_image: int, stride: int, seed: int) -> str:
    """The part of the cache key that says which crops a file holds."""
    if kind == "pool":
        return f"{split}:pool:crop{crop}:n{crops_per_image}:seed{seed}"
    return f"{split}:grid:crop{crop}:stride{stride}"


def segmentation_cache_file(embeddings_root: str | Path, task: str, model: str, fingerprint: str, identity: str,
                            settings: str) -> Path:
    split, kind = settings.split(":")[:2]
    key, path = split_cache_file(embeddings_root, task, model, fingerprint, identity, settings)
    return path.with_name(f"seg-{split}-{kind}-{key[:16]}.h5")


def _normalise(preprocessing) -> T.Compose:
    """Native resolution: only scaling and the backbone's normalisation (no resize, no centre crop)."""
    return T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True),
                      T.Normalize(mean=list(preprocessing.mean), std=list(preprocessing.std))])


def write_segmentation_cache(path: Path, spec: DatasetSpec, listing: SplitListing, backbone: Backbone, kind: str,
                             crop: int, crops_per_image: int, stride: int, seed: int, batch_size: int,
                             device: torch.device, attrs: dict[str, Any], overlays: int = 3,
                             log: Callable[[str], None] = print) -> None:
    """Embed every crop (``pool``) or grid tile (``grid``) of the split with ``backbone.dense``."""
    normalise = _normalise(backbone.preprocessing)
    images, masks = [], []
    for j in range(len(listing)):  # a few dozen full images: decode once, keep in memory
        images.append(normalise(spec.read_image(listing, j)))
        masks.append(torch.from_numpy(spec.read_mask(listing, j)).to(torch.uint8))
        if tuple(images[-1].shape[-2:]) != tuple(masks[-1].shape):
            raise EvalkitError(f"{listing.ids[j]}: image {tuple(images[-1].shape[-2:])} and label "
                               f"{tuple(masks[-1].shape)} differ in size; the label file belongs to another image")
    sizes = [tuple(m.shape) for m in masks]
    if kind == "pool":
        pool = sample_crop_pool(sizes, crop, crops_per_image, seed)
    else:
        origins = [tile_origins(h, w, crop, stride) for h, w in sizes]
        index = np.concatenate([np.full(len(o), j) for j, o in enumerate(origins)]).astype(np.int64)
        pool = CropPool(index, np.array([t for o in origins for t, _ in o], dtype=np.int64),
                        np.array([l for o in origins for _, l in o], dtype=np.int64), np.zeros(len(index), np.int64))
    tmp = path.with_suffix(".h5.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    backbone = backbone.to(device).eval()
    with h5py.File(tmp, "w") as f:
        datasets: list[h5py.Dataset] = []
        crop_masks = f.create_dataset("masks", (len(pool), crop, crop), dtype=np.uint8)
        for start in range(0, len(pool), batch_size):
            rows = range(start, min(len(pool), start + batch_size))
            batch_images, batch_masks = [], []
            for r in rows:
                j, top, left, k = (int(pool.image_index[r]), int(pool.top[r]), int(pool.left[r]),
                                   int(pool.symmetry[r]))
                batch_images.append(dihedral(cut(images[j], top, left, crop), k))
                batch_masks.append(dihedral(cut(masks[j], top, left, crop), k))
            with torch.inference_mode():
                maps = backbone.dense(torch.stack(batch_images).to(device))
            if not datasets:
                datasets = [f.create_dataset(f"features/{i}", (len(pool), *m.shape[1:]), dtype=np.float16,
                                             chunks=(1, *m.shape[1:])) for i, m in enumerate(maps)]
                f.attrs["channels"] = json.dumps([m.shape[1] for m in maps])
                f.attrs["strides"] = json.dumps([crop // m.shape[-1] for m in maps])
            for dataset, m in zip(datasets, maps):
                dataset[rows.start:rows.stop] = m.float().cpu().numpy().astype(np.float16)
            crop_masks[rows.start:rows.stop] = torch.stack(batch_masks).numpy()
            log(f"  {rows.stop}/{len(pool)} {'crops' if kind == 'pool' else 'tiles'}")
        for name, values in (("image_index", pool.image_index), ("top", pool.top), ("left", pool.left),
                             ("symmetry", pool.symmetry)):
            f.create_dataset(name, data=values)
        if kind == "grid":
            for j, m in enumerate(masks):
                f.create_dataset(f"full_masks/{j}", data=m.numpy(), compression="gzip")
            for j in range(min(overlays, len(listing))):
                rgb = np.asarray(spec.read_image(listing, j).convert("RGB"))
                f.create_dataset(f"overlay_images/{j}", data=rgb, compression="gzip")
        f.attrs.update({**attrs, "kind": kind, "ids": json.dumps(listing.ids), "crop": crop,
                        "heights": json.dumps([h for h, _ in sizes]), "widths": json.dumps([w for _, w in sizes]),
                        "evalkit_version": __version__, "complete": True})
    os.replace(tmp, path)


def read_segmentation_cache(path: Path) -> SegmentationCache:
    try:
        with h5py.File(path, "r") as f:
            if not f.attrs.get("complete"):
                raise EvalkitError(f"{path} is incomplete; rerun `evalkit predict` for this task")
            levels = len(f["features"])
            features = [torch.from_numpy(f[f"features/{i}"][()]) for i in range(levels)]
            full = [torch.from_numpy(f[f"full_masks/{j}"][()]).long() for j in range(len(f.get("full_masks", {})))]
            overlay = [f[f"overlay_images/{j}"][()] for j in range(len(f.get("overlay_images", {})))]
            return SegmentationCache(features, torch.from_numpy(f["masks"][()]).long(),
                                     *(torch.from_numpy(f[name][()]) for name in ("image_index", "top", "left")),
                                     full, overlay, dict(f.attrs), path)
    except (OSError, KeyError) as exc:
        raise EvalkitError(f"{path} is not an evalkit segmentation cache ({exc}); delete it and rerun "
                           "`evalkit predict`") from None
