"""Checkpoint files of ``evalkit pretrain``: written atomically, and which one a rerun resumes from.

Why both. Lightning's own ``_atomic_save`` (2.6) writes the checkpoint to a temporary file in the
system temp folder and ``shutil.move``s it into place: a rename (atomic) when that folder is on
the same filesystem as ``output_dir``, but a plain copy when it is not (``/tmp`` on a local disk or
tmpfs, checkpoints on a network filesystem, as on most clusters), and nothing is fsynced. A kill
during that copy, or a power loss, leaves a truncated ``last.ckpt`` that Lightning then fails to load
on every rerun. ``ModelCheckpoint`` has no option for this, so :class:`AtomicCheckpointIO` writes
beside the target and renames; :func:`resume_checkpoint` still copes with a damaged file (one
written before this, or damaged by other means).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Callable

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from evalkit.errors import EvalkitError
from evalkit.models.checkpoint import Unreadable, probe_weights_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in its own folder, fsyncs it and renames it into place,
    so ``last.ckpt`` is always either the previous whole checkpoint or the new whole one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """``torch.save`` into ``.<name>.partial-<pid>`` beside ``path``, fsync, rename over ``path``."""
        if storage_options is not None:  # as TorchCheckpointIO: it takes none
            raise TypeError(f"storage_options is not supported by {type(self).__name__}, got {storage_options}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")  # no .ckpt ending: no glob picks it up
        try:
            with partial.open("wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


def _epoch(path: Path) -> int:
    """NNN of ``epoch=NNN.ckpt``; -1 for any other name (``epoch=003-v1.ckpt``), which sorts last."""
    found = re.fullmatch(r"epoch=(\d+)\.ckpt", path.name)
    return int(found.group(1)) if found else -1


def _set_aside(path: Path, label: str) -> Path | None:
    """Rename ``path`` to ``<name>.<label>-<time>`` (never deleted: it is the user's); ``None`` if another
    process (another DDP rank) already did."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.{label}-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.{label}-{stamp}-{n}")
        n += 1
    try:
        path.rename(target)
    except FileNotFoundError:
        return None
    return target


def resume_checkpoint(output: Path, log: Callable[[str], None]) -> Path | None:
    """The checkpoint a rerun of ``evalkit pretrain`` into ``output`` resumes from; ``None``: train from scratch.

    ``last.ckpt`` when it loads. When it is damaged (truncated, empty: a kill while it was written), it
    is set aside as ``last.ckpt.damaged-<time>`` and the run resumes from the newest ``epoch=NNN.ckpt``
    that loads, so at most the epochs since that one are trained again; damaged epoch files newer than
    that one are set aside too, so the retrained epochs write theirs afresh. When the damaged file is the
    only checkpoint, the run died while writing its first one: it starts from scratch, which loses nothing
    (``metrics.csv``, which Lightning would overwrite, is set aside as well). An interrupted write damages
    one file; several damaged and none whole means a damaged disk or copy: refused, nothing renamed.
    A whole file holding objects other than tensors was not written by evalkit: refused.

    Every DDP rank runs this; each finds the same checkpoint whether or not another rank has already
    set the damaged files aside (a missing ``last.ckpt`` falls back to the epoch files in the same way,
    which also covers a kill between writing ``epoch=NNN.ckpt`` and ``last.ckpt``).
    """
    folder = output / "checkpoints"
    last = folder / "last.ckpt"
    kept = sorted(folder.glob("epoch=*.ckpt"), key=_epoch, reverse=True)
    damaged: list[Unreadable] = []
    chosen = None
    for candidate in ([last] if last.is_file() else []) + kept:
        problem = probe_weights_file(candidate)
        if problem is None:
            chosen = candidate
            break
        if problem.refused:
            raise EvalkitError(f"cannot resume from {candidate}: it holds a non-tensor pickle object "
                               f"({problem.detail}) that evalkit refuses to unpickle, so evalkit did not write it; "
                               f"move it out of {folder} or train into another --trainer.output_dir")
        damaged.append(problem)
    if not damaged:
        if chosen is not None and chosen != last:
            log(f"no last.ckpt in {folder}; resuming from {chosen.name}, the newest kept checkpoint")
        return chosen
    if chosen is None and len(damaged) > 1:
        raise EvalkitError(f"cannot resume: {len(damaged)} checkpoints in {folder} are truncated, empty or not "
                           f"checkpoints ({damaged[0].path}: {damaged[0].detail}), more than an interrupted write "
                           "leaves; check the disk or copy, or train into another --trainer.output_dir")
    for problem in damaged:
        _set_aside(Path(problem.path), "damaged")
    names = " and ".join(Path(p.path).name for p in damaged) + (" is" if len(damaged) == 1 else " are")
    said = f"{names} damaged ({damaged[0].detail}), set aside as *.damaged-<time> in {folder}"
    if chosen is not None:
        log(f"{said}; resuming from {chosen.name}, the newest whole checkpoint")
        return chosen
    metrics = output / "metrics.csv"
    aside = _set_aside(metrics, "before-restart") if metrics.is_file() else None
    log(f"{said}; no other checkpoint to fall back on, so training from scratch"
        + (f" (the earlier metrics.csv is now {aside.name})" if aside else ""))
    return None
