"""evalkit beside kaiko's eva: the offline linear-probe pipeline, stage by stage, same data and model.

Both tools run through their own command lines, each in a subprocess whose wall clock is
the stage's time:

* embedding: ``eva predict`` and ``evalkit predict`` embed the train and val splits of one
  image folder (real H&E tiles: the 41 demo tiles of ``data/crc_demo``, flipped and rotated
  and repeated under new names, in the CRC layout ``NCT-CRC-HE-100K/<CLASS>/*.tif`` and
  ``CRC-VAL-HE-7K/<CLASS>/*.tif``) with a random-init ViT-S/16, the same batch size,
  DataLoader workers and preprocessing (resize 224, centre crop, ImageNet statistics), on CPU.
* head: ``eva fit`` and ``evalkit fit`` fit the same linear-probe protocol on the same
  synthetic embeddings (Gaussian class clusters, D=384, 9 classes), written in each tool's
  format: eva's manifest.csv + one .pt file per sample (what its EmbeddingsWriter writes),
  evalkit's HDF5 cache. evalkit runs first; the batch size, learning rate and early-stopping
  patience it resolved are written into eva's config, so both fit exactly one protocol.

eva (``kaiko-eva``) lives in its own virtual environment, ``benchmarks/.eva-venv``, made here
when missing. Its configs are generated into the work folder at run time and mirror eva's
``configs/vision/pathology/offline/classification/crc.yaml`` with the paths and protocol
filled in. eva's ``CRC`` dataset insists on the official tile counts (100,000 / 7,180), so
the generated plugin module subclasses it with that one check relaxed (class list and
label order are still checked); reading, decoding and transforms are eva's own.

    .venv/bin/python benchmarks/vs_eva.py            # 2,000 tiles; N=20,000 embeddings, 2 runs x 250 steps
    .venv/bin/python benchmarks/vs_eva.py --quick    # a smoke run of both stages (a few minutes)
    .venv/bin/python benchmarks/vs_eva.py --stages head --n_runs 5 --max_steps 1000 --protocol adamw_eva
    .venv/bin/python benchmarks/vs_eva.py --evalkit_repeats 3   # evalkit's side 3 times: min / median

The default head protocol is shortened (max_steps, n_runs) because eva loads every sample
from its own .pt file: on 2 CPU cores it needs about 1.2 s per step at batch 4,096, so the
full 12,500 steps x 5 runs would take most of a day. Both tools always get the same values.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
EVA_VENV = REPO / "benchmarks" / ".eva-venv"
EVA_VERSION = "0.4.5"
# eva's configs parse only with the jsonargparse of its lock file; torch pinned to evalkit's own.
EVA_REQUIREMENTS = [f"kaiko-eva[vision]=={EVA_VERSION}", "jsonargparse[omegaconf]==4.31.0"]
TILES = sorted(p for p in (REPO / "data" / "crc_demo").rglob("*") if p.suffix in (".png", ".tif"))
CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
SPLIT_FOLDERS = {"train": "NCT-CRC-HE-100K", "val": "CRC-VAL-HE-7K"}
EVA_METRIC = "val/MulticlassAccuracy"  # torchmetrics' macro-averaged accuracy = balanced accuracy


def log(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------- the eva environment


def _torch_pins() -> list[str]:
    """torch and torchvision as in evalkit's environment, so both tools run the same kernels."""
    from importlib import metadata

    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in ("torch", "torchvision")]


def ensure_eva_venv(venv: Path) -> Path:
    """The ``eva`` executable of ``venv``; the venv is made and filled first when missing."""
    eva = venv / "bin" / "eva"
    if eva.is_file():
        return eva
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        pip + _torch_pins(),  # first: kaiko-eva must find torch already there, not pull a newer one
        pip + EVA_REQUIREMENTS + _torch_pins(),
    ]
    log(f"eva is not installed in {venv}; installing kaiko-eva {EVA_VERSION} there (once; a few minutes)")
    base = Path(getattr(sys, "_base_executable", sys.executable))
    steps[0][0] = str(base) if base.is_file() else sys.executable
    for cmd in steps:
        log("  $ " + " ".join(cmd))
        start = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"installing eva failed ({' '.join(cmd[:4])} ...):\n{(out.stdout + out.stderr)[-3000:]}")
        log(f"    done in {time.perf_counter() - start:.0f} s")
    if not eva.is_file():
        raise SystemExit(f"kaiko-eva installed but {eva} is missing")
    return eva


