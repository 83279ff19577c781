"""What a cache was made from: every source file's size, mtime and SHA-256, and a checksum of what it holds.

A cache is reused only when its inputs are provably the ones it was made from (docs/cache.md,
"What is checked"):

- the listing (sample ids and labels, in order) hashes to the recorded ``listing_sha256``;
- every source file has the recorded size and mtime (the fast path: a stat per file), or, where
  the stat differs (a clone, ``rsync`` without ``-t``), the recorded SHA-256 of its bytes;
- the embedded arrays hash to the recorded ``content_sha256`` (an edited cache is caught).

While ``predict`` embeds, the source files are hashed in a background thread, and their strict
stat (size, mtime, ctime, inode) is taken before and after: a file that changed during the run
is re-embedded by the next run, never recorded with a hash of other bytes than were embedded.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from evalkit.errors import EvalkitError

GROUP = "source_files"  # the manifest's group in a cache file
_READ_BYTES = 1 << 20


@dataclass
class SourceFiles:
    """The distinct files a split's samples are read from, and which file(s) each sample reads."""

    paths: list[Path]
    sample_file: np.ndarray  # [n, k] int64: the file indices of each embedded sample (-1 pads)

    @classmethod
    def of(cls, per_sample: Sequence[Sequence[Path]]) -> SourceFiles:
        index: dict[Path, int] = {}
        width = max((len(files) for files in per_sample), default=1)
        sample_file = np.full((len(per_sample), width), -1, dtype=np.int64)
        for i, files in enumerate(per_sample):
            for j, path in enumerate(files):
                sample_file[i, j] = index.setdefault(Path(path), len(index))
        return cls(list(index), sample_file)

    def samples_of(self, files: np.ndarray) -> np.ndarray:
        """Sorted indices of the samples that read any of ``files`` (file indices)."""
        hit = np.isin(self.sample_file, files).any(axis=1)
        return np.flatnonzero(hit)


def listing_sha256(ids: Sequence[str], labels: np.ndarray) -> str:
    """The samples and their labels, in order: what the files' bytes do not say."""
    h = hashlib.sha256()
    for sample_id, label in zip(ids, np.asarray(labels).tolist()):
        h.update(f"{sample_id}\t{label}\n".encode())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ_BYTES):
            h.update(chunk)
    return h.hexdigest()


def strict_stat(paths: Sequence[Path]) -> np.ndarray:
    """[F, 4] int64: size, mtime, ctime (ns) and inode; a rewrite or replacement changes at least one."""
    out = np.empty((len(paths), 4), dtype=np.int64)
    for i, path in enumerate(paths):
        st = os.stat(path)
        out[i] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    return out


class Hasher:
    """SHA-256 of every source file, computed in a background thread while the forward passes run."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalkit-hash")
        self._future: Future = self._pool.submit(lambda: [file_sha256(p) for p in paths])

    def result(self) -> list[str]:
        try:
            return self._future.result()
        finally:
            self._pool.shutdown()


def write_manifest(f: h5py.File, sources: SourceFiles, root: Path, stat: np.ndarray, sha256: list[str]) -> None:
    """Store the manifest in ``f``: paths relative to the dataset root, size, mtime and SHA-256 of each file."""
    group = f.create_group(GROUP)
    names = [os.path.relpath(p, root) for p in sources.paths]
    group.create_dataset("path", data=np.asarray(names, dtype=object), dtype=h5py.string_dtype("utf-8"))
    group.create_dataset("size", data=stat[:, 0])
    group.create_dataset("mtime_ns", data=stat[:, 1])
    group.create_dataset("sha256", data=np.asarray(sha256, dtype="S64"))
    group.create_dataset("sample_file", data=sources.sample_file)


@dataclass
class Manifest:
    """A cache file's record of its sources, read back."""

    paths: list[str]
    size: np.ndarray
    mtime_ns: np.ndarray
    sha256: list[str]
    sample_file: np.ndarray

    @classmethod
    def read(cls, f: h5py.File) -> Manifest | None:
        if GROUP not in f:
            return None
        g = f[GROUP]
        return cls([p.decode() if isinstance(p, bytes) else p for p in g["path"][...]], g["size"][...],
                   g["mtime_ns"][...], [h.decode() for h in g["sha256"][...]], g["sample_file"][...])


