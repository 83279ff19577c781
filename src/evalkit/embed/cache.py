"""The feature cache (DESIGN.md, "The embedding cache"): one content-addressed HDF5 file per
(model, dataset, split, feature kind), written by one writer for every kind of feature.

A kind is what an evaluation asks ``predict`` to embed (:mod:`evalkit.embed.features`):
pooled rows (``embeddings`` [N, D]) for the probes, feature maps of a crop pool or a test
grid (``features/<i>`` [P, C, h, w]) for segmentation, later slide bags. Whatever the kind,
writing is crash-safe in two steps. While the forward passes run, every finished batch is
saved as its own small file under ``<name>.partial/`` (written to a temporary name, then
renamed, so a killed process leaves only whole batches). When every batch is there they are
streamed into ``<name>.h5.tmp``, which is renamed to ``<name>.h5``. A reader therefore
never sees a half-written cache, and a restarted run redoes only the batches that were not
saved, with the same batch boundaries, so its file equals an uninterrupted run's.

Every file carries ``schema_version`` and ``kind``; a file of another schema is refused in
one line that says how to regenerate it, never read as if it were current.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import torch

from evalkit import __version__
from evalkit.embed.manifest import CONTENT_ATTR, content_checksums, verify_content
from evalkit.errors import EvalkitError
from evalkit.paths import checked_name, inside

SCHEMA_VERSION = 2
ROWS = "rows"  # the kind of the pooled-embedding cache that the probes read
REQUIRED_DATASETS = ("embeddings", "labels", "ids")
REQUIRED_ATTRS = ("schema_version", "kind", "model", "model_fingerprint", "dataset", "split", "transform", "complete",
                  "evalkit_version")
FAULT_HOOK = "EVALKIT_FAULT_AFTER_BATCHES"  # tests: SIGKILL this process after it saved that many batches
_BATCH_FILE = re.compile(r"^batch-(\d+)\.npz$")
_ARRAY_PREFIX = "a:"  # batch-file keys of the embedded arrays, beside "indices" and "skipped"
_CHUNK_BYTES = 1 << 20
_SOURCES_FILE = "sources.npz"  # in the .partial folder: the source files' state when the last run began
_COPIED_FILE = "copied.json"  # in the .partial folder: how many samples were copied from the cache being refreshed


def cache_key(model_fingerprint: str, dataset_identity: str, split: str, settings: dict[str, Any] | None = None) -> str:
    """Same weights, transform, data, split and feature settings -> same key."""
    blob = json.dumps({"schema": SCHEMA_VERSION, "model": model_fingerprint, "dataset": dataset_identity,
                       "split": split, "settings": settings or {}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_path(embeddings_root: str | Path, task: str, model: str, split: str, key: str, kind: str = ROWS) -> Path:
    return inside(embeddings_root, task, model, f"{checked_name(split, 'split')}-{kind}-{key[:16]}.h5")


@dataclass
class Embeddings:
    """A split's cached pooled rows, held as tensors for head fitting."""

    embeddings: torch.Tensor  # [N, D] float32
    labels: torch.Tensor  # [N] int64
    ids: list[str]
    attrs: dict[str, Any]
    path: Path

    @property
    def classes(self) -> list[str] | None:
        raw = self.attrs.get("classes")
        return json.loads(raw) if raw else None


def check_schema(f: h5py.File, path: Path, kind: str) -> None:
    """Refuse, in one line, a file that is not a complete cache of this schema and kind."""
    version = f.attrs.get("schema_version")
    if "model_fingerprint" in f.attrs and version is None:
        version = 1  # evalkit before schema versions
    if version is not None and int(version) != SCHEMA_VERSION:
        raise EvalkitError(f"{path} is a feature cache of schema {int(version)}; this evalkit reads schema "
                           f"{SCHEMA_VERSION}: delete it and rerun `evalkit predict` (same task and model) to regenerate "
                           "it, or, for embeddings written elsewhere, set its attributes schema_version=2 and "
                           "kind='rows' (docs/cache.md)")
    found = f.attrs.get("kind")
    if version is None or found is None:
        raise EvalkitError(f"{path} is not an evalkit feature cache (no schema_version/kind attribute); point at a "
                           "file written by `evalkit predict`")
    if found != kind:
        raise EvalkitError(f"{path} holds '{found}' features, not the '{kind}' this evaluation reads; point at a file "
                           "written by `evalkit predict` for this evaluation")
    if not bool(f.attrs.get("complete")):
        raise EvalkitError(f"{path} is incomplete; rerun `evalkit predict` to finish it")


