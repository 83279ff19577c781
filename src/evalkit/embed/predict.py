"""The embedding stage: a Lightning predict loop that fills the feature cache, for every kind of feature.

Lightning earns its keep here: DataLoader workers, devices, DDP and mixed precision come
from the Trainer (:mod:`evalkit.embed.loop`, imported only when some split must be embedded).
Each rank embeds whole batches of the not-yet-saved part of the split and saves each as it
finishes (see :mod:`evalkit.embed.cache`). What a batch yields is the
split's :class:`~evalkit.embed.features.FeatureSet`'s business: pooled rows, feature maps.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from evalkit.data.base import DatasetSpec, SplitListing
from evalkit.embed.cache import PartialCache, is_complete
from evalkit.embed.manifest import (Hasher, Manifest, SourceFiles, altered_array, changed_files, listing_sha256,
                                    strict_stat, verify_content, write_manifest, write_stat_record)
from evalkit.embed.config import EmbedConfig
from evalkit.embed.cost import COST_ATTR, total_cost
from evalkit.embed.features import FeatureSet, PooledRows, feature_file
from evalkit.embed.index import record_fingerprint
from evalkit.errors import EvalkitError
from evalkit.locks import FileLock
from evalkit.models.base import Backbone, ModelSpec, weights_sha256
from evalkit.runtime import is_global_zero
from evalkit.task import Task


@dataclass
class SplitCache:
    """Where one split's embeddings are and how they got there."""

    split: str
    path: Path
    key: str
    reused: bool
    seconds: float


class _LazyBackbone:
    """The backbone, built on first use: a predict whose caches are all complete never builds it."""

    def __init__(self, model: ModelSpec) -> None:
        self.model = model
        self._backbone: Backbone | None = None
        self._build_s = 0.0

    def get(self) -> Backbone:
        if self._backbone is None:
            start = time.perf_counter()
            self._backbone = self.model.build()
            self._build_s = time.perf_counter() - start
        return self._backbone

    def take_build_s(self) -> float:
        """The seconds the build took, once: the split that built the model is charged with them."""
        seconds, self._build_s = self._build_s, 0.0
        return seconds


def predict_features(task: Task, model: ModelSpec, features: dict[str, FeatureSet], data_root: str | Path,
                     embeddings_root: str | Path, cfg: EmbedConfig, log: Callable[[str], None] = print) -> list[SplitCache]:
    """Fill the cache with ``features[split]`` of every split; complete caches are reused untouched.

    The backbone is built only when some split still needs a forward pass. The fingerprint is
    recorded in the index (:mod:`evalkit.embed.index`), so ``fit`` finds these files without the weights.
    """
    fingerprint = model.fingerprint()
    if is_global_zero():
        record_fingerprint(embeddings_root, model, fingerprint)
    backbone = _LazyBackbone(model)
    return [_ensure_split(task, model, fingerprint, split, feature_set, data_root, embeddings_root, cfg, backbone, log)
            for split, feature_set in features.items()]


def embed_task(task: Task, model: ModelSpec, data_root: str | Path, embeddings_root: str | Path, cfg: EmbedConfig,
               log: Callable[[str], None] = print) -> list[SplitCache]:
    """The pooled embeddings of every split of ``task``: what the probes read."""
    return predict_features(task, model, {split: PooledRows() for split in task.splits}, data_root, embeddings_root,
                            cfg, log)


