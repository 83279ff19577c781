"""What ``predict`` embeds for an evaluation: one :class:`FeatureSet` per split.

An evaluation declares, per split, which features it reads (``Evaluation.features``). The
feature set says how to turn the split's samples into backbone inputs, which arrays one
forward pass yields, what else the cache file holds, and how ``fit`` reads it back. The one
cache writer (:mod:`evalkit.embed.cache`, driven by :func:`evalkit.embed.predict.ensure_features`)
does the rest the same way for every kind: batches, resume, devices, atomic rename, schema.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from evalkit.data.base import DatasetSpec, ImageSplitDataset, SplitListing
from evalkit.embed.cache import ROWS, Embeddings, cache_key, cache_path, read_embeddings
from evalkit.embed.config import EmbedConfig
from evalkit.models.base import Backbone, Preprocessing
from evalkit.task import Task


class FeatureSet(ABC):
    """The features of one split. ``plan`` and ``bind`` are called once before ``dataset``, ``dtypes``,
    ``per_sample``, ``extra`` and ``attrs``."""

    kind: ClassVar[str]
    # Each sample's features depend on its own files only, in a fixed order: when some source files change,
    # the cached samples of the others are kept and only theirs re-embedded. Otherwise the split is redone.
    samples_independent: ClassVar[bool] = False

    def settings(self) -> dict[str, Any]:
        """What, beside model, data and split, decides the file's content (enters the cache key)."""
        return {}

    def plan(self, spec: DatasetSpec, listing: SplitListing) -> int:
        """Prepare for embedding ``listing``; returns the number of samples (rows, crops) to embed."""
        return len(listing)

    def bind(self, backbone: Backbone) -> None:
        """Learn what depends on the backbone (e.g. how many feature levels it gives), before embedding."""

    @abstractmethod
    def dataset(self, spec: DatasetSpec, listing: SplitListing, preprocessing: Preprocessing,
                cfg: EmbedConfig) -> torch.utils.data.Dataset:
        """A dataset of ``(image tensor, sample index, readable)``."""

    @abstractmethod
    def outputs(self, backbone: Backbone, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The named arrays one batch of images yields, one entry per sample along dim 0."""

    @abstractmethod
    def dtypes(self, cfg: EmbedConfig) -> dict[str, str]:
        """The storage type of each array of :meth:`outputs`."""

    def per_sample(self, spec: DatasetSpec, listing: SplitListing) -> dict[str, np.ndarray]:
        """Arrays with one entry per embedded sample (labels, ids), stored beside the features."""
        return {}

    def extra(self, spec: DatasetSpec, listing: SplitListing) -> dict[str, np.ndarray]:
        """Arrays stored as they are (whole-image masks, ...)."""
        return {}

    def attrs(self, spec: DatasetSpec, listing: SplitListing, backbone: Backbone) -> dict[str, Any]:
        """File attributes of this kind (the writer adds model, data and schema attributes)."""
        return {}

    def describe(self, listing: SplitListing) -> str:
        """What is being embedded, for the progress line."""
        return f"{len(listing)} images"

    def listing_index(self, n: int) -> np.ndarray:
        """For each of the ``n`` embedded samples (after :meth:`plan`), the listing sample it is cut from."""
        return np.arange(n)

    @abstractmethod
    def read(self, path: Any) -> Any:
        """The cache file as ``fit`` uses it."""


class PooledRows(FeatureSet):
    """One pooled embedding (the adapter's ``cls`` output) per image: what the probes read."""

    kind = ROWS
    samples_independent = True

    def dataset(self, spec: DatasetSpec, listing: SplitListing, preprocessing: Preprocessing,
                cfg: EmbedConfig) -> torch.utils.data.Dataset:
        return ImageSplitDataset(spec, listing, preprocessing.transform(), preprocessing.input_size,
                                 cfg.skip_unreadable, cfg.max_image_pixels)

    def outputs(self, backbone: Backbone, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"embeddings": backbone(images)["cls"]}

    def dtypes(self, cfg: EmbedConfig) -> dict[str, str]:
        return {"embeddings": cfg.dtype}

    def per_sample(self, spec: DatasetSpec, listing: SplitListing) -> dict[str, np.ndarray]:
        return {"labels": np.asarray(listing.labels, dtype=np.int64), "ids": np.asarray(listing.ids, dtype=object)}

    def attrs(self, spec: DatasetSpec, listing: SplitListing, backbone: Backbone) -> dict[str, Any]:
        return {"embed_dim": backbone.embed_dim, "transform": json.dumps(backbone.preprocessing.as_dict())}

    def read(self, path: Any) -> Embeddings:
        return read_embeddings(path)


def feature_file(embeddings_root: str | Path, task: Task, model_name: str, fingerprint: str, split: str,
                 features: FeatureSet, precision: str = "fp32") -> tuple[str, Path]:
    """The key and path of one split's cache file: the one recipe that ``predict`` and ``fit`` share.

    ``precision`` (``--embed.precision``) enters the key except for ``fp32``, so that fp32 files keep the
    keys they had before the precision was an option, and a bf16 or fp16 run never reuses an fp32 file
    (nor the reverse).
    """
    settings = {"kind": features.kind, **features.settings()}
    if precision != "fp32":
        settings["precision"] = precision
    key = cache_key(fingerprint, task.dataset.identity(), split, settings)
    return key, cache_path(embeddings_root, task.name, model_name, split, key, features.kind)