def open_cache(path: str | Path, kind: str, verify: bool = False) -> h5py.File:
    """Open a complete cache file of ``kind`` for reading; anything else is a one-line error.

    With ``verify`` the arrays are checked against the checksums ``predict`` stored (reading them all once).
    """
    path = Path(path)
    if not path.is_file():
        raise EvalkitError(f"feature cache not found: {path}; run `evalkit predict` with the same task and model first")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise EvalkitError(f"cannot read {path} as HDF5 ({exc}); point at a cache file written by `evalkit predict` "
                           "(a damaged cache under EMBEDDINGS_ROOT can be deleted and re-made)") from None
    try:
        check_schema(f, path, kind)
        if verify:
            verify_content(f, path)
    except EvalkitError:
        f.close()
        raise
    return f


def plain_attrs(f: h5py.File) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}


def _rows_problem(f: h5py.File) -> str | None:
    for name in REQUIRED_DATASETS:
        if name not in f:
            return f"no '{name}' dataset"
    for name in REQUIRED_ATTRS:
        if name not in f.attrs:
            return f"no '{name}' attribute"
    n = f["embeddings"].shape[0]
    if f["embeddings"].ndim != 2 or f["labels"].shape != (n,) or f["ids"].shape != (n,):
        return "embeddings, labels and ids disagree in shape"
    return None


def read_embeddings(path: str | Path) -> Embeddings:
    """Read and check a pooled-rows cache file; anything that is not a complete one is a one-line error."""
    path = Path(path)
    with open_cache(path, ROWS, verify=True) as f:
        problem = _rows_problem(f)
        if problem:
            raise EvalkitError(f"{path} is not an evalkit embedding cache ({problem}); point at a file written by "
                               "`evalkit predict`")
        embeddings = _read_float32(f["embeddings"])
        labels = torch.from_numpy(f["labels"][...].astype(np.int64, copy=False))
        ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f["ids"][...]]
        attrs = plain_attrs(f)
    return Embeddings(embeddings, labels, ids, attrs, path)


def _read_float32(dataset: h5py.Dataset) -> torch.Tensor:
    """The dataset as one float32 tensor, read straight into it: HDF5 converts a float16 (or float64)
    cache chunk by chunk, so no second full-size array (a stored-type copy, then ``astype``) is ever held."""
    out = torch.empty(dataset.shape, dtype=torch.float32)
    if out.numel():
        dataset.read_direct(out.numpy())
    return out


def is_complete(path: Path, kind: str = ROWS) -> bool:
    """True for a whole cache file; a file of another schema or kind is an error, never overwritten."""
    if not path.is_file():
        return False
    open_cache(path, kind).close()
    return True


def _fault_hook() -> int | None:
    value = os.environ.get(FAULT_HOOK, "").strip()
    return int(value) if value else None


