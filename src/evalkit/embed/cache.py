"""The HDF5 embedding cache (DESIGN.md): one content-addressed file per (model, dataset, split).

Writing is crash-safe in two steps. While the forward passes run, every finished batch
is saved as its own small file under ``<name>.partial/`` (written to a temporary name,
then renamed, so a killed process leaves only whole batches). When every batch is
there, they are streamed into ``<name>.h5.tmp``, which is renamed to ``<name>.h5``.
A reader therefore never sees a half-written cache, and a restarted run redoes only
the batches that were not saved, with the same batch boundaries, so its file equals
an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from evalkit import __version__
from evalkit.errors import EvalkitError

SCHEMA_VERSION = 1
REQUIRED_DATASETS = ("embeddings", "labels", "ids")
REQUIRED_ATTRS = ("model", "model_fingerprint", "dataset", "split", "transform", "complete", "evalkit_version")
_BATCH_FILE = re.compile(r"^batch-(\d+)\.npz$")


def cache_key(model_fingerprint: str, dataset_identity: str, split: str) -> str:
    """Same weights, transform, data and split -> same key."""
    blob = json.dumps({"schema": SCHEMA_VERSION, "model": model_fingerprint, "dataset": dataset_identity,
                       "split": split}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_path(embeddings_root: str | Path, task: str, model: str, split: str, key: str) -> Path:
    return Path(embeddings_root) / task / model / f"{split}-{key[:16]}.h5"


def split_cache_file(embeddings_root: str | Path, task: str, model: str, model_fingerprint: str,
                     dataset_identity: str, split: str) -> tuple[str, Path]:
    """The key and path of one split's cache file: the one recipe that ``predict`` and ``fit`` share."""
    key = cache_key(model_fingerprint, dataset_identity, split)
    return key, cache_path(embeddings_root, task, model, split, key)


@dataclass
class Embeddings:
    """A split's cached embeddings, held as tensors for head fitting."""

    embeddings: torch.Tensor  # [N, D] float32
    labels: torch.Tensor  # [N] int64
    ids: list[str]
    attrs: dict[str, Any]
    path: Path

    @property
    def classes(self) -> list[str] | None:
        raw = self.attrs.get("classes")
        return json.loads(raw) if raw else None


def _schema_problem(f: h5py.File) -> str | None:
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
    """Read and check a cache file; anything that is not a complete evalkit cache is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise EvalkitError(f"embeddings file not found: {path}; run `evalkit predict` with the same task and model first")
    try:
        with h5py.File(path, "r") as f:
            problem = _schema_problem(f)
            if problem:
                raise EvalkitError(f"{path} is not an evalkit embedding cache ({problem}); point at a file written by `evalkit predict`")
            if not bool(f.attrs["complete"]):
                raise EvalkitError(f"{path} is incomplete; rerun `evalkit predict` to finish it")
            embeddings = torch.from_numpy(f["embeddings"][...].astype(np.float32, copy=False))
            labels = torch.from_numpy(f["labels"][...].astype(np.int64, copy=False))
            ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f["ids"][...]]
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    except OSError as exc:
        raise EvalkitError(f"cannot read {path} as HDF5 ({exc}); point at a cache file written by `evalkit predict` "
                           "(a damaged cache under EMBEDDINGS_ROOT can be deleted and re-made)") from None
    return Embeddings(embeddings, labels, ids, attrs, path)


def is_complete(path: Path) -> bool:
    """True for a whole cache file; a file of another schema is an error, never overwritten."""
    if not path.is_file():
        return False
    read_embeddings(path)  # raises on a foreign or broken file
    return True


class PartialCache:
    """The batches already embedded for one cache file, saved one file per batch."""

    def __init__(self, final_path: Path, batch_size: int) -> None:
        self.final_path = final_path
        self.dir = final_path.with_suffix(".partial")
        meta = self.dir / "meta.json"
        if meta.is_file():  # resume with the batch boundaries of the first run
            batch_size = json.loads(meta.read_text())["batch_size"]
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(meta, json.dumps({"batch_size": batch_size}))
        self.batch_size = batch_size

    def done_batches(self) -> set[int]:
        return {int(m.group(1)) for p in self.dir.iterdir() if (m := _BATCH_FILE.match(p.name))}

    def write_batch(self, indices: np.ndarray, embeddings: np.ndarray, readable: np.ndarray | None = None) -> None:
        """Save one batch; rows marked unreadable are recorded as skipped, not stored."""
        batch_id = int(indices[0]) // self.batch_size
        keep = np.ones(len(indices), dtype=bool) if readable is None else readable.astype(bool)
        tmp = self.dir / f"batch-{batch_id:08d}.{os.getpid()}.tmp.npz"  # ranks may write the same batch
        np.savez(tmp, indices=indices[keep].astype(np.int64), embeddings=embeddings[keep],
                 skipped=indices[~keep].astype(np.int64))
        os.replace(tmp, self.dir / f"batch-{batch_id:08d}.npz")

    def assemble(self, ids: list[str], labels: np.ndarray, attrs: dict[str, Any], dtype: str = "float32") -> list[str]:
        """Stream the batch files into the final HDF5 file (via a temporary name), then drop them.

        Returns the ids of the samples left out as unreadable (recorded in ``skipped_ids``).
        """
        n = len(ids)
        batch_files = sorted(p for p in self.dir.iterdir() if _BATCH_FILE.match(p.name))
        skipped = np.sort(np.concatenate([np.load(f)["skipped"] for f in batch_files] or [np.zeros(0, np.int64)]))
        rows = n - len(skipped)
        if rows == 0:
            raise EvalkitError(f"none of the {n} images of {self.final_path.stem} could be read; check the data")
        seen = np.zeros(n, dtype=bool)
        seen[skipped] = True
        tmp = self.final_path.with_suffix(".h5.tmp")
        with h5py.File(tmp, "w") as f:
            dset = None
            for file in batch_files:
                with np.load(file) as batch:
                    indices, emb = batch["indices"], batch["embeddings"]
                if len(indices) == 0:
                    continue
                if dset is None:
                    dim = emb.shape[1]
                    dset = f.create_dataset("embeddings", shape=(rows, dim), dtype=dtype,
                                            chunks=(min(rows, max(1, 2**20 // (dim * 4))), dim))
                # A sample's row is its index minus the skipped samples before it.
                positions = indices - np.searchsorted(skipped, indices)
                lo, hi = int(positions[0]), int(positions[-1]) + 1
                if hi - lo == len(positions) and np.all(np.diff(positions) == 1):
                    dset[lo:hi] = emb
                else:
                    order = np.argsort(positions)
                    dset[positions[order]] = emb[order]
                seen[indices] = True
            if dset is None or not seen.all():
                missing = n - int(seen.sum()) if dset is not None else n
                raise EvalkitError(f"{missing} of {n} embeddings missing in {self.dir}; rerun `evalkit predict` to finish")
            keep = np.ones(n, dtype=bool)
            keep[skipped] = False
            f.create_dataset("labels", data=labels[keep].astype(np.int64))
            kept_ids = [i for i, k in zip(ids, keep) if k]
            f.create_dataset("ids", data=np.asarray(kept_ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
            skipped_ids = [ids[i] for i in skipped.tolist()]
            for key, value in {**attrs, "evalkit_version": __version__, "complete": True,
                               "skipped_ids": json.dumps(skipped_ids)}.items():
                f.attrs[key] = value
        os.replace(tmp, self.final_path)
        shutil.rmtree(self.dir)
        return skipped_ids


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
