"""The stages as functions over files, the same for every evaluation: ``predict`` fills the feature
cache with what the evaluation asks for, ``fit`` reads it, runs the evaluation and writes the run record."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from evalkit.embed.config import PRECISIONS, EmbedConfig
from evalkit.embed.features import FeatureSet, feature_file
from evalkit.embed.index import model_fingerprint
from evalkit.errors import EvalkitError
from evalkit.evaluations.base import Evaluation
from evalkit.models.base import ModelSpec
from evalkit.paths import safe_name
from evalkit.results import ModelIdentity, run_record, write_run
from evalkit.stats.config import StatsConfig
from evalkit.task import Task


def predict(task: Task, model: ModelSpec, evaluation: Evaluation, data_root: str, embeddings_root: str,
            embed: EmbedConfig, log: Callable[[str], None] = print) -> list:
    """Fill the cache with the features ``evaluation`` reads for every split of ``task``; returns the
    :class:`~evalkit.embed.predict.SplitCache` of each."""
    from evalkit.embed.predict import predict_features  # Lightning: only when embedding

    return predict_features(task, model, evaluation.features(task), data_root, embeddings_root, embed, log)


def _locate(task: Task, model: ModelSpec | None, features: dict[str, FeatureSet], predict_options: tuple[str, ...],
            embeddings_root: str, precision: str) -> tuple[dict[str, Path], ModelIdentity]:
    """The cache file of every split, and which model they hold.

    Bring-your-own files come from the dataset; otherwise the files are found from the model config
    by its fingerprint: hashed from the weights when they are here, else read from the index that
    ``predict`` wrote (so ``fit`` runs where the weights are not).
    """
    given = {split: task.dataset.cache_file(split) for split in features}
    if all(path is not None for path in given.values()):
        return given, ModelIdentity(None, None, "cache_files")
    if model is None:
        raise EvalkitError(f"task '{task.name}' needs a model to find its features; add --config MODEL.yaml")
    fingerprint, source = model_fingerprint(embeddings_root, model)
    files = {split: feature_file(embeddings_root, task, model.name, fingerprint, split, feature_set, precision)[1]
             for split, feature_set in features.items()}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        others = [other for other in PRECISIONS if other != precision and all(
            feature_file(embeddings_root, task, model.name, fingerprint, split, feature_set, other)[1].is_file()
            for split, feature_set in features.items())]
        if others:  # embedded, but in another precision
            raise EvalkitError(f"no {precision} feature cache {missing[0]}, but a {others[0]} one of the same task and "
                               f"model; fit it with --precision {others[0]}, or embed with --embed.precision {precision}")
        groups = "".join(f" and --{group}.*" for group in predict_options)
        same = f" and --embed.precision {precision}" if precision != "fp32" else ""
        raise EvalkitError(f"no feature cache {missing[0]}; run `evalkit predict` with the same task and model"
                           f"{groups}{same} first")
    return files, ModelIdentity(model.name, fingerprint, source)


def fit(task: Task, model: ModelSpec | None, evaluation: Evaluation, embeddings_root: str, results_root: str,
        stats: StatsConfig, config: dict[str, Any], timing: dict[str, Any] | None = None,
        log: Callable[[str], None] = print, precision: str = "fp32") -> Path:
    """Run ``evaluation`` on the cached features of ``task`` that were embedded in ``precision`` (``fp32``,
    ``bf16``, ``fp16``: each has its own cache) and write one run record; returns its results.json."""
    features = evaluation.features(task)
    files, identity = _locate(task, model, features, evaluation.predict_options, embeddings_root, precision)
    data = {split: features[split].read(path) for split, path in files.items()}
    if identity.name is None:  # bring-your-own embeddings: the files say which model made them
        attrs = data[task.train_split].attrs
        identity = ModelIdentity(safe_name(str(attrs.get("model", "precomputed"))), attrs.get("model_fingerprint"), "cache_files")
    start = time.perf_counter()
    prefix = f"[{identity.name}] "
    result = evaluation.fit(task, data, stats, lambda line: log(prefix + line))
    timing = {**(timing or {}), **result.timing, "fit_s": round(time.perf_counter() - start, 3)}
    warnings = [*task.warnings(), *result.warnings]
    for line in warnings:
        log(prefix + f"warning: {line}")
    record = run_record(task, evaluation, identity, result, stats, timing, files, data, warnings)
    path = write_run(results_root, task.name, identity.name, record, config, result, log)
    primary = evaluation.primary_metric
    log(prefix + f"{task.name}: " + ", ".join(
        f"{split} {primary} {m[primary]['mean']:.3f} ± {m[primary]['std']:.3f}" +
        (f" ({stats.confidence:.0%} CI {m[primary]['ci_low']:.3f}-{m[primary]['ci_high']:.3f})" if "ci_low" in m[primary]
         else "")
        for split, m in record["metrics"].items()) + f" -> {path}")
    return path
