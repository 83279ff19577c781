"""The segmentation task through the pipeline's two stages: ``predict`` writes the feature
caches of the crop pool and the test grid; ``fit`` trains the decoders and writes results.json,
the per-class table, the overlays and the training curve."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from evalkit.embed.config import EmbedConfig, check_torch_device, on_gpu
from evalkit.errors import EvalkitError
from evalkit.models.base import ModelSpec
from evalkit.results import new_run_dir, summarize, write_results
from evalkit.segmentation.cache import (crop_settings, read_segmentation_cache, segmentation_cache_file,
                                        write_segmentation_cache)
from evalkit.segmentation.outputs import write_curve, write_overlay
from evalkit.segmentation.protocol import SegmentationConfig, fit_run, summary_table, untrained_scores
from evalkit.task import Task


def _files(task: Task, model: ModelSpec, embeddings_root: str, seg: SegmentationConfig,
           fingerprint: str) -> dict[str, tuple[str, Path]]:
    """split -> (kind, cache file): the training split as a crop pool, the evaluated splits as grids."""
    identity = task.dataset.identity()
    out = {}
    for split in task.splits:
        kind = "pool" if split == task.train_split else "grid"
        settings = crop_settings(split, kind, seg.crop_size, seg.crops_per_image, seg.test_stride, seg.seed)
        out[split] = (kind, segmentation_cache_file(embeddings_root, task.name, model.name, fingerprint, identity,
                                                    settings))
    return out


def embed_segmentation(task: Task, model: ModelSpec, data_root: str, embeddings_root: str, embed: EmbedConfig,
                       seg: SegmentationConfig, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Write the missing feature caches of every split (complete ones are reused)."""
    backbone = None
    written = {}
    attrs = {"model": model.name, "model_fingerprint": model.fingerprint(), "dataset": task.name,
             "classes": json.dumps(task.dataset.classes)}
    for split, (kind, path) in _files(task, model, embeddings_root, seg, attrs["model_fingerprint"]).items():
        written[split] = path
        if path.is_file():
            log(f"[{model.name}] {task.name}/{split}: reusing segmentation cache {path}")
            continue
        listing = task.dataset.list_split(data_root, split)
        if backbone is None:
            device = check_torch_device("cuda" if on_gpu(embed.accelerator) else "cpu", "embed.accelerator")
            backbone = model.build()
        what = (f"{len(listing) * seg.crops_per_image} crops of {len(listing)} images" if kind == "pool"
                else f"the grid tiles of {len(listing)} images")
        log(f"[{model.name}] {task.name}/{split}: embedding {what} -> {path}")
        write_segmentation_cache(path, task.dataset, listing, backbone, kind, seg.crop_size, seg.crops_per_image,
                                 seg.test_stride, seg.seed, embed.batch_size, device, {**attrs, "split": split},
                                 seg.overlays, log=lambda _: None)
    return written


def fit_segmentation(task: Task, model: ModelSpec | None, embeddings_root: str, results_root: str,
                     seg: SegmentationConfig, config: dict[str, Any], timing: dict[str, float] | None = None,
                     log: Callable[[str], None] = print) -> Path:
    if model is None:
        raise EvalkitError(f"task '{task.name}' needs a model to find its feature caches; add --config MODEL.yaml")
    files = _files(task, model, embeddings_root, seg, model.fingerprint())
    missing = [str(path) for _, path in files.values() if not path.is_file()]
    if missing:
        raise EvalkitError(f"no segmentation cache {missing[0]}; run `evalkit predict` with the same task, model "
                           "and --seg.* crop settings first")
    train = read_segmentation_cache(files[task.train_split][1])
    class_names = json.loads(train.attrs["classes"])
    start = time.perf_counter()
    results: dict[str, Any] = {"task": task.name, "model": model.name, "protocol": f"segmentation_{seg.decoder}",
                               "n_runs": seg.n_runs, "num_classes": len(class_names), "metrics": {}, "curves": {},
                               "per_class": {}}
    run_dir = new_run_dir(results_root, task.name, model.name)
    seconds_per_epoch: list[float] = []
    for split in task.eval_splits:
        test = read_segmentation_cache(files[split][1])
        log(f"[{model.name}] {task.name}: {seg.n_runs} {seg.decoder} decoder runs on {len(train.masks)} cached "
            f"crops, scored on {len(test.full_masks)} stitched {split} images")
        start_scores = untrained_scores(train, test, class_names, seg)
        runs = [fit_run(train, test, class_names, seg, r, log) for r in range(seg.n_runs)]
        seconds_per_epoch += [run.seconds_per_epoch for run in runs]
        names = list(runs[0].scores)
        results["metrics"][split] = {name: summarize([run.scores[name] for run in runs]) for name in names}
        results["per_class"][split] = summary_table([run.scores for run in runs], class_names)
        results["curves"][split] = {"untrained": {"dice": start_scores["dice"], "miou": start_scores["miou"]},
                                    "runs": [run.curve for run in runs]}
        write_curve(run_dir / f"training_curve_{split}.png", [run.curve for run in runs], start_scores["dice"])
        ids = test.ids
        for j, rgb in enumerate(test.overlay_images):
            write_overlay(run_dir / f"overlay_{split}_{Path(ids[j]).stem}.png", rgb, test.full_masks[j],
                          runs[0].prediction[j], class_names,
                          f"{model.name} + {seg.decoder}, run 0: Dice {runs[0].scores['dice']:.3f}")
    results["head"] = {**vars(seg), "seconds_per_epoch": statistics.fmean(seconds_per_epoch)}
    results["timing"] = {**(timing or {}), "fit_s": round(time.perf_counter() - start, 3)}
    results["provenance"] = {"cache_keys": [path.stem for _, path in files.values()],
                             "cache_files": {split: str(path) for split, (_, path) in files.items()},
                             "model_fingerprint": train.attrs.get("model_fingerprint")}
    path = write_results(run_dir, results, config)
    log(f"[{model.name}] {task.name}: " + ", ".join(
        f"{split} dice {m['dice']['mean']:.3f} ± {m['dice']['std']:.3f}, miou {m['miou']['mean']:.3f}"
        for split, m in results["metrics"].items()) + f" -> {path}")
    return path