class PartialCache:
    """The batches already embedded for one cache file, saved one file per batch."""

    def __init__(self, final_path: Path, batch_size: int) -> None:
        self.final_path = final_path
        self.dir = final_path.with_suffix(".partial")
        self.saved_here = 0
        self.kill_after = _fault_hook()
        meta = self.dir / "meta.json"
        if meta.is_file():  # resume with the batch boundaries of the first run
            batch_size = json.loads(meta.read_text())["batch_size"]
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(meta, json.dumps({"batch_size": batch_size}))
        self.batch_size = batch_size

    def done_batches(self) -> set[int]:
        return {int(m.group(1)) for p in self.dir.iterdir() if (m := _BATCH_FILE.match(p.name))}

    def drop(self, samples: np.ndarray) -> int:
        """Delete the saved batches that hold any of ``samples``, so they are embedded again; returns how many."""
        batches = set((np.asarray(samples, dtype=np.int64) // self.batch_size).tolist()) & self.done_batches()
        for k in batches:
            (self.dir / f"batch-{k:08d}.npz").unlink(missing_ok=True)
        return len(batches)

    def check_sources(self, names: list[str], stat: np.ndarray, samples_of: Callable[[np.ndarray], np.ndarray]) -> int:
        """Drop the saved batches whose source files changed since the run that embedded them began, then
        record the files' state now (``stat``: :func:`evalkit.embed.manifest.strict_stat` of ``names``).

        ``samples_of`` maps file indices to the indices of the samples read from them. Batches saved by a run
        that recorded nothing cannot be vouched for and are all dropped. Returns the number dropped.
        """
        record = self.dir / _SOURCES_FILE
        changed: np.ndarray | None = None
        if record.is_file():
            with np.load(record) as old:
                if old["names"].tolist() == names and old["stat"].shape == stat.shape:
                    changed = np.flatnonzero((old["stat"] != stat).any(axis=1))
        dropped = 0
        if self.done_batches():
            dropped = self.drop(samples_of(np.arange(len(names)) if changed is None else changed))
        tmp = self.dir / f"{_SOURCES_FILE}.{os.getpid()}.tmp.npz"
        np.savez(tmp, names=np.asarray(names, dtype=str), stat=stat)
        os.replace(tmp, record)
        return dropped

    def seed(self, old: h5py.File, ids: list[str], redo: np.ndarray, names: list[str]) -> int:
        """Copy from the complete pooled-rows cache ``old`` (made from the same listing ``ids``) every batch
        that holds none of the samples ``redo``; returns the number of samples copied."""
        n = len(ids)
        position = {sample: i for i, sample in enumerate(ids)}
        skipped = np.sort(np.asarray([position[s] for s in json.loads(old.attrs.get("skipped_ids") or "[]")],
                                     dtype=np.int64))
        stale = set((np.asarray(redo, dtype=np.int64) // self.batch_size).tolist())
        copied = 0
        for k in range(math.ceil(n / self.batch_size)):
            if k in stale:
                continue
            indices = np.arange(k * self.batch_size, min(n, (k + 1) * self.batch_size))
            readable = ~np.isin(indices, skipped)
            rows = indices[readable] - np.searchsorted(skipped, indices[readable])
            arrays = {name: old[name][rows[0]:rows[-1] + 1] if len(rows) else
                      np.zeros((0, *old[name].shape[1:]), old[name].dtype) for name in names}
            self._save(k, indices, arrays, readable)
            copied += len(indices)
        _atomic_write_text(self.dir / _COPIED_FILE, json.dumps({"samples": copied}))  # for a resumed run's record
        return copied

    def copied(self) -> int:
        """The samples :meth:`seed` copied into this folder (not embedded again, so not timed)."""
        path = self.dir / _COPIED_FILE
        return int(json.loads(path.read_text())["samples"]) if path.is_file() else 0

    def write_batch(self, indices: np.ndarray, arrays: dict[str, np.ndarray] | np.ndarray,
                    readable: np.ndarray | None = None) -> None:
        """Save one batch of named arrays (a bare array is ``embeddings``); rows marked unreadable
        are recorded as skipped, not stored."""
        if not isinstance(arrays, dict):
            arrays = {"embeddings": arrays}
        keep = np.ones(len(indices), dtype=bool) if readable is None else readable.astype(bool)
        self._save(int(indices[0]) // self.batch_size, indices, {name: value[keep] for name, value in arrays.items()},
                   keep)
        self.saved_here += 1
        if self.kill_after is not None and self.saved_here >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # a deterministic kill point for the resume tests

    def _save(self, batch_id: int, indices: np.ndarray, kept: dict[str, np.ndarray], keep: np.ndarray) -> None:
        """One batch file: the kept samples' arrays, and which samples were kept or skipped."""
        tmp = self.dir / f"batch-{batch_id:08d}.{os.getpid()}.tmp.npz"  # ranks may write the same batch
        np.savez(tmp, indices=indices[keep].astype(np.int64), skipped=indices[~keep].astype(np.int64),
                 **{_ARRAY_PREFIX + name: value for name, value in kept.items()})
        os.replace(tmp, self.dir / f"batch-{batch_id:08d}.npz")

    def assemble(self, n: int, dtypes: dict[str, str], attrs: dict[str, Any],
                 per_sample: dict[str, np.ndarray] | None = None,
                 extra: dict[str, np.ndarray] | None = None,
                 manifest: Callable[[h5py.File], None] | None = None) -> np.ndarray:
        """Stream the batch files into the final HDF5 file (via a temporary name), then drop them.

        ``dtypes`` names the embedded arrays and their storage type; ``per_sample`` arrays (one
        entry per sample: labels, ids) lose the skipped samples' entries as the embedded arrays
        do (their ``ids`` are recorded in the ``skipped_ids`` attribute); ``extra`` arrays are written
        as they are; ``manifest`` writes the record of the source files. Every array's checksum is
        stored (``content_sha256``). Returns the indices of the skipped samples.
        """
        batch_files = sorted(p for p in self.dir.iterdir() if _BATCH_FILE.match(p.name))
        skipped = np.sort(np.concatenate([np.load(f)["skipped"] for f in batch_files] or [np.zeros(0, np.int64)]))
        rows = n - len(skipped)
        if rows == 0:
            raise EvalkitError(f"none of the {n} images of {self.final_path.stem} could be read; check the data")
        seen = np.zeros(n, dtype=bool)
        seen[skipped] = True
        tmp = self.final_path.with_suffix(".h5.tmp")
        with h5py.File(tmp, "w") as f:
            datasets: dict[str, h5py.Dataset] = {}
            for file in batch_files:
                with np.load(file) as batch:
                    indices = batch["indices"]
                    values = {name: batch[_ARRAY_PREFIX + name] for name in dtypes}
                if len(indices) == 0:
                    continue
                if not datasets:
                    datasets = {name: _create(f, name, rows, value.shape[1:], dtypes[name])
                                for name, value in values.items()}
                # A sample's row is its index minus the skipped samples before it.
                positions = indices - np.searchsorted(skipped, indices)
                lo, hi = int(positions[0]), int(positions[-1]) + 1
                contiguous = hi - lo == len(positions) and bool(np.all(np.diff(positions) == 1))
                order = None if contiguous else np.argsort(positions)
                for name, value in values.items():
                    if contiguous:
                        datasets[name][lo:hi] = value
                    else:
                        datasets[name][positions[order]] = value[order]
                seen[indices] = True
            if not datasets or not seen.all():
                missing = n - int(seen.sum()) if datasets else n
                raise EvalkitError(f"{missing} of {n} embeddings missing in {self.dir}; rerun `evalkit predict` to finish")
            keep = np.ones(n, dtype=bool)
            keep[skipped] = False
            for name, value in (per_sample or {}).items():
                _write_array(f, name, np.asarray(value)[keep])
            for name, value in (extra or {}).items():
                _write_array(f, name, np.asarray(value), compress=True)
            ids = (per_sample or {}).get("ids")
            skipped_ids = [str(ids[i]) for i in skipped.tolist()] if ids is not None else []
            if manifest is not None:
                manifest(f)
            f.attrs.update({**attrs, "schema_version": SCHEMA_VERSION, "evalkit_version": __version__,
                            "skipped_ids": json.dumps(skipped_ids), CONTENT_ATTR: content_checksums(f),
                            "complete": True})
        os.replace(tmp, self.final_path)
        shutil.rmtree(self.dir)
        return skipped


def _create(f: h5py.File, name: str, rows: int, shape: tuple[int, ...], dtype: str) -> h5py.Dataset:
    """An embedded array's dataset, chunked about 1 MB at a time along the samples."""
    row_bytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    chunk_rows = max(1, min(rows, _CHUNK_BYTES // max(1, row_bytes)))
    return f.create_dataset(name, shape=(rows, *shape), dtype=dtype, chunks=(chunk_rows, *shape))


def _write_array(f: h5py.File, name: str, value: np.ndarray, compress: bool = False) -> None:
    if value.dtype == object or value.dtype.kind == "U":  # sample ids
        f.create_dataset(name, data=value.astype(object), dtype=h5py.string_dtype("utf-8"))
    else:
        f.create_dataset(name, data=value, compression="gzip" if compress and value.size > 4096 else None)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