def stat_record_path(cache: Path) -> Path:
    """The cache's local record of its files' strict stat when last proven unchanged (beside the cache)."""
    return cache.with_name(cache.name + ".stat.npz")


def write_stat_record(cache: Path, names: list[str], stat: np.ndarray) -> None:
    path = stat_record_path(cache)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, names=np.asarray(names, dtype=str), stat=stat)
    os.replace(tmp, path)


def _read_stat_record(cache: Path, names: list[str]) -> np.ndarray | None:
    try:
        with np.load(stat_record_path(cache)) as record:
            return record["stat"] if record["names"].tolist() == names else None
    except (OSError, ValueError, KeyError):
        return None


def changed_files(manifest: Manifest, sources: SourceFiles, root: Path, cache: Path) -> np.ndarray:
    """Indices (into ``sources.paths``) of the files whose bytes differ from the ones ``cache`` was made from.

    The fast path reads no file: one whose size, mtime, ctime and inode are those recorded beside the cache
    when it was last proven unchanged on this machine is unchanged (a replacement or rewrite always moves
    ctime, which no copying tool can set). A file of another size has changed. Any other file (a clone, an
    ``rsync``, a ``touch``) is hashed and compared with the recorded SHA-256; when all match, the record is
    renewed, so the next run takes the fast path again.
    """
    names = [os.path.relpath(p, root) for p in sources.paths]
    if names != manifest.paths or not np.array_equal(sources.sample_file, manifest.sample_file):
        return np.arange(len(sources.paths))
    now = strict_stat(sources.paths)
    known = _read_stat_record(cache, names)
    proven = (known == now).all(axis=1) if known is not None and known.shape == now.shape \
        else np.zeros(len(now), dtype=bool)
    resized = now[:, 0] != manifest.size
    to_hash = np.flatnonzero(~proven & ~resized).tolist()
    changed = sorted(np.flatnonzero(resized).tolist() +
                     [i for i in to_hash if file_sha256(sources.paths[i]) != manifest.sha256[i]])
    if not changed and to_hash:
        write_stat_record(cache, names, now)
    return np.asarray(changed, dtype=np.int64)


# --- the checksum of the embedded arrays -------------------------------------------------------------

CONTENT_ATTR = "content_sha256"


def dataset_sha256(dataset: h5py.Dataset) -> str:
    """SHA-256 of a dataset's shape, type and values in C order, read about 1 MB at a time."""
    h = hashlib.sha256()
    h.update(json.dumps([list(dataset.shape), dataset.dtype.str]).encode())
    if h5py.check_string_dtype(dataset.dtype) is not None:  # sample ids
        for value in dataset.asstr()[...].ravel().tolist():
            h.update(value.encode() + b"\0")
    elif dataset.shape and dataset.shape[0]:
        row_bytes = max(1, int(np.prod(dataset.shape[1:], dtype=np.int64)) * dataset.dtype.itemsize)
        step = max(1, _READ_BYTES // row_bytes)
        for start in range(0, dataset.shape[0], step):
            h.update(np.ascontiguousarray(dataset[start:start + step]).tobytes())
    else:
        h.update(np.ascontiguousarray(dataset[()]).tobytes())
    return h.hexdigest()


def _checked_datasets(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name)
                 if isinstance(obj, h5py.Dataset) and not name.startswith(GROUP + "/") else None)
    return sorted(names)


def content_checksums(f: h5py.File) -> str:
    """The ``content_sha256`` attribute: a JSON object of every dataset's SHA-256 (the manifest aside)."""
    return json.dumps({name: dataset_sha256(f[name]) for name in _checked_datasets(f)}, sort_keys=True)


def altered_array(f: h5py.File) -> str | None:
    """The first array of ``f`` that differs from its recorded checksum, else ``None``.

    A file written outside evalkit (bring-your-own embeddings) records none and is not checked.
    """
    raw = f.attrs.get(CONTENT_ATTR)
    for name, digest in (json.loads(raw) if raw else {}).items():
        if name not in f or dataset_sha256(f[name]) != digest:
            return name
    return None


def verify_content(f: h5py.File, path: Path) -> None:
    """Refuse, in one line, a cache file whose arrays were changed after ``predict`` wrote them."""
    name = altered_array(f)
    if name is not None:
        raise EvalkitError(f"{path}: its '{name}' array differs from what `evalkit predict` wrote (edited or "
                           "damaged); delete the file and rerun `evalkit predict` to regenerate it")
