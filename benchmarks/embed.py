"""Embedding throughput: the embedding stage in steady state beside the bare forward pass, and its start-up.

The stage (`evalkit.embed.embed_task`: list, decode, transform, forward, batch files, HDF5) runs on an image
folder of real H&E tiles (the 41 demo tiles, repeated under new names) with the decode workers and torch
threads it chooses from the cores (or those given). The bare forward is the same model at the same batch
size, precision and torch threads, on the same tiles decoded and transformed into tensors beforehand.

Steady state is batch by batch: for the stage, the time between two batches saved (decode, forward, save:
all of it), read from its own cost meter; for the bare forward, the time of one forward pass. The ratio is
the median bare batch over the median stage batch. Both run in one process, in alternating rounds (bare
forward, then the stage on a fresh folder, then again), because the speed of a shared machine drifts by
10 % within a minute, which is as large as what is measured. The fixed start-up (listing, model build,
Trainer, workers, first batch) is reported apart, as the stage's `embedding_cost` records it: here with torch,
timm and Lightning already imported; `--memory` runs the stage alone in fresh processes, where it includes
importing Lightning and timm. "CPU use" is CPU seconds per wall second
of the timed part (this process only): below the thread count, something else had the cores. The load
average is printed beside every figure.

    .venv/bin/python benchmarks/embed.py                 # ViT-S/16, 4 rounds of 256 images: ~1.5 minutes on 2 cores
    .venv/bin/python benchmarks/embed.py --workers 0 1 2 --threads 2 --rounds 2   # decode workers compared
    .venv/bin/python benchmarks/embed.py --memory        # peak RSS of the stage on N and 2N images, fresh processes
    .venv/bin/python benchmarks/embed.py --precision bf16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from common import load_average

REPO = Path(__file__).resolve().parents[1]
TILES = sorted(p for p in (REPO / "data" / "crc_demo").rglob("*") if p.suffix in (".png", ".tif"))


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _model(name: str):
    from evalkit.models import Preprocessing, TimmModel

    return TimmModel(model_name=name, preprocessing=Preprocessing())


def _folder(root: Path, n: int) -> Path:
    """``root/images/train/<CLASS>/...``: n real tiles (the demo tiles, repeated under new names)."""
    for i in range(n):
        tile = TILES[i % len(TILES)]
        target = root / "images" / "train" / tile.parent.name / f"{i:06d}-{tile.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tile, target)
    return root / "images"


class Bare:
    """The model alone on pre-decoded tensors; ``run`` times one pass over them, batch by batch."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch
        from evalkit.data.base import read_rgb

        self.torch = torch
        self.backbone = _model(args.model).build().eval()
        transform = self.backbone.preprocessing.transform()
        images = torch.stack([transform(read_rgb(TILES[i % len(TILES)])) for i in range(args.images)])
        self.batches = [b for b in images.split(args.batch_size) if len(b) == args.batch_size]
        self.bf16 = args.precision == "bf16"
        self.run(args.threads, warm_up_only=True)

    def run(self, threads: int, warm_up_only: bool = False) -> dict:
        torch = self.torch
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        times, cpu = [], _cpu_s()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            for batch in self.batches[:1] if warm_up_only else self.batches[1:]:
                start = time.perf_counter()
                self.backbone(batch)["cls"].float()
                times.append(time.perf_counter() - start)
        torch.set_num_threads(before)
        return {"batch_s": times, "cpu_use": (_cpu_s() - cpu) / sum(times), "threads": threads}


def stage(args: argparse.Namespace, work: Path, workers: int | None) -> dict:
    """One run of the embedding stage on ``args.images`` fresh tiles; its cost attribute and batch times."""
    import h5py

    from evalkit.data import ImageFolder
    from evalkit.embed import EmbedConfig, embed_task
    from evalkit.embed.cost import CostMeter
    from evalkit.task import Task

    shutil.rmtree(work, ignore_errors=True)
    root = _folder(work, args.images)
    task = Task(name="bench", dataset=ImageFolder(root=str(root), splits={"train": "train"}), train_split="train",
                val_split="train")
    cfg = EmbedConfig(batch_size=args.batch_size, num_workers=workers, threads=args.threads, accelerator="cpu",
                      devices=1, precision=args.precision)
    saved: list[tuple[float, int, float]] = []  # when each batch was saved, its size, CPU seconds then
    record = CostMeter.batch

    def timed(meter, images: int) -> None:
        saved.append((time.perf_counter(), images, _cpu_s()))
        record(meter, images)

    CostMeter.batch = timed
    try:
        start = time.perf_counter()
        [cache] = embed_task(task, _model(args.model), ".", work / "embeddings", cfg, log=lambda _: None)
        wall = time.perf_counter() - start
    finally:
        CostMeter.batch = record
    with h5py.File(cache.path, "r") as f:
        cost = json.loads(f.attrs["embedding_cost"])
    intervals = [b[0] - a[0] for a, b in zip(saved, saved[1:]) if b[1] == args.batch_size]
    return {**cost, "wall_s": wall, "batch_s": intervals,
            "cpu_use": (saved[-1][2] - saved[0][2]) / (saved[-1][0] - saved[0][0])}