# ---------------------------------------------------------------- the image folder


def make_image_folder(root: Path, n_images: int, val_fraction: float = 0.25) -> dict[str, int]:
    """``root/{NCT-CRC-HE-100K,CRC-VAL-HE-7K}/<CLASS>/*.tif``: n_images tiles, 224x224 RGB TIFF.

    The classes take turns; each tile is one of that class's demo tiles under one of the 8
    flips/rotations, cycled, under a new name that is unique over both splits (eva writes
    both splits' embeddings into one folder).
    """
    import numpy as np
    from PIL import Image

    by_class = {name: [np.asarray(Image.open(p).convert("RGB").resize((224, 224)))
                       for p in TILES if p.parent.name == name] for name in CLASSES}
    n_val = max(len(CLASSES), int(round(n_images * val_fraction)))
    counts = {"train": max(len(CLASSES), n_images - n_val), "val": n_val}
    for split, n in counts.items():
        for i in range(n):
            name, j = CLASSES[i % len(CLASSES)], i // len(CLASSES)
            tiles = by_class[name]
            image = np.rot90(tiles[j % len(tiles)], j // len(tiles) % 4)
            if j // len(tiles) % 8 >= 4:
                image = image[:, ::-1]
            target = root / SPLIT_FOLDERS[split] / name / f"{split}-{i:06d}.tif"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(image)).save(target)  # uncompressed, as the originals
    return counts


# ---------------------------------------------------------------- eva configs (generated, never committed)

PLUGIN = '''"""Generated by evalkit's benchmarks/vs_eva.py: eva's CRC reader for a subset of the tiles."""

from eva.vision.data.datasets import CRC, _validators


class CRCSubset(CRC):
    """eva's CRC dataset without its check of the official counts (100,000 train / 7,180 val)."""

    def validate(self) -> None:
        _validators.check_dataset_integrity(self, length=None, n_classes=9, first_and_last_labels=("ADI", "TUM"))
'''


def _callbacks(patience: int, refresh_rate: int) -> list[dict]:
    """eva's offline classification callbacks (crc.yaml), in its order."""
    return [
        {"class_path": "eva.callbacks.ConfigurationLogger"},
        {"class_path": "lightning.pytorch.callbacks.TQDMProgressBar", "init_args": {"refresh_rate": refresh_rate}},
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor", "init_args": {"logging_interval": "epoch"}},
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"filename": "best", "save_last": False, "save_top_k": 1, "monitor": EVA_METRIC, "mode": "max"}},
        {"class_path": "lightning.pytorch.callbacks.EarlyStopping",
         "init_args": {"min_delta": 0, "patience": patience, "monitor": EVA_METRIC, "mode": "max"}},
    ]


def _head_module(dim: int, optimizer: dict, max_steps: int) -> dict:
    return {
        "class_path": "eva.HeadModule",
        "init_args": {
            "head": {"class_path": "torch.nn.Linear", "init_args": {"in_features": dim, "out_features": len(CLASSES)}},
            "criterion": "torch.nn.CrossEntropyLoss",
            "optimizer": optimizer,
            # Cosine from lr to 0 over max_steps, stepped every optimiser step as evalkit does.
            # (A bare CosineAnnealingLR here, as in eva's configs of 2024, is stepped once per
            # epoch by Lightning and so barely decays.)
            "lr_scheduler": {
                "class_path": "eva.core.models.modules.SchedulerConfiguration",
                "init_args": {"scheduler": {"class_path": "torch.optim.lr_scheduler.CosineAnnealingLR",
                                            "init_args": {"T_max": max_steps, "eta_min": 0.0}},
                              "interval": "step"},
            },
            "metrics": {"common": [
                {"class_path": "eva.metrics.AverageLoss"},
                {"class_path": "eva.metrics.MulticlassClassificationMetrics", "init_args": {"num_classes": len(CLASSES)}},
            ]},
        },
    }


def _embeddings_datasets(root: Path) -> dict:
    return {split: {"class_path": "eva.datasets.EmbeddingsClassificationDataset",
                    "init_args": {"root": str(root), "manifest_file": "manifest.csv", "split": split}}
            for split in ("train", "val")}