def _ensure_split(task: Task, model: ModelSpec, fingerprint: str, split: str, features: FeatureSet,
                  data_root: str | Path, embeddings_root: str | Path, cfg: EmbedConfig, backbone: _LazyBackbone,
                  log: Callable[[str], None]) -> SplitCache:
    """Reuse, refresh or make one split's cache file, holding its lock (the other ranks of a multi-device
    run share rank 0's: they only embed the batches rank 0 hands out)."""
    key, path = feature_file(embeddings_root, task, model.name, fingerprint, split, features, cfg.precision)
    if not is_global_zero():
        if is_complete(path, features.kind):
            return SplitCache(split, path, key, True, 0.0)
        return _embed(task, model, fingerprint, split, features, data_root, cfg, backbone, path, key, None, log)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path.with_name(path.name + ".lock"), f"the cache {path}")
    lock.acquire(lambda line: log(f"[{model.name}] {task.name}/{split}: {line}"))
    try:
        _remove_leftovers(path, features.kind)
        redo = None
        if is_complete(path, features.kind):
            stale = _stale(task, split, features, data_root, path)
            if stale is None:
                log(f"[{model.name}] {task.name}/{split}: reusing cache {path}")
                return SplitCache(split, path, key, True, 0.0)
            reason, redo = stale
            log(f"[{model.name}] {task.name}/{split}: {reason}")
            os.replace(path, _stale_path(path))  # the other ranks must not take it for a finished cache
        return _embed(task, model, fingerprint, split, features, data_root, cfg, backbone, path, key, redo, log)
    finally:
        lock.release()


def _stale_path(path: Path) -> Path:
    return path.with_name(path.name + ".stale")


def _remove_leftovers(path: Path, kind: str) -> None:
    """What a killed run can leave beside a cache file: batches already assembled into a complete file,
    a half-written ``.h5.tmp``, the ``.stale`` file a refresh copies from. Called under the cache's lock."""
    if is_complete(path, kind):
        shutil.rmtree(path.with_suffix(".partial"), ignore_errors=True)
        _stale_path(path).unlink(missing_ok=True)
    path.with_suffix(".h5.tmp").unlink(missing_ok=True)
    for tmp in path.parent.glob(glob.escape(path.name) + ".stat.npz.*.tmp.npz"):
        tmp.unlink(missing_ok=True)


def _stale(task: Task, split: str, features: FeatureSet, data_root: str | Path,
           path: Path) -> tuple[str, np.ndarray | None] | None:
    """``None`` when the complete cache ``path`` is provably made of the data on disk now (docs/cache.md,
    "What is checked"); else the line that says why not, and the samples to re-embed (``None``: all).

    Without the data (only the cache kept) there is nothing to compare: the cache is used if its arrays
    are the ones ``predict`` wrote.
    """
    spec = task.dataset
    have_data = (Path(data_root) / spec.root).is_dir()
    with h5py.File(path, "r") as f:
        if not have_data:
            verify_content(f, path)
            return None
        altered = altered_array(f)
        if altered is not None:
            return f"the '{altered}' array of {path} differs from what was written (edited or damaged): " \
                   "re-embedding the split", None
        manifest = Manifest.read(f)
        recorded_listing = f.attrs.get("listing_sha256")
    if manifest is None or recorded_listing is None:
        return f"{path} does not record its source files (written by an older evalkit): re-embedding the split", None
    listing = spec.list_split(data_root, split, check_counts=False)
    if recorded_listing != listing_sha256(listing.ids, listing.labels):
        return f"the samples or labels of {task.name}/{split} differ from those {path} was made from: re-embedding " \
               "the split", None
    root = Path(data_root) / spec.root
    sources = _sources(spec, listing)
    changed = changed_files(manifest, sources, root, path)
    if len(changed) == 0:
        return None
    first = sources.paths[int(changed[0])]
    what = "their samples" if features.samples_independent else "the split"
    return (f"{len(changed)} source file(s) changed since the cache was written (first: {first}): re-embedding {what}",
            sources.samples_of(changed) if features.samples_independent else None)


def _sources(spec: DatasetSpec, listing: SplitListing) -> SourceFiles:
    return SourceFiles.of([spec.sample_files(listing, i) for i in range(len(listing))])


