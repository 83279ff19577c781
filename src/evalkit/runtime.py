"""Process-wide runtime helpers: which device a setting means, progress bars, the DDP rank.

Every stage (embedding, head fitting, segmentation, pretraining) asks these the same questions,
so the answers live here, importable without Lightning.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import torch

from evalkit.errors import EvalkitError


def on_gpu(accelerator: str) -> bool:
    """Whether a Lightning ``accelerator`` setting puts the work on a GPU (``auto``: when one is there)."""
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def check_torch_device(device: str, option: str) -> torch.device:
    """``device`` (``auto``: CUDA when there is one) as a torch device, refused in one line when this
    machine cannot run it: asking for a GPU that is not there is a config mistake, not a crash."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise EvalkitError(f"{option} '{device}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise EvalkitError(f"{option} is '{device}' but this machine has no CUDA GPU; use auto or cpu")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise EvalkitError(f"{option} is '{device}' but only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    return resolved


def progress_bars() -> bool:
    """Lightning's progress bars only on a terminal: they go to stdout, and in a pipe, a CI log or
    a redirected file their carriage-return redraws are noise around the output people read."""
    return sys.stdout.isatty()


def is_global_zero() -> bool:
    """False on the other ranks of a DDP run, which only help embedding."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    # Before the process group exists, a rank that Lightning launched knows itself from its environment.
    return all(int(os.environ.get(name) or 0) == 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block (``None``: left as they are), and the caller's
    count restored after it, however the block ends."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