def eva_predict_config(work: Path, data_root: Path, args: argparse.Namespace) -> dict:
    """eva's crc.yaml for ``eva predict``: the embeddings writer with a random-init ViT-S/16."""
    embeddings = work / "eva" / "embeddings"
    writer = {
        "class_path": "eva.callbacks.ClassificationEmbeddingsWriter",
        "init_args": {
            "output_dir": str(embeddings),
            "dataloader_idx_map": {0: "train", 1: "val"},
            "backbone": {
                "class_path": "eva.vision.models.ModelFromRegistry",
                # eva's own random ViT-S/16 baseline (timm vit_small_patch16_224, no weights, CLS
                # output); a fixed input size as in evalkit's timm adapter.
                "init_args": {"model_name": "universal/vit_small_patch16_224_random",
                              "model_kwargs": {"dynamic_img_size": False}},
            },
            "overwrite": False,
        },
    }
    predict_args = {"root": str(data_root), "split": "train", "download": False,
                    "transforms": {"class_path": "eva.vision.data.transforms.common.ResizeAndCrop",
                                   "init_args": {"size": 224, "mean": [0.485, 0.456, 0.406],
                                                 "std": [0.229, 0.224, 0.225]}}}
    optimizer = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.0003}}
    return {
        "trainer": {"class_path": "eva.Trainer", "init_args": {
            "n_runs": 1, "default_root_dir": str(work / "eva" / "logs" / "predict"), "max_steps": 12500,
            "checkpoint_type": "best", "accelerator": "cpu", "devices": 1,
            "callbacks": _callbacks(7, args.refresh_rate) + [writer],
            "logger": [{"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                        "init_args": {"save_dir": str(work / "eva" / "logs" / "predict"), "name": ""}}],
        }},
        "model": _head_module(384, optimizer, 12500),
        "data": {"class_path": "eva.DataModule", "init_args": {
            "datasets": {
                **_embeddings_datasets(embeddings),
                "predict": [{"class_path": "evabench_plugin.CRCSubset", "init_args": {**predict_args, "split": s}}
                            for s in ("train", "val")],
            },
            "dataloaders": {
                "train": {"batch_size": 256, "num_workers": args.num_workers, "shuffle": True},
                "val": {"batch_size": 256, "num_workers": args.num_workers},
                "predict": {"batch_size": args.batch_size, "num_workers": args.num_workers},
            },
        }},
    }


def eva_fit_config(work: Path, embeddings: Path, dim: int, head: dict, args: argparse.Namespace) -> dict:
    """eva's crc.yaml for ``eva fit`` with the protocol evalkit resolved (``head`` of its results.json)."""
    if head["optimizer"] == "sgd":
        optimizer = {"class_path": "torch.optim.SGD",
                     "init_args": {"lr": head["lr"], "momentum": head["momentum"], "nesterov": head["nesterov"],
                                   "weight_decay": head["weight_decay"]}}
    else:
        optimizer = {"class_path": "torch.optim.AdamW",
                     "init_args": {"lr": head["lr"], "weight_decay": head["weight_decay"]}}
    logs = work / "eva" / "logs" / "fit"
    return {
        "trainer": {"class_path": "eva.Trainer", "init_args": {
            "n_runs": args.n_runs, "default_root_dir": str(logs), "max_steps": head["max_steps"],
            "checkpoint_type": "best", "accelerator": "cpu", "devices": 1,
            "callbacks": _callbacks(head["patience_epochs"], args.refresh_rate),
            "logger": [{"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                        "init_args": {"save_dir": str(logs), "name": ""}}],
        }},
        "model": _head_module(dim, optimizer, head["max_steps"]),
        "data": {"class_path": "eva.DataModule", "init_args": {
            "datasets": _embeddings_datasets(embeddings),
            "dataloaders": {
                "train": {"batch_size": head["batch_size"], "num_workers": args.num_workers, "shuffle": True},
                "val": {"batch_size": head["batch_size"], "num_workers": args.num_workers},
            },
        }},
    }


def write_yaml(path: Path, content: dict) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Generated by evalkit's benchmarks/vs_eva.py (mirrors eva's offline crc.yaml).\n---\n"
                    + yaml.safe_dump(content, sort_keys=False))
    return path


# ---------------------------------------------------------------- running the tools


def run_timed(name: str, cmd: list[str], logfile: Path, env: dict | None = None) -> float:
    """Run ``cmd`` with its output to ``logfile``; its wall-clock seconds, or exit with the log's tail."""
    log(f"  $ {' '.join(cmd)}")
    logfile.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(logfile, "w") as fh:
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                              cwd=REPO, check=False).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        tail = logfile.read_text(errors="replace")[-4000:]
        raise SystemExit(f"{name} failed (exit {code}); the end of {logfile}:\n{tail}")
    log(f"    {name}: {seconds:.1f} s (log: {logfile})")
    return seconds


def _evalkit() -> list[str]:
    script = Path(sys.executable).parent / "evalkit"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "evalkit"]


