"""Loading local weights strictly and without running code, with one-line errors for files that will not load.

Every weights file evalkit reads goes through :func:`load_weights_file` (``torch.load`` with
``weights_only=True``, or safetensors); libraries that read weights themselves (timm, torchvision,
transformers) run inside :func:`no_code_loads`, which forces the same on every ``torch.load`` they make
(code a user opted in to, see :mod:`evalkit.models.trust`, runs as written).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch
from torch import nn

from evalkit.errors import EvalkitError

# Keys under which training scripts commonly nest the weights (Lightning, DINO, timm, DeiT).
_NESTED_KEYS = ("state_dict", "model", "teacher", "module", "model_state_dict")
# Objects besides tensors that well-known checkpoints hold: DINO's main_dino.py stores its argparse.Namespace.
_SAFE_GLOBALS = [argparse.Namespace]
# What torch's weights-only unpickler says when a pickle names a callable or class outside its allowlist
# (the case of a payload); any other failure means a broken or foreign file.
_REFUSAL_MARKERS = ("GLOBAL ", "allowlisted", "reduce for")


@dataclass(frozen=True)
class Unreadable:
    """Why a weights file did not load: ``refused`` when it holds pickled objects other than tensors
    (unpickling them could run code), otherwise it is truncated, empty or not a weights file at all."""

    path: str  # the file, or a description of it ("the cached weights file of timm model 'x'")
    refused: bool
    detail: str  # the refused object's name, or the loader's own first sentence

    def message(self, what_to_do: str = "copy or download it again") -> str:
        """The one-line error; ``what_to_do`` ends the line of a damaged file."""
        if self.refused:
            return (f"{self.path} holds a non-tensor pickle object ({self.detail}) that evalkit refuses to unpickle, "
                    "since unpickling can run code; convert the weights to safetensors (if you trust the file) "
                    "or use a trusted weights file")
        return f"{self.path} is truncated, empty or not a weights file ({self.detail}); {what_to_do}"


def unreadable(path: str | Path, exc: BaseException) -> Unreadable:
    """Classify the exception a loader raised on ``path``."""
    if isinstance(exc, pickle.UnpicklingError) and any(m in str(exc) for m in _REFUSAL_MARKERS):
        name = re.search(r"GLOBAL (\S+)", str(exc))
        return Unreadable(str(path), True, name.group(1) if name else "a callable")
    inner = exc.__context__ if isinstance(exc, pickle.UnpicklingError) and exc.__context__ else exc
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(inner)).strip()  # torch wraps the unpickler's error in paragraphs
    first = text.splitlines()[0].split(". ")[0].rstrip(".") if text else ""
    return Unreadable(str(path), False, f"{type(inner).__name__}: {first}" if first else type(inner).__name__)


def _load(path: Path, mmap: bool) -> Any:
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        if mmap:  # the header alone proves the file whole: safetensors checks it covers the file exactly
            with safe_open(str(path), framework="pt") as fh:
                return list(fh.keys())
        return load_file(str(path))
    with torch.serialization.safe_globals(_SAFE_GLOBALS):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))


def load_weights_file(path: str | Path, what_to_do: str = "copy or download it again") -> Any:
    """The contents of a ``.safetensors`` or torch file (``.pt/.pth/.ckpt/.bin``), read without running code.

    Raises one EvalkitError line naming ``path`` when the file is missing, damaged (then ending in
    ``what_to_do``) or holds objects other than tensors and plain types."""
    path = Path(path)
    if not path.is_file():
        raise EvalkitError(f"checkpoint not found: {path}; set checkpoint_path to a local weights file")
    try:
        return _load(path, mmap=False)
    except Exception as exc:  # any damaged or foreign file; the loaders' own messages run to paragraphs
        raise EvalkitError(unreadable(path, exc).message(what_to_do)) from None


def probe_weights_file(path: str | Path) -> Unreadable | None:
    """``None`` when ``path`` loads without running code, else why not. Cheap: torch files are memory-mapped
    (the archive's central directory, written last, proves a zip checkpoint whole), safetensors give their header."""
    try:
        _load(Path(path), mmap=True)
    except Exception as exc:
        return unreadable(path, exc)
    return None


def first_unreadable(files: Iterable[Path]) -> Unreadable | None:
    """The first of ``files`` that does not load, if any (to name it in an error)."""
    return next((problem for f in files if (problem := probe_weights_file(f)) is not None), None)


@contextlib.contextmanager
def no_code_loads() -> Iterator[None]:
    """Every ``torch.load`` in the block is ``weights_only``, whatever its caller passes.

    For libraries that read weights themselves: torchvision's ``load_state_dict_from_url`` passes
    ``weights_only=False`` for its hub cache, and what timm and transformers pass is theirs to change.
    torch reads ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` at each call; the variable is process-wide, which is
    fine because models are built on the main thread, before any DataLoader worker starts."""
    saved = {name: os.environ.pop(name, None)
             for name in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def read_state_dict(path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.pt/.pth/.ckpt/.bin`` (torch) or ``.safetensors``.

    ``key`` picks a nested entry (for example ``teacher`` in a DINO training checkpoint);
    without it the common nesting keys are unwrapped when the top level holds no tensors.
    """
    path = Path(path)
    state = load_weights_file(path)
    if key is not None:
        if not isinstance(state, Mapping) or key not in state:
            found = ", ".join(list(state)[:8]) if isinstance(state, Mapping) else type(state).__name__
            raise EvalkitError(f"checkpoint {path} has no entry '{key}' (top-level keys: {found})")
        state = state[key]
    while isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        nested = next((k for k in _NESTED_KEYS if k in state), None)
        if nested is None:
            break
        state = state[nested]
    if not isinstance(state, Mapping):
        raise EvalkitError(f"checkpoint {path} holds a {type(state).__name__}, expected a state dict")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def remap_keys(state: Mapping[str, torch.Tensor], prefix_map: Mapping[str, str | None]) -> dict[str, torch.Tensor]:
    """Rename key prefixes; a prefix mapped to ``None`` drops its keys (e.g. a DINO projection head).

    The longest matching prefix wins, so ``{"backbone.": "", "": None}`` keeps only the backbone.
    """
    prefixes = sorted(prefix_map, key=len, reverse=True)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            out[key] = value
        elif prefix_map[prefix] is not None:
            out[prefix_map[prefix] + key[len(prefix):]] = value
    return out


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module``; any missing, unexpected or mis-shaped key is an error that lists them."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if keys:
                shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
                parts.append(f"{label}: {shown}")
        raise EvalkitError(
            f"checkpoint {source} does not fit the model ({'; '.join(parts)}); "
            "fix the architecture or use prefix_map / checkpoint_key to rename or drop keys"
        )
    module.load_state_dict(state, strict=True)