def child_rounds(args: argparse.Namespace) -> dict:
    """Alternating rounds in this process: the bare forward, then the stage once per worker setting."""
    import torch

    from evalkit.embed import EmbedConfig
    from evalkit.embed.loop import parallelism

    settings = args.workers or [args.num_workers]
    # Both run with the threads the stage chooses for the first setting, or those given: compare workers at
    # the same threads.
    args.threads = args.threads or parallelism(EmbedConfig(num_workers=settings[0]), gpu=False)[1]
    bare = Bare(args)
    rounds = []
    for _ in range(args.rounds):
        load = load_average()
        entry = {"bare": bare.run(args.threads), "stages": {}}
        for w in settings:
            entry["stages"][str(w)] = stage(args, Path(args.workdir) / "stage", w)
        entry["load"] = f"{load} -> {load_average()}"
        rounds.append(entry)
    return {"rounds": rounds, "threads_default": torch.get_num_threads()}


def child_memory(args: argparse.Namespace) -> dict:
    import resource

    result = stage(args, Path(args.workdir) / "stage", args.num_workers)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _run_child(kind: str, args: argparse.Namespace, **override) -> dict:
    options = {**{k: v for k, v in vars(args).items() if k not in ("child", "workdir", "memory")}, **override}
    with tempfile.TemporaryDirectory() as work:
        cmd = [sys.executable, __file__, "--child", kind, "--workdir", work]
        for key, value in options.items():
            if value is not None:
                cmd += [f"--{key}", *map(str, value if isinstance(value, list) else [value])]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"{kind} run failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_small_patch16_224", help="timm model name (random weights)")
    parser.add_argument("--images", type=int, default=256,
                        help="images per stage run (and pre-decoded for the bare forward)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--num_workers", type=int, help="decode workers of the stage (default: evalkit's choice)")
    parser.add_argument("--threads", type=int, help="torch threads of both (default: evalkit's choice)")
    parser.add_argument("--workers", type=int, nargs="*", help="run the stage with each of these worker counts")
    parser.add_argument("--memory", action="store_true", help="instead: peak RSS of the stage on N and 2N images")
    parser.add_argument("--child", choices=["rounds", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps((child_rounds if args.child == "rounds" else child_memory)(args)))
        return

    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.machine()}, {cores} cores available, torch {torch.__version__}; model {args.model} "
          f"(random init), batch {args.batch_size}, {args.precision}, {args.images} images per stage run; "
          f"load {load_average()}")
    if args.memory:
        for n in (args.images, 2 * args.images):
            load = load_average()
            r = _run_child("memory", args, images=n)
            print(f"stage alone on {n} images, fresh process ({r['num_workers']} workers, {r['threads']} threads): "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB (embedding_cost: {r['peak_memory_bytes'] / 2**20:.0f} MB); "
                  f"start-up {r['startup_s']:.2f} s (model build {r['model_build_s']:.2f} s), steady "
                  f"{r['steady_images_per_s']:.2f} images/s; load {load} -> {load_average()}")
        return

    result = _run_child("rounds", args)
    rounds = result["rounds"]
    settings = list(rounds[0]["stages"])
    print()
    print("| round | run | workers | threads | median batch (s) | images/s | steady ratio | CPU use | start-up (s) "
          "| whole stage (s) | load (before -> after) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for i, r in enumerate(rounds, 1):
        bare = statistics.median(r["bare"]["batch_s"])
        print(f"| {i} | bare forward | | {r['bare']['threads']} | {bare:.3f} | {args.batch_size / bare:.2f} | | "
              f"{r['bare']['cpu_use']:.2f} | | | {r['load']} |")
        for w, s in r["stages"].items():
            batch = statistics.median(s["batch_s"])
            print(f"| {i} | stage | {s['num_workers']} | {s['threads']} | {batch:.3f} | "
                  f"{args.batch_size / batch:.2f} | "
                  f"{bare / batch:.3f}x | {s['cpu_use']:.2f} | {s['startup_s']:.2f} | {s['wall_s']:.1f} | |")
    print()
    bare_all = [t for r in rounds for t in r["bare"]["batch_s"]]
    for w in settings:
        runs = [r["stages"][w] for r in rounds]
        stage_all = [t for s in runs for t in s["batch_s"]]
        per_round = [statistics.median(r["bare"]["batch_s"]) / statistics.median(r["stages"][w]["batch_s"])
                     for r in rounds]
        print(f"stage, {runs[0]['num_workers']} decode workers, {runs[0]['threads']} threads: steady state "
              f"{statistics.median(bare_all) / statistics.median(stage_all):.3f}x the bare forward (median batch over "
              f"all rounds; per round {min(per_round):.3f}-{max(per_round):.3f}x; target >= 0.93x); start-up apart "
              f"(imports aside): median {statistics.median(s['startup_s'] for s in runs):.2f} s, of it model build "
              f"{statistics.median(s['model_build_s'] for s in runs):.2f} s")
    print(f"load at the end: {load_average()}")


if __name__ == "__main__":
    main()