def _embed(task: Task, model: ModelSpec, fingerprint: str, split: str, features: FeatureSet, data_root: str | Path,
           cfg: EmbedConfig, backbone: _LazyBackbone, path: Path, key: str, redo: np.ndarray | None,
           log: Callable[[str], None]) -> SplitCache:
    """Embed what the split's cache lacks and assemble the file (rank 0); ``redo``: the samples of the
    ``.stale`` complete file to re-embed, the others being copied from it."""
    start = time.perf_counter()
    from evalkit.embed.loop import check_precision, run_predict  # Lightning: only when some split must be embedded

    check_precision(cfg)
    prefix = f"[{model.name}] {task.name}/{split}: "
    spec = task.dataset
    listing = spec.list_split(data_root, split)
    n = features.plan(spec, listing)
    net = backbone.get()
    build_s = backbone.take_build_s()
    features.bind(net)
    partial = PartialCache(path, cfg.batch_size)
    dataset = features.dataset(spec, listing, net.preprocessing, cfg)

    if not is_global_zero():
        run_predict(net, dataset, features, n, partial, cfg, start, build_s)
        return SplitCache(split, path, key, False, time.perf_counter() - start)

    root = Path(data_root) / spec.root
    sources = _sources(spec, listing)
    # Embedded sample -> listing sample -> files; the batches of a changed file's samples are embedded again.
    of_listing = features.listing_index(n)

    def embedded_samples(files: np.ndarray) -> np.ndarray:
        return np.flatnonzero(np.isin(of_listing, sources.samples_of(files)))

    names = [os.path.relpath(p, root) for p in sources.paths]
    before = strict_stat(sources.paths)
    stale = _stale_path(path)
    dropped = partial.check_sources(names, before, embedded_samples)
    if dropped:
        log(prefix + f"{dropped} saved batch(es) hold images that changed since they were embedded: embedding them again")
    if redo is not None and stale.is_file():  # samples whose files are as recorded (checked by _stale) are copied
        with h5py.File(stale, "r") as old:
            partial.seed(old, listing.ids, redo, list(features.dtypes(cfg)))
    hasher = Hasher(sources.paths)
    log(prefix + f"embedding {features.describe(listing)} -> {path}")
    run_predict(net, dataset, features, n, partial, cfg, start, build_s)
    hashes = hasher.result()
    moved = np.flatnonzero((strict_stat(sources.paths) != before).any(axis=1))
    if len(moved):
        partial.drop(embedded_samples(moved))
        raise EvalkitError(f"{len(moved)} source file(s) of {task.name}/{split} changed while being embedded (first: "
                           f"{sources.paths[int(moved[0])]}); rerun the same command to embed them again")
    attrs = {**_attrs(task, model, net, split, fingerprint, listing, features.kind, cfg.precision),
             **features.attrs(spec, listing, net)}
    cost = total_cost(partial.dir, partial.copied())
    if cost is not None:
        attrs[COST_ATTR] = json.dumps(cost)
    skipped = partial.assemble(n, features.dtypes(cfg), attrs, features.per_sample(spec, listing),
                               features.extra(spec, listing),
                               manifest=lambda f: write_manifest(f, sources, root, before, hashes))
    write_stat_record(path, names, before)
    stale.unlink(missing_ok=True)
    if len(skipped):
        log(prefix + f"left out {len(skipped)} unreadable image(s), first: {listing.ids[int(skipped[0])]}")
    return SplitCache(split, path, key, False, time.perf_counter() - start)


def _attrs(task: Task, model: ModelSpec, backbone: Backbone, split: str, fingerprint: str,
           listing: SplitListing, kind: str, precision: str) -> dict[str, Any]:
    return {
        "precision": precision,
        "preprocessing": json.dumps(backbone.preprocessing.as_dict()),
        "kind": kind,
        "model": model.name,
        "model_fingerprint": fingerprint,
        "weights_sha256": weights_sha256(backbone),
        "dataset": task.name,
        "dataset_config": task.dataset.identity(),
        "listing_sha256": listing_sha256(listing.ids, listing.labels),
        "split": split,
        "transform": json.dumps(backbone.preprocessing.as_dict()),
        "classes": json.dumps(task.dataset.classes),
    }
