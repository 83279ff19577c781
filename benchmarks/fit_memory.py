"""Peak memory of ``evalkit fit`` against the embeddings it reads, on synthetic cache files.

Writes a train and a val rows cache file (the bring-your-own schema of docs/cache.md, plus the
``content_sha256`` checksums evalkit's own cache writer stores, computed by evalkit's function,
so that ``fit`` verifies them as it verifies ``predict``'s files), runs
``evalkit fit --config configs/tasks/precomputed.yaml`` in a subprocess and reads the peak RSS
of that process from the kernel (``os.wait4``). A 1,000-row fit in the same way gives the fixed
part: the interpreter, torch and the other libraries; ``import torch`` alone, measured the same
way, says how much of that is torch's (about 0.52 GB with a CUDA build of torch, whose shared
libraries and start-up allocations are resident whether or not a GPU is used).

Target: peak RSS <= 1.3 x the embeddings (train + val) held as float32.

    .venv/bin/python benchmarks/fit_memory.py                     # 262,144 x 1,536 (PCam at ViT-g width), ~2 GB on disk
    .venv/bin/python benchmarks/fit_memory.py --rows 1048576      # 1M x 1,536: 7 GB on disk, about 5 minutes

The files go to a temporary folder (``--workdir``), deleted at the end unless ``--keep``.
The fit runs ``--head.max_steps`` steps (default 100): memory does not grow with the steps.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from evalkit.embed.manifest import CONTENT_ATTR, content_checksums

ROOT = Path(__file__).resolve().parents[1]
BLOCK_ROWS = 16_384


def write_rows(path: Path, rows: int, dim: int, classes: int, seed: int) -> None:
    """A rows cache file of Gaussian clusters, written block by block (never all in memory)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(classes, dim)).astype(np.float32) / np.sqrt(dim)
    labels = rng.integers(0, classes, rows)
    chunk = max(1, 2**20 // (dim * 4))  # about 1 MB per HDF5 chunk, as evalkit's writer
    with h5py.File(path, "w") as f:
        embeddings = f.create_dataset("embeddings", shape=(rows, dim), dtype="float32", chunks=(min(chunk, rows), dim))
        for lo in range(0, rows, BLOCK_ROWS):
            hi = min(lo + BLOCK_ROWS, rows)
            noise = rng.normal(scale=0.3, size=(hi - lo, dim)).astype(np.float32)
            embeddings[lo:hi] = centres[labels[lo:hi]] + noise
        f.create_dataset("labels", data=labels.astype(np.int64))
        f.create_dataset("ids", data=np.array([f"{path.stem}-{i}" for i in range(rows)], dtype=object),
                         dtype=h5py.string_dtype("utf-8"))
        f.attrs.update({"schema_version": 2, "kind": "rows", "model": "synthetic", "model_fingerprint": "",
                        "dataset": "synthetic", "split": path.stem, "transform": "", "complete": True,
                        "evalkit_version": "external", "classes": json.dumps([f"c{c}" for c in range(classes)])})
        f.attrs[CONTENT_ATTR] = content_checksums(f)


def peak_rss_of_fit(train: Path, val: Path, results: Path, max_steps: int, n_runs: int) -> tuple[float, float, str]:
    """Run ``evalkit fit`` on the two files; its peak RSS in bytes, its wall time and its last line."""
    env = {**os.environ, "TRAIN_H5": str(train), "VAL_H5": str(val)}
    command = [sys.executable, "-m", "evalkit", "fit", "--config", str(ROOT / "configs/tasks/precomputed.yaml"),
               "--head.max_steps", str(max_steps), "--head.n_runs", str(n_runs), "--head.device", "cpu",
               "--results_root", str(results)]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"evalkit fit failed:\n{output}")
    return usage.ru_maxrss * 1024.0, seconds, output.strip().splitlines()[-1]


def peak_rss_of_import_torch() -> float:
    """Peak RSS in bytes of a Python process that only imports torch."""
    process = subprocess.Popen([sys.executable, "-c", "import torch"], cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("python -c 'import torch' failed")
    return usage.ru_maxrss * 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=262_144, help="training rows (PCam: 262,144)")
    parser.add_argument("--val_rows", type=int, default=32_768, help="validation rows (PCam: 32,768)")
    parser.add_argument("--dim", type=int, default=1536, help="embedding width (ViT-g: 1,536)")
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--max_steps", type=int, default=100)
    parser.add_argument("--n_runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None, help="where the files go (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="evalkit_fit_memory_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        for name, rows, seed in (("small_train", 1000, 0), ("small_val", 500, 1),
                                 ("train", args.rows, 0), ("val", args.val_rows, 1)):
            write_rows(workdir / f"{name}.h5", rows, args.dim, args.classes, seed)
        print(f"wrote {args.rows:,} + {args.val_rows:,} rows x {args.dim} in {time.perf_counter() - start:.0f} s "
              f"({sum(p.stat().st_size for p in workdir.glob('*.h5')) / 1e9:.2f} GB in {workdir})")
        inputs = (args.rows + args.val_rows) * args.dim * 4
        torch_only = peak_rss_of_import_torch()
        base, base_s, _ = peak_rss_of_fit(workdir / "small_train.h5", workdir / "small_val.h5", workdir / "res_small",
                                          args.max_steps, args.n_runs)
        peak, seconds, line = peak_rss_of_fit(workdir / "train.h5", workdir / "val.h5", workdir / "res", args.max_steps,
                                              args.n_runs)
        print(line)
        print()
        print("| fit | embeddings as float32 (GB) | peak RSS (GB) | peak / embeddings | wall (s) |")
        print("|---|---:|---:|---:|---:|")
        print(f"| 1,000 + 500 x {args.dim} (fixed part) | {1500 * args.dim * 4 / 1e9:.3f} | {base / 1e9:.2f} | | "
              f"{base_s:.0f} |")
        print(f"| {args.rows:,} + {args.val_rows:,} x {args.dim} | {inputs / 1e9:.2f} | {peak / 1e9:.2f} | "
              f"**{peak / inputs:.2f}x** | {seconds:.0f} |")
        print()
        print(f"peak beyond the embeddings: {(peak - inputs) / 1e9:.2f} GB, of which the fixed part "
              f"{base / 1e9:.2f} GB "
              f"(`import torch` alone: {torch_only / 1e9:.2f} GB, {torch_only / inputs:.2f}x the embeddings); "
              f"target peak <= 1.3x: {'met' if peak <= 1.3 * inputs else 'NOT met'}; without torch's import: "
              f"{(peak - torch_only) / inputs:.2f}x")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
