"""The run record: ``results.json`` + the resolved ``config.yaml`` + ``predictions.h5``, written by
:func:`write_run` for every evaluation, with one meaning per key (docs/cache.md#resultsjson lists them).

results.json carries ``schema_version``; readers refuse another version in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import platform
import secrets
import statistics
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import yaml

from evalkit import __version__
from evalkit.locks import FileLock
from evalkit.paths import inside
from evalkit.predictions import write_predictions

if TYPE_CHECKING:  # the record's inputs; importing them here would pull every evaluation into readers
    from evalkit.evaluations.base import Evaluation, EvaluationResult
    from evalkit.stats.config import StatsConfig
    from evalkit.task import Task

SCHEMA_VERSION = 2

_PACKAGES = ("torch", "torchvision", "timm", "lightning", "torchmetrics", "transformers", "h5py", "numpy",
             "jsonargparse", "scikit-learn")


def summarize(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (as eva reports it) and every run."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "runs": list(values)}


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def git_commit() -> str | None:
    """The commit of the evalkit checkout in use (with ``-dirty`` for local changes), if any."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def remove_leftover_runs(model_dir: Path) -> list[Path]:
    """Delete the hidden folders of fits that were killed while writing (their lock is free); returns them.

    A fit holds ``.<run-id>.lock`` from before it creates ``.<run-id>.partial/`` until after it renamed it,
    so a folder whose lock is free was left by a dead process; a live fit's folder is never touched.
    """
    removed = []
    for lock_file in sorted(model_dir.glob(".*.lock")):
        lock = FileLock(lock_file, "a run folder")
        if not lock.try_acquire():
            continue
        try:
            partial = lock_file.with_name(lock_file.name[: -len(".lock")] + ".partial")
            if partial.is_dir():
                shutil.rmtree(partial)
                removed.append(partial)
            lock_file.unlink(missing_ok=True)
        finally:
            lock.release()
    return removed


@dataclass(frozen=True)
class ModelIdentity:
    """Which model a run scored: a display name, and the fingerprint that is its identity.

    ``source`` says how the fingerprint was found: ``weights`` (hashed now), ``index`` (the weights
    were absent; ``predict`` recorded it) or ``cache_files`` (bring-your-own embeddings).
    """

    name: str | None
    fingerprint: str | None
    source: str


def run_record(task: Task, evaluation: Evaluation, identity: ModelIdentity, result: EvaluationResult,
               stats: StatsConfig, timing: dict[str, Any], files: dict[str, Path], data: dict[str, Any],
               warnings: list[str]) -> dict[str, Any]:
    """results.json of one fit (schema 2); every key has one meaning."""
    metrics = {}
    for split, per_metric in result.metrics.items():
        cis = result.intervals.get(split, {})
        metrics[split] = {name: {**summarize(values), **({"ci_low": cis[name][0], "ci_high": cis[name][1]}
                                                         if name in cis else {})}
                          for name, values in per_metric.items()}
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "task": task.name,
        "evaluation": evaluation.name,
        "protocol": evaluation.protocol,
        "model": identity.name,
        "model_fingerprint": identity.fingerprint,
        "n_runs": evaluation.n_runs,
        "num_classes": result.num_classes,
        "primary_metric": evaluation.primary_metric,
        "metrics": metrics,
        "metric_info": evaluation.metric_info(result),
        "representation": result.representation,
        "settings": result.settings,
        "curves": result.curves,
        "per_class": result.per_class,
        "statistics": ({"ci": "percentile bootstrap over the evaluated samples of the mean over runs",
                        "confidence": stats.confidence, "n_resamples": stats.n_resamples, "seed": stats.seed}
                       if result.intervals else {}),
        "timing": {**timing, **_seconds_per_head_fit(timing, evaluation.n_runs)},
        "embedding": embedding_record(data, timing.get("embed_reused")),
        "warnings": warnings,
        "provenance": {
            "fingerprint_source": identity.source,
            "cache_keys": [Path(path).stem for path in files.values()],
            "cache_files": {split: str(path) for split, path in files.items()},
            "skipped_unreadable": {split: json.loads(getattr(d, "attrs", {}).get("skipped_ids") or "[]")
                                   for split, d in data.items()},
        },
    }
    return record


