"""Schema-2 results.json files written by hand, for the report tests (the writer is `evalkit fit`'s)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from evalkit.metrics.spec import METRICS


def fingerprint(name: str) -> str:
    """A stable 64-hex fingerprint per name: one model per display name unless a test says otherwise."""
    return hashlib.sha256(name.encode()).hexdigest()


def results(task: str, model: str, metrics: dict[str, dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A schema-2 results.json body; ``fields`` replace keys, ``metric_info`` adds to the registry's entries."""
    representation = fields.get("representation") or {}
    names = {name for values in [*metrics.values(), *representation.values()] for name in values}
    info = {name: METRICS.get(name).as_dict() for name in names if name in METRICS}
    info.update(fields.pop("metric_info", {}))
    body = {"schema_version": 2, "task": task, "evaluation": "linear_probe", "protocol": "sgd_kaiko", "model": model,
            "model_fingerprint": fingerprint(model), "n_runs": 3, "num_classes": 4,
            "primary_metric": "balanced_accuracy", "metrics": metrics, "metric_info": info,
            "settings": {"lr": 0.01, "max_steps": 100},
            "provenance": {"evalkit_version": "test", "git_commit": None, "packages": {},
                           "created": "2025-01-01T00:00:00+0000", "cache_files": {}, "cache_keys": [],
                           "fingerprint_source": "weights"}}
    return {**body, **fields}


def write_run(run_dir: Path, body: dict[str, Any], config: dict[str, Any] | None = None) -> Path:
    """results.json and config.yaml (by default one that chose the protocol with ``head.protocol``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(body))
    config = config if config is not None else {"task": body["task"], "head": {"protocol": body["protocol"]}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir


def summary(mean: float, std: float = 0.0) -> dict[str, Any]:
    return {"mean": mean, "std": std, "runs": [mean] * 3}
