"""Loading local weights strictly, with a clear report of keys that do not fit."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from evalkit.errors import EvalkitError

# Keys under which training scripts commonly nest the weights (Lightning, DINO, timm, DeiT).
_NESTED_KEYS = ("state_dict", "model", "teacher", "module", "model_state_dict")


def read_state_dict(path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.pt/.pth/.ckpt/.bin`` (torch) or ``.safetensors``.

    ``key`` picks a nested entry (for example ``teacher`` in a DINO training checkpoint);
    without it the common nesting keys are unwrapped when the top level holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise EvalkitError(f"checkpoint not found: {path}; set checkpoint_path to a local weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            # DINO's main_dino.py stores its argparse.Namespace beside the weights.
            with torch.serialization.safe_globals([argparse.Namespace]):
                state = torch.load(path, map_location="cpu", weights_only=True)
    except EvalkitError:
        raise
    except Exception as exc:  # corrupt or foreign file
        detail = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
        raise EvalkitError(f"cannot read checkpoint {path}: {type(exc).__name__}: {detail[0] if detail else ''}") from None
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
