"""What the cache's source-file checks cost (docs/cache.md, "What is checked"), on N real tiles.

Writes N tiles (copies of the tiles under --source, each a distinct file) to a scratch folder,
then times, side by side in one run:

- ``stat``: the fast path, the strict stat of every file (what a warm-cache ``predict`` pays);
- ``sha256``: hashing every file's bytes, as ``predict`` does while embedding and as a clone's
  first reuse does (page cache warm: the files were just written, as they are just decoded);
- ``clone check``: :func:`changed_files` on a fresh copy of the data (every file hashed once),
  then again (the renewed stat record: the fast path).

    python benchmarks/cache_hashing.py --n 100000 --source ../shared/data/pcam_subset
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np

from evalkit.data.base import IMAGE_EXTENSIONS
from evalkit.embed.manifest import Manifest, SourceFiles, changed_files, file_sha256, strict_stat, write_stat_record
from common import timed


def _tiles(source: Path) -> list[bytes]:
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise SystemExit(f"no tiles under {source}")
    return [p.read_bytes() for p in files]


def _write(folder: Path, tiles: list[bytes], n: int) -> list[Path]:
    paths = []
    for i in range(n):
        sub = folder / f"{i // 1000:04d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        path = sub / f"tile-{i:07d}.png"
        path.write_bytes(tiles[i % len(tiles)])
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000, help="tiles to write and check")
    parser.add_argument("--source", type=Path, default=Path("data/crc_demo"), help="folder of real tiles to copy")
    parser.add_argument("--scratch", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    tiles = _tiles(args.source)
    scratch = Path(tempfile.mkdtemp(dir=args.scratch))
    try:
        data = scratch / "data"
        paths, write_s = timed(lambda: _write(data, tiles, args.n))
        total = sum(p.stat().st_size for p in paths)
        print(f"{args.n} tiles, {total / 1e9:.2f} GB ({total / args.n / 1e3:.1f} kB each) from {args.source}; "
              f"written in {write_s:.1f} s")

        stat, stat_s = timed(lambda: strict_stat(paths))
        hashes, hash_s = timed(lambda: [file_sha256(p) for p in paths])
        _, raw_s = timed(lambda: hashlib.sha256(b"\0" * total).digest() if total < 4e9 else None)
        print(f"stat (fast path)   {stat_s:7.2f} s  {args.n / stat_s:10.0f} files/s")
        print(f"sha256 of files    {hash_s:7.2f} s  {total / hash_s / 1e9:10.2f} GB/s  {args.n / hash_s:8.0f} files/s")
        print(f"sha256 in memory   {raw_s:7.2f} s  {total / raw_s / 1e9:10.2f} GB/s  (one buffer: the hash alone)")

        sources = SourceFiles.of([(p,) for p in paths])
        manifest = Manifest([str(p.relative_to(data)) for p in paths], stat[:, 0], stat[:, 1], hashes,
                            sources.sample_file)
        clone = scratch / "clone"
        shutil.copytree(data, clone)
        clone_paths = [clone / p.relative_to(data) for p in paths]
        cache = scratch / "train-rows-0000000000000000.h5"
        write_stat_record(cache, manifest.paths, stat)
        clone_sources = SourceFiles.of([(p,) for p in clone_paths])
        changed, first_s = timed(lambda: changed_files(manifest, clone_sources, clone, cache))
        assert len(changed) == 0
        changed, again_s = timed(lambda: changed_files(manifest, clone_sources, clone, cache))
        assert len(changed) == 0
        print(f"clone, first check {first_s:7.2f} s  (every file hashed once)")
        print(f"clone, next checks {again_s:7.2f} s  (stat record renewed: the fast path)")
        np.testing.assert_array_equal(strict_stat(clone_paths)[:, 0], stat[:, 0])
    finally:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