def _eva_env(work: Path) -> dict:
    # The plugin module must be importable in eva's process and its (spawned) DataLoader workers.
    return {"PYTHONPATH": str(work / "eva" / "plugin"), "TQDM_DISABLE": "1"}


def embedding_stage(eva: Path, work: Path, args: argparse.Namespace) -> dict:
    data_root = work / "data"
    counts = make_image_folder(data_root / "crc", args.images)
    n = sum(counts.values())
    log(f"image folder: {counts['train']:,} train + {counts['val']:,} val tiles (224x224 TIFF) in {data_root / 'crc'}")

    (work / "eva" / "plugin").mkdir(parents=True, exist_ok=True)
    (work / "eva" / "plugin" / "evabench_plugin.py").write_text(PLUGIN)
    config = write_yaml(work / "eva" / "predict.yaml", eva_predict_config(work, data_root / "crc", args))
    eva_s = run_timed("eva predict", [str(eva), "predict", "--config", str(config)], work / "eva" / "predict.log",
                      _eva_env(work))
    with open(work / "eva" / "embeddings" / "manifest.csv", newline="") as fh:
        eva_rows = sum(1 for _ in csv.DictReader(fh))

    evalkit_s = []
    for i in range(args.evalkit_repeats):  # each repeat into an empty cache: every one embeds all images
        embeddings = work / "evalkit" / f"embeddings-{i}"
        evalkit_s.append(run_timed("evalkit predict", _evalkit() + [
            "predict", "--config", str(REPO / "configs" / "tasks" / "crc.yaml"),
            "--config", str(REPO / "configs" / "models" / "vit_small_patch16_224_random.yaml"),
            "--task.dataset.allow_subset", "true", "--data_root", str(data_root),
            "--embeddings_root", str(embeddings),
            "--embed.batch_size", str(args.batch_size), "--embed.num_workers", str(args.num_workers),
            "--embed.accelerator", "cpu", "--embed.devices", "1",
        ], work / "evalkit" / f"predict-{i}.log"))
        evalkit_rows = _h5_rows(embeddings)
        if eva_rows != n or evalkit_rows != n:
            raise SystemExit(f"embedding counts differ from the {n} images: eva {eva_rows}, evalkit {evalkit_rows}")
    return {"images": n, "eva_s": eva_s, "evalkit_s": evalkit_s}


def _h5_rows(root: Path) -> int:
    import h5py

    total = 0
    for path in root.rglob("*.h5"):
        with h5py.File(path, "r") as f:
            total += f["embeddings"].shape[0]
    return total


def write_eva_embeddings(root: Path, splits: dict) -> None:
    """eva's offline format: ``manifest.csv`` (origin, embeddings, target, split) and one .pt per sample.

    Each .pt holds a one-element list with a [D] tensor, as eva's ClassificationEmbeddingsWriter saves it.
    """
    import torch

    root.mkdir(parents=True, exist_ok=True)
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["origin", "embeddings", "target", "split"])
        for split, (x, y) in splits.items():
            for i in range(len(x)):
                label = int(y[i])
                name = f"{split}/{CLASSES[label]}/{split}-{i:07d}"
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                torch.save([x[i].clone()], root / f"{name}.pt")  # clone: not the whole storage
                writer.writerow([f"{name}.tif", f"{name}.pt", label, split])


def write_evalkit_embeddings(path: Path, split: str, x, y) -> Path:
    """evalkit's HDF5 cache, written by evalkit's own cache writer."""
    import numpy as np

    from evalkit.embed.cache import PartialCache

    path.parent.mkdir(parents=True, exist_ok=True)
    batch = 4096
    partial = PartialCache(path, batch)
    for lo in range(0, len(x), batch):
        partial.write_batch(np.arange(lo, min(lo + batch, len(x))), x[lo:lo + batch].numpy())
    attrs = {"kind": "rows", "model": "synthetic", "model_fingerprint": "synthetic", "dataset": "synthetic",
             "split": split, "transform": "{}", "classes": json.dumps(CLASSES), "embed_dim": int(x.shape[1])}
    ids = np.asarray([f"{split}-{i:07d}" for i in range(len(x))], dtype=object)
    partial.assemble(len(x), {"embeddings": "float32"}, attrs, {"labels": y.numpy(), "ids": ids})
    return path


