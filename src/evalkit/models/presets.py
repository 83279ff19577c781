"""Named presets of the foundation models people compare: one short data entry per model.

A :class:`Preset` fixes everything that decides a model's embedding: the timm architecture and its
keyword arguments, the input transform, the pooling rule, the embedding width, where its weights
are published and in which layout. The entries live in :mod:`evalkit.models.preset_table`, each
citing its sources; :class:`evalkit.models.preset_model.PresetModel` (registry name ``preset``)
turns one into a frozen backbone. ``evalkit models list`` lists them.

Names are looked up case-insensitively, through each preset's aliases (eva's registry name, the
names in ``results/published/*.csv``), and ``<name>-random`` gives the random-init control of the
same architecture.

This module imports nothing heavy: the command line reads presets to resolve ``--model NAME``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from evalkit.errors import EvalkitError
from evalkit.registry import Registry

Pooling = Literal["cls", "mean", "cls_mean"]
WeightFormat = Literal["timm", "hf_vit", "hf_dinov2"]
RANDOM_SUFFIX = "-random"


@dataclass(frozen=True)
class Preset:
    """One named model, as data.

    Args:
        name: evalkit's name, lower case (``uni2-h``); also the default display name in results.
        architecture: the timm architecture it builds (``vit_giant_patch14_224``).
        arch_kwargs: keyword arguments of ``timm.create_model`` (``num_classes=0`` is always added).
            Layers are given by name from the table of :func:`_layers`
            (``"mlp_layer": "swiglu_packed"``, ``"act_layer": "silu"``), never as import paths.
        embed_dim: width of the pooled embedding (``cls_mean`` gives twice the token width).
        pooling: ``cls`` (class token), ``mean`` (mean of the patch tokens, registers excluded) or
            ``cls_mean`` (the two concatenated, class token first).
        num_registers: register tokens between the class token and the patches (excluded from ``mean``).
        patch_size: the patch size of the architecture, in pixels.
        input_size: side of the square input, in pixels.
        resize_size: shorter side before the centre crop; ``None``: ``input_size``.
        mean: per-channel normalisation mean (RGB, 0..1 scale).
        std: per-channel normalisation std.
        interpolation: resize interpolation (``bilinear``, ``bicubic``).
        hf_repo: the Hugging Face repository its weights are published in (``MahmoodLab/UNI2-h``);
            evalkit only reads it from a local folder or the Hugging Face cache, never downloads.
        weight_format: layout of the published weights: ``timm`` (keys as timm's ``state_dict``),
            ``hf_vit`` (transformers ``ViTModel``) or ``hf_dinov2`` (transformers ``Dinov2Model``);
            mapped to timm's keys and loaded strictly.
        weight_files: the file names looked for in a folder or cache snapshot, in order.
        num_params: parameter count of the upstream reference configuration (the test builds the
            architecture on the meta device and checks it within 0.5 %).
        licence: the licence and whether access is gated, in a few words.
        gated: the upstream repository asks users to accept terms before downloading.
        aliases: other names that select this preset (eva's ``pathology/...`` name, names in
            ``results/published/*.csv``), matched case-insensitively.
        sources: where each number of the entry comes from (model card, eva or TRIDENT file, paper).
        notes: anything a user must know (e.g. how upstream loads it, what was mapped).
    """

    name: str
    architecture: str
    arch_kwargs: dict[str, Any]
    embed_dim: int
    pooling: Pooling
    patch_size: int
    num_params: int
    input_size: int = 224
    resize_size: int | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    num_registers: int = 0
    hf_repo: str | None = None
    weight_format: WeightFormat = "timm"
    weight_files: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
    licence: str = ""
    gated: bool = False
    aliases: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    notes: str = ""
    random_init: bool = field(default=False, compare=False)  # the ``-random`` control of the entry


PRESETS: Registry[Preset] = Registry("model preset", "evalkit.models", modules=["preset_table"])


def _key(name: str) -> str:
    return name.strip().lower()


def _by_alias() -> dict[str, Preset]:
    PRESETS.load()
    table: dict[str, Preset] = {}
    for name, preset in PRESETS.items():
        for key in (name, *preset.aliases):
            other = table.setdefault(_key(key), preset)
            if other is not preset:
                raise EvalkitError(f"model presets '{other.name}' and '{preset.name}' both answer to '{key}'")
    return table


def find_preset(name: str) -> Preset | None:
    """The preset ``name`` selects (by name or alias, any case; ``<name>-random`` for its random-init
    control), or ``None``."""
    table = _by_alias()
    key = _key(name)
    if key in table:
        return table[key]
    if key.endswith(RANDOM_SUFFIX) and key[: -len(RANDOM_SUFFIX)] in table:
        from dataclasses import replace

        preset = table[key[: -len(RANDOM_SUFFIX)]]
        return replace(preset, name=preset.name + RANDOM_SUFFIX, aliases=(), random_init=True)
    return None


def get_preset(name: str) -> Preset:
    """Like :func:`find_preset`, but an unknown name is an error that lists the presets."""
    preset = find_preset(name)
    if preset is None:
        raise EvalkitError(f"unknown model preset '{name}'; `evalkit models list` shows them: "
                           f"{', '.join(n for n, _ in PRESETS.items())}")
    return preset


def _layers() -> dict[str, Any]:
    """The layers a preset may name in ``arch_kwargs`` (a fixed table: a preset never names an import path)."""
    from functools import partial

    from timm.layers import SwiGLU, SwiGLUPacked
    from torch import nn

    return {"swiglu_packed": SwiGLUPacked, "swiglu": SwiGLU, "silu": nn.SiLU, "gelu": nn.GELU,
            "layernorm_eps1e-12": partial(nn.LayerNorm, eps=1e-12), "layernorm_eps1e-6": partial(nn.LayerNorm, eps=1e-6)}


LAYER_KEYS = ("mlp_layer", "act_layer", "norm_layer")  # the arch_kwargs whose value is a name in the layer table


def create_network(preset: Preset, depth: int | None = None, meta: bool = False) -> Any:
    """The timm network of ``preset``, randomly initialised, classifier removed.

    Args:
        depth: number of blocks instead of the preset's (tests build the ~1B-parameter models shallow).
        meta: build on the meta device (no memory): for counting parameters of the full architecture.
    """
    import timm
    import torch

    layers = _layers()
    kwargs = dict(preset.arch_kwargs)
    for key in LAYER_KEYS:
        if isinstance(kwargs.get(key), str):
            if kwargs[key] not in layers:
                raise EvalkitError(f"preset '{preset.name}': {key} '{kwargs[key]}' is not one of {', '.join(layers)}")
            kwargs[key] = layers[kwargs[key]]
    if depth is not None:
        kwargs["depth"] = depth
    with torch.device("meta") if meta else torch.device("cpu"):
        return timm.create_model(preset.architecture, pretrained=False, num_classes=0, **kwargs)
