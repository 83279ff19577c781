"""The stages as functions over files: ``predict`` fills the cache, ``fit`` reads it and writes results."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

from evalkit.data.precomputed import PrecomputedEmbeddings
from evalkit.embed.cache import Embeddings, read_embeddings, split_cache_file
from evalkit.embed.predict import EmbedConfig, SplitCache, embed_task
from evalkit.errors import EvalkitError
from evalkit.heads.linear import LinearProbeConfig, fit_linear_probe
from evalkit.models.base import ModelSpec
from evalkit.results import new_run_dir, summarize, write_results
from evalkit.task import Task


def _classification_only(task: Task) -> None:
    if task.dataset.task_type != "classification":
        raise EvalkitError(f"task '{task.name}' is {task.dataset.task_type}: its decoder is not in evalkit yet; "
                           f"`evalkit data check --config <task.yaml>` validates its data")


def predict(task: Task, model: ModelSpec, data_root: str, embeddings_root: str, embed: EmbedConfig,
            log: Callable[[str], None] = print) -> list[SplitCache]:
    _classification_only(task)
    return embed_task(task, model, data_root, embeddings_root, embed, log)


def _cache_files(task: Task, model: ModelSpec | None, embeddings_root: str) -> dict[str, Path]:
    if isinstance(task.dataset, PrecomputedEmbeddings):
        return {split: task.dataset.h5_path(split) for split in task.splits}
    if model is None:
        raise EvalkitError(f"task '{task.name}' needs a model to find its embeddings; add --config MODEL.yaml")
    fingerprint = model.fingerprint()
    return {split: split_cache_file(embeddings_root, task.name, model.name, fingerprint, task.dataset.identity(), split)[1]
            for split in task.splits}


def _labelled(data: Embeddings) -> tuple[torch.Tensor, torch.Tensor]:
    keep = data.labels >= 0
    return data.embeddings[keep], data.labels[keep]


def _num_classes(splits: dict[str, Embeddings]) -> int:
    class_lists = {json.dumps(d.classes) for d in splits.values() if d.classes is not None}
    if len(class_lists) > 1:
        raise EvalkitError("the cache files of this task disagree on the class list; re-embed them with one task config")
    if class_lists:
        return len(json.loads(class_lists.pop()))
    return int(max(int(d.labels.max()) for d in splits.values())) + 1


def fit(task: Task, model: ModelSpec | None, embeddings_root: str, results_root: str, head: LinearProbeConfig,
        config: dict[str, Any], timing: dict[str, float] | None = None,
        log: Callable[[str], None] = print) -> Path:
    """Fit the linear probe on the cached splits of ``task`` and write one results.json; returns its path."""
    _classification_only(task)
    files = _cache_files(task, model, embeddings_root)
    data = {split: read_embeddings(path) for split, path in files.items()}
    dims = {d.embeddings.shape[1] for d in data.values()}
    if len(dims) > 1:
        raise EvalkitError(f"the cache files of this task have different embedding sizes {sorted(dims)}")
    num_classes = _num_classes(data)
    model_name = model.name if model is not None else str(data[task.train_split].attrs.get("model", "precomputed"))
    log(f"[{model_name}] {task.name}: fitting {head.n_runs} linear probe runs ({head.protocol}) on "
        f"{len(data[task.train_split].labels)} embeddings of size {dims.pop()}")
    result = fit_linear_probe(
        _labelled(data[task.train_split]), _labelled(data[task.val_split]), num_classes, head,
        evaluate={split: _labelled(data[split]) for split in task.eval_splits},
    )
    results = {
        "task": task.name,
        "model": model_name,
        "protocol": head.protocol,
        "n_runs": head.n_runs,
        "num_classes": num_classes,
        "metrics": {split: {name: summarize(values) for name, values in metrics.items()}
                    for split, metrics in result.metrics.items()},
        "head": {**result.settings, "best_epochs": result.best_epochs, "stopped_epochs": result.stopped_epochs},
        "timing": {**(timing or {}), "fit_s": round(result.seconds, 3)},
        "provenance": {
            "cache_keys": [d.path.stem for d in data.values()],
            "cache_files": {split: str(d.path) for split, d in data.items()},
            "skipped_unreadable": {split: json.loads(d.attrs.get("skipped_ids") or "[]") for split, d in data.items()},
            "model_fingerprint": data[task.train_split].attrs.get("model_fingerprint"),
            "head_config": asdict(head),
        },
    }
    path = write_results(new_run_dir(results_root, task.name, model_name), results, config)
    log(f"[{model_name}] {task.name}: " + ", ".join(
        f"{split} balanced_accuracy {m['balanced_accuracy']['mean']:.3f} ± {m['balanced_accuracy']['std']:.3f}"
        for split, m in results["metrics"].items()) + f" -> {path}")
    return path
