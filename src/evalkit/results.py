"""results.json: one per run, with the provenance needed to trust and reproduce a number."""

from __future__ import annotations

import json
import os
import platform
import secrets
import statistics
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from evalkit import __version__

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


def new_run_dir(results_root: str | Path, task: str, model: str) -> Path:
    """``RESULTS_ROOT/<task>/<model>/<run-id>/``; run ids sort by time."""
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
    path = Path(results_root) / task / model / run_id
    path.mkdir(parents=True, exist_ok=False)
    return path


def write_results(run_dir: Path, results: dict[str, Any], config: dict[str, Any]) -> Path:
    """Write ``results.json`` and the resolved ``config.yaml`` beside it (via temporary names)."""
    results = {**results, "provenance": {
        "config": config, "evalkit_version": __version__, "git_commit": git_commit(),
        "packages": package_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **results.get("provenance", {}),
    }}
    for name, text in (("config.yaml", yaml.safe_dump(config, sort_keys=False)),
                       ("results.json", json.dumps(results, indent=2))):
        tmp = run_dir / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, run_dir / name)
    return run_dir / "results.json"