def head_stage(eva: Path, work: Path, args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from head_fit import synthetic

    dim = 384
    train = synthetic(args.head_n, dim, len(CLASSES), seed=0)
    val = synthetic(args.head_val, dim, len(CLASSES), seed=1)
    start = time.perf_counter()
    eva_root = work / "eva" / "synthetic"
    write_eva_embeddings(eva_root, {"train": train, "val": val})
    h5 = {s: write_evalkit_embeddings(work / "evalkit" / "synthetic" / f"{s}.h5", s, *d)
          for s, d in (("train", train), ("val", val))}
    log(f"synthetic embeddings: {args.head_n:,} train + {args.head_val:,} val x {dim}, {len(CLASSES)} classes, "
        f"written in both formats in {time.perf_counter() - start:.0f} s")

    evalkit_s, fit_s, first_runs = [], [], None
    for i in range(args.evalkit_repeats):
        results_root = work / "evalkit" / f"results-{i}"
        evalkit_s.append(run_timed("evalkit fit", _evalkit() + [
            "fit", "--config", str(REPO / "configs" / "tasks" / "precomputed.yaml"),
            "--head.protocol", args.protocol, "--head.n_runs", str(args.n_runs),
            "--head.max_steps", str(args.max_steps), "--head.device", "cpu", "--results_root", str(results_root),
        ], work / "evalkit" / f"fit-{i}.log", {"TRAIN_H5": str(h5["train"]), "VAL_H5": str(h5["val"])}))
        evalkit_results = json.loads(next(results_root.rglob("results.json")).read_text())
        fit_s.append(evalkit_results["timing"]["fit_s"])
        runs = evalkit_results["metrics"]["val"]["balanced_accuracy"]["runs"]
        if i and runs != first_runs:
            raise SystemExit(f"evalkit fit gave {runs} on repeat {i}, {first_runs} the first time: not reproducible")
        first_runs = runs
    head = evalkit_results["settings"]
    log(f"    protocol {args.protocol}: {head['optimizer']} lr {head['lr']:g}, batch {head['batch_size']}, "
        f"max_steps {head['max_steps']:,}, cosine to 0 per step, patience {head['patience_epochs']} epochs, "
        f"{args.n_runs} runs")

    config = write_yaml(work / "eva" / "fit.yaml", eva_fit_config(work, eva_root, dim, head, args))
    eva_s = run_timed("eva fit", [str(eva), "fit", "--config", str(config)], work / "eva" / "fit.log",
                      _eva_env(work))
    eva_results = json.loads(next((work / "eva" / "logs" / "fit").rglob("results.json")).read_text())
    eva_runs = eva_results["metrics"]["val"][0][EVA_METRIC]["values"]
    return {
        "eva_s": eva_s, "evalkit_s": evalkit_s, "evalkit_fit_s": fit_s,
        "eva_runs": eva_runs, "evalkit_runs": first_runs,
        "head": head, "evalkit_best_epochs": head["best_epochs"], "evalkit_stopped_epochs": head["stopped_epochs"],
    }


# ---------------------------------------------------------------- report


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _seconds(values: list[float]) -> str:
    """One run's seconds, or min / median of the repeats."""
    return f"{values[0]:.1f}" if len(values) == 1 else f"{min(values):.1f} / {median(values):.1f}"


def report(embed: dict | None, head: dict | None, args: argparse.Namespace) -> None:
    """The side-by-side table; with ``--evalkit_repeats`` above 1, evalkit's cells are min / median of its
    repeats and its ratios use the median (eva runs once)."""
    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    print()
    if args.evalkit_repeats > 1:
        print(f"evalkit ran {args.evalkit_repeats} times per stage: its times are min / median, ratios use the median")
    print("| stage | eva | evalkit | evalkit vs eva | target | met |")
    print("|---|---:|---:|---:|---|---|")
    if embed:
        n, evalkit_s = embed["images"], median(embed["evalkit_s"])
        eva_ips, evalkit_ips = n / embed["eva_s"], n / evalkit_s
        print(f"| embedding, {n:,} images: wall (s) | {embed['eva_s']:.1f} | {_seconds(embed['evalkit_s'])} | "
              f"{embed['eva_s'] / evalkit_s:.2f}x faster | | |")
        print(f"| embedding: images/s | {eva_ips:.1f} | {evalkit_ips:.1f} | {evalkit_ips / eva_ips:.2f}x | "
              f">= 1.0x | {yes(evalkit_ips / eva_ips >= 1.0)} |")
    if head:
        speedup = head["eva_s"] / median(head["evalkit_s"])
        eva_ba, evalkit_ba = _mean(head["eva_runs"]), _mean(head["evalkit_runs"])
        diff = 100 * abs(evalkit_ba - eva_ba)
        print(f"| head, {args.n_runs} runs x {head['head']['max_steps']:,} steps max: wall (s) | {head['eva_s']:.1f} | "
              f"{_seconds(head['evalkit_s'])} | {speedup:.1f}x faster | >= 20x | {yes(speedup >= 20)} |")
        print(f"| head: val balanced accuracy (mean of runs) | {eva_ba:.4f} | {evalkit_ba:.4f} | {diff:.2f} pp | "
              f"<= 1 pp | {yes(diff <= 1.0)} |")
        print()
        print(f"head runs, eva:     {', '.join(f'{v:.4f}' for v in head['eva_runs'])}")
        print(f"head runs, evalkit: {', '.join(f'{v:.4f}' for v in head['evalkit_runs'])} "
              f"(best epochs {head['evalkit_best_epochs']}, stopped {head['evalkit_stopped_epochs']}; "
              f"fit itself {_seconds(head['evalkit_fit_s'])} s of the {_seconds(head['evalkit_s'])} s)")
    print()
    print("Wall times are whole CLI processes (start-up, data loading and writing included).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 96 tiles, N=2,000 embeddings, 2 runs x 50 steps")
    parser.add_argument("--stages", default="embed,head", help="comma-separated: embed, head")
    parser.add_argument("--images", type=int, default=None, help="tiles in the image folder, 3/4 train (default 2,000)")
    parser.add_argument("--batch_size", type=int, default=64, help="embedding batch size, both tools")
    parser.add_argument("--num_workers", type=int, default=2, help="DataLoader workers, both tools (eva's head too)")
    parser.add_argument("--head_n", type=int, default=None, help="synthetic training embeddings (default 20,000)")
    parser.add_argument("--head_val", type=int, default=None, help="synthetic validation embeddings (default 2,000)")
    parser.add_argument("--protocol", default="sgd_kaiko", choices=["sgd_kaiko", "adamw_eva"])
    parser.add_argument("--max_steps", type=int, default=None, help="optimiser steps per run, both tools (default 250)")
    parser.add_argument("--n_runs", type=int, default=None, help="seeded runs, both tools (default 2)")
    parser.add_argument("--evalkit_repeats", type=int, default=1,
                        help="run evalkit's side of each stage this many times (min / median); eva runs once")
    parser.add_argument("--workdir", default=None, help="keep data, configs and logs here (default: a temporary folder)")
    parser.add_argument("--refresh_rate", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--eva_venv", default=str(EVA_VENV), help=argparse.SUPPRESS)
    args = parser.parse_args()
    quick = args.quick
    args.images = args.images or (96 if quick else 2_000)
    args.head_n = args.head_n or (2_000 if quick else 20_000)
    args.head_val = args.head_val or (500 if quick else 2_000)
    args.max_steps = args.max_steps or (50 if quick else 250)
    args.n_runs = args.n_runs or 2
    stages = {s.strip() for s in args.stages.split(",") if s.strip()}
    if args.evalkit_repeats < 1:
        raise SystemExit(f"--evalkit_repeats must be at least 1, got {args.evalkit_repeats}")
    if not stages <= {"embed", "head"}:
        raise SystemExit(f"--stages takes embed and/or head, got {args.stages}")

    import torch

    eva = ensure_eva_venv(Path(args.eva_venv))
    log(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; eva {EVA_VERSION} "
        f"in {Path(args.eva_venv)}; batch {args.batch_size}, {args.num_workers} DataLoader workers, CPU")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="vs_eva-"))
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"--workdir {work} is not empty; both tools must start from nothing")
    work.mkdir(parents=True, exist_ok=True)
    try:
        embed = embedding_stage(eva, work, args) if "embed" in stages else None
        head = head_stage(eva, work, args) if "head" in stages else None
        report(embed, head, args)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
