"""What a cache cost to embed: images, seconds, start-up, peak memory, device; the ``embedding_cost`` attribute.

Every rank of every run keeps a running record in the split's ``.partial/`` folder, rewritten (atomically)
after each batch it embeds, so a run that is killed leaves what it had spent up to its last batch. When
the file is assembled the records are summed (:func:`total_cost`): the ranks of one run ran side by side
(their images add up, their seconds do not), the runs of a resumed cache one after the other (images,
seconds and start-up add up; peak memory is the largest). Batches copied unchanged from the cache a
refresh replaces are not embedded again and not timed: they are counted in ``copied_images``.
"""

from __future__ import annotations

import json
import os
import re
import resource
import time
from pathlib import Path
from typing import Any

import torch

COST_ATTR = "embedding_cost"  # the cache file's attribute: JSON of total_cost
MEMORY_CUDA = "cuda_max_allocated"  # torch.cuda.max_memory_allocated of the rank's device, over its loop
MEMORY_RSS = "process_peak_rss"  # the embedding process's peak resident memory since it started (workers aside)
_RECORD = re.compile(r"^cost-([0-9a-f]+)-r(\d+)\.json$")


def device_name(device: torch.device) -> str:
    """``cuda:0 NVIDIA H100 80GB HBM3`` or ``cpu (2 threads)``: what ran the forward pass."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    return f"{device.type} ({torch.get_num_threads()} threads)"


def _peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


class CostMeter:
    """One rank's running record of one run, in ``folder`` (the split's ``.partial/``).

    ``split_start``: when this split's embedding began (listing, model build, workers); ``loop_start``: when
    the Trainer was being set up. ``settings``: what the record states as it is (precision, workers, ...).
    """

    def __init__(self, folder: Path, run: str, rank: int, device: torch.device, split_start: float,
                 loop_start: float, model_build_s: float, settings: dict[str, Any]) -> None:
        self.path = folder / f"cost-{run}-r{rank}.json"
        self.device = device
        self.split_start, self.loop_start = split_start, loop_start
        self.record: dict[str, Any] = {
            "run": run, "rank": rank, "started": time.time(), "images": 0, "seconds": 0.0, "first_batch_s": None,
            "first_batch_images": 0, "model_build_s": model_build_s, "startup_s": None,
            "memory_kind": MEMORY_CUDA if device.type == "cuda" else MEMORY_RSS, "peak_memory_bytes": 0,
            "device": device_name(device), **settings}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def batch(self, images: int) -> None:
        """A batch of ``images`` has been embedded: update the record and save it."""
        now = time.perf_counter()
        r = self.record
        if r["first_batch_s"] is None:
            r["first_batch_s"] = now - self.loop_start
            r["first_batch_images"] = images
            r["startup_s"] = now - self.split_start
        r["images"] += images
        r["seconds"] = now - self.loop_start
        r["peak_memory_bytes"] = (int(torch.cuda.max_memory_allocated(self.device)) if self.device.type == "cuda"
                                  else _peak_rss_bytes())
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(r))
        os.replace(tmp, self.path)


def _records(folder: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if _RECORD.match(path.name):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # unreadable: that run's cost is unknown, the rest still counts
    return [r for r in out if r.get("images")]


def _one(values: list[Any]) -> Any:
    """The value when all agree, else the distinct values in run order."""
    distinct = list(dict.fromkeys(json.dumps(v) for v in values))
    return values[0] if len(distinct) == 1 else [json.loads(v) for v in distinct]


def _run_total(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """The ranks of one run worked side by side: images add up, time is the slowest rank's."""
    ranks = sorted(ranks, key=lambda r: r["rank"])
    devices = [r["device"] for r in ranks]
    return {
        "started": min(r["started"] for r in ranks),
        "images": sum(r["images"] for r in ranks),
        "first_batch_images": sum(r["first_batch_images"] for r in ranks),
        "seconds": max(r["seconds"] for r in ranks),
        "first_batch_s": max(r["first_batch_s"] for r in ranks),
        "startup_s": max(r["startup_s"] for r in ranks),
        "model_build_s": max(r["model_build_s"] for r in ranks),
        "peak_memory_bytes": max(r["peak_memory_bytes"] for r in ranks),
        "memory_kind": ranks[0]["memory_kind"],
        "device": devices[0] if len(ranks) == 1 else
        (f"{len(ranks)} x {devices[0]}" if len(set(devices)) == 1 else " + ".join(devices)),
        **{key: ranks[0][key] for key in ("precision", "num_workers", "threads", "batch_size")},
        "devices": len(ranks),
    }


def total_cost(folder: Path, copied_images: int = 0) -> dict[str, Any] | None:
    """The ``embedding_cost`` of the cache assembled from ``folder``: every run's records summed (module
    docstring); ``None`` when no batch of it was timed (nothing embedded since the records were kept)."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for record in _records(folder):
        by_run.setdefault(record["run"], []).append(record)
    runs = sorted((_run_total(ranks) for ranks in by_run.values()), key=lambda r: r["started"])
    if not runs:
        return None
    images = sum(r["images"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    steady_images = sum(r["images"] - r["first_batch_images"] for r in runs)
    steady_seconds = sum(r["seconds"] - r["first_batch_s"] for r in runs)
    kinds = [r["memory_kind"] for r in runs]
    return {
        "images": images,
        "seconds": round(seconds, 3),
        "images_per_s": round(images / seconds, 3) if seconds > 0 else None,
        "steady_images_per_s": round(steady_images / steady_seconds, 3) if steady_images and steady_seconds > 0
        else None,
        "startup_s": round(sum(r["startup_s"] for r in runs), 3),
        "model_build_s": round(sum(r["model_build_s"] for r in runs), 3),
        # Peaks of one kind: the largest; of several (a run resumed on another device): one per run.
        "peak_memory_bytes": max(r["peak_memory_bytes"] for r in runs) if len(set(kinds)) == 1
        else [r["peak_memory_bytes"] for r in runs],
        "memory_kind": kinds[0] if len(set(kinds)) == 1 else kinds,
        "device": _one([r["device"] for r in runs]),
        "devices": _one([r["devices"] for r in runs]),
        "precision": _one([r["precision"] for r in runs]),
        "num_workers": _one([r["num_workers"] for r in runs]),
        "threads": _one([r["threads"] for r in runs]),
        "batch_size": _one([r["batch_size"] for r in runs]),
        "runs": len(runs),
        "copied_images": int(copied_images),
    }
