"""``evalkit data check``: what a dataset folder holds, beside what the official release holds."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from evalkit.data.base import MAX_IMAGE_PIXELS, DatasetSpec, SplitListing, check_pixel_limit
from evalkit.errors import EvalkitError
from evalkit.task import Task


def _unreadable(spec: DatasetSpec, listing: SplitListing, workers: int, max_pixels: int) -> list[str]:
    """Why each sample that cannot be decoded in full (image, and mask where it has one) failed; images of
    more than ``max_pixels`` pixels, or of pixel types with no 8-bit form, count as unreadable."""

    def bad(index: int) -> str | None:
        try:
            spec.check_sample(listing, index, max_pixels)
        except EvalkitError as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decodes without holding the GIL
        return [reason for reason in pool.map(bad, range(len(listing))) if reason is not None]


def check_task(task: Task, data_root: str | Path, decode: bool = True, log=print,
               max_image_pixels: int = MAX_IMAGE_PIXELS) -> tuple[list[str], list[str]]:
    """Print, per split, the counts found beside the official ones; return (count problems, unreadable).

    A missing folder or file raises at once (one line naming it); count differences are
    problems unless the dataset allows a subset; unreadable samples (including images of
    more than ``max_image_pixels`` pixels) are always problems.
    """
    check_pixel_limit(max_image_pixels)
    spec = task.dataset
    problems: list[str] = []
    unreadable: list[str] = []
    workers = min(8, os.cpu_count() or 1)
    for split in task.splits:
        listing = spec.list_split(data_root, split, check_counts=False)
        rows = spec.count_rows(listing, split)
        log(f"{task.name} / {split}: {len(listing)} samples under {Path(data_root) / spec.root}")
        log(f"  {'class':16s} {'found':>8s} {'official':>9s}")
        for name, found, official in rows:
            status = "" if official is None or found == official else ("  differs" + (" (subset allowed)" if spec.allow_subset else ""))
            log(f"  {name:16s} {found:8d} {official if official is not None else '-':>9}{status}")
            if official is not None and found != official and not spec.allow_subset:
                problems.append(f"{split}: {name} has {found} samples, official {official}")
        if decode:
            bad = _unreadable(spec, listing, workers, max_image_pixels)
            log(f"  unreadable: {len(bad)} of {len(listing)}")
            for reason in bad[:10]:
                log(f"    {reason}")
            unreadable += [f"{split}: {reason}" for reason in bad]
    return problems, unreadable
