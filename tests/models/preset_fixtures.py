"""Tiny synthetic presets and weight files for the model tests (the fixtures that use them are in conftest.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from evalkit.models.presets import Preset, create_network


def _tiny(name: str, **fields: Any) -> Preset:
    """A vit_tiny-sized preset at 32 px (patch 8: a 4x4 grid); its num_params counted on the meta device."""
    kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0,
              **fields.pop("arch_kwargs", {})}
    preset = Preset(name=name, architecture="vit_tiny_patch16_224", arch_kwargs=kwargs, embed_dim=fields.pop("embed_dim", 32),
                    pooling=fields.pop("pooling", "cls"), patch_size=8, num_params=0, input_size=32,
                    hf_repo=f"evalkit-test/{name}", sources=("tests/models/conftest.py",), **fields)
    return replace(preset, num_params=sum(p.numel() for p in create_network(preset, meta=True).parameters()))


# One preset per layout and pooling that the tests exercise.
SYNTHETIC = {p.name: p for p in [
    _tiny("tiny-vit", aliases=("pathology/tiny_vit",)),
    _tiny("tiny-vit-reg", arch_kwargs={"reg_tokens": 4, "no_embed_class": True, "init_values": 1e-5},
          num_registers=4, pooling="cls_mean", embed_dim=64),
    _tiny("tiny-hf-vit", arch_kwargs={"norm_layer": "layernorm_eps1e-12"}, weight_format="hf_vit", pooling="mean"),
    _tiny("tiny-hf-dinov2", arch_kwargs={"init_values": 1.0}, weight_format="hf_dinov2"),
    _tiny("tiny-hf-dinov2-reg", arch_kwargs={"init_values": 1.0, "reg_tokens": 4, "no_embed_class": True},
          num_registers=4, weight_format="hf_dinov2", pooling="cls_mean", embed_dim=64),
    _tiny("tiny-hf-dinov2-swiglu", arch_kwargs={"init_values": 1.0, "mlp_ratio": 3.0, "mlp_layer": "swiglu_packed",
                                                 "act_layer": "silu"}, weight_format="hf_dinov2"),
    _tiny("tiny-hf-dinov2-swiglu-split", arch_kwargs={"init_values": 1.0, "mlp_ratio": 1.5, "mlp_layer": "swiglu",
                                                       "act_layer": "silu"}, weight_format="hf_dinov2"),
    _tiny("tiny-gated", gated=True, weight_files=("pytorch_model.bin",)),
]}


def random_state(preset: Preset, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of the preset's network, in timm's layout."""
    torch.manual_seed(seed)
    return create_network(preset).state_dict()


def save_state(state: dict[str, torch.Tensor], path: Path) -> Path:
    """``state`` as ``model.safetensors`` (safetensors) or any other name (``torch.save``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path