def _seconds_per_head_fit(timing: dict[str, Any], n_runs: int | None) -> dict[str, float]:
    """``seconds_per_head_fit``: the fit's seconds, less its label-efficiency curves, per seeded run."""
    if "fit_s" not in timing or not n_runs:
        return {}
    return {"seconds_per_head_fit": round((timing["fit_s"] - timing.get("label_efficiency_s", 0.0)) / n_runs, 4)}


def _attr_json(attrs: dict[str, Any], key: str) -> Any:
    value = attrs.get(key)
    if isinstance(value, bytes):
        value = value.decode()
    try:
        return json.loads(value) if isinstance(value, str) else None
    except json.JSONDecodeError:
        return None


def embedding_record(data: dict[str, Any], reused: bool | None) -> dict[str, Any]:
    """How the features were made, as their caches recorded it when they were written: ``precision``, the exact
    ``preprocessing`` (transform) applied, and ``cost`` per split (images/s, peak memory, device, ...).

    A cache written before these were recorded says nothing of them, and neither does the record: null
    (such a cache was fp32 on a CPU but bf16 on a GPU). ``reused``: this command found every cache complete,
    so the cost is the one recorded when they were written, not measured now (null when ``fit`` ran alone).
    """
    attrs = {split: dict(getattr(d, "attrs", None) or {}) for split, d in data.items()}
    precisions = sorted({str(a["precision"]) for a in attrs.values() if a.get("precision")})
    transforms = {split: t for split, a in attrs.items() if (t := _attr_json(a, "preprocessing")) is not None}
    distinct = list({json.dumps(t, sort_keys=True): t for t in transforms.values()}.values())
    cost = {split: c for split, a in attrs.items() if (c := _attr_json(a, "embedding_cost")) is not None}
    return {"precision": (precisions[0] if len(precisions) == 1 else "mixed: " + ", ".join(precisions)) if precisions
            else None,
            # one transform for the task; per split only where the splits' caches disagree
            "preprocessing": (distinct[0] if len(distinct) == 1 else transforms) or None,
            "reused": reused, "cost": cost or None}


def write_run(results_root: str | Path, task: str, model: str, record: dict[str, Any], config: dict[str, Any],
              result: EvaluationResult, log: Callable[[str], None] = print) -> Path:
    """Write one run record to ``RESULTS_ROOT/<task>/<model>/<run-id>/`` (run ids sort by time); returns its results.json.

    Everything is written into a hidden ``.<run-id>.partial/`` folder (predictions.h5 and artifacts first,
    results.json last), which is renamed to ``<run-id>`` when whole: a killed fit never leaves a run folder
    without its results.json, and the next fit of the model removes what it left.
    """
    model_dir = inside(results_root, task, model)
    model_dir.mkdir(parents=True, exist_ok=True)
    for leftover in remove_leftover_runs(model_dir):
        log(f"removed {leftover}, left by a fit that was stopped while writing")
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
    lock = FileLock(model_dir / f".{run_id}.lock", "a run folder")
    lock.acquire(log)
    try:
        partial = model_dir / f".{run_id}.partial"
        partial.mkdir()
        _write_files(partial, record, config, result)
        os.rename(partial, model_dir / run_id)
        lock.path.unlink()
    finally:
        lock.release()
    return model_dir / run_id / "results.json"


def _write_files(run_dir: Path, record: dict[str, Any], config: dict[str, Any], result: EvaluationResult) -> None:
    if result.predictions:
        write_predictions(run_dir, result.predictions)
    for name, write in result.artifacts.items():
        write(run_dir / name)
    record = {**record, "provenance": {
        **record.get("provenance", {}), "evalkit_version": __version__, "git_commit": git_commit(),
        "packages": package_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run_dir / "results.json").write_text(json.dumps(record, indent=2))
