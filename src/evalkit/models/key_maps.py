"""Published weight layouts, renamed to timm's keys, then loaded strictly.

A preset's ``weight_format`` names the layout its upstream repository ships:

- ``timm``: the keys of timm's ``state_dict`` already (UNI, Virchow, ... as ``timm.create_model("hf-hub:...")``
  reads them); taken as they are.
- ``hf_vit``: a transformers ``ViTModel`` saved with ``save_pretrained`` (``embeddings.*``,
  ``encoder.layer.N.attention.attention.query`` ...): query, key and value are fused into timm's ``qkv``;
  the pooler and the mask token, which timm's ViT has no use for, are dropped.
- ``hf_dinov2``: a transformers ``Dinov2Model`` or ``Dinov2WithRegistersModel``: as ``hf_vit``, plus layer
  scale (``layer_scale1.lambda1`` -> ``ls1.gamma``), register tokens (``reg_token``) and the SwiGLU MLP
  (``weights_in``/``weights_out`` -> ``mlp.fc1``/``mlp.fc2`` of timm's ``SwiGLUPacked``, or split into
  ``fc1_g``/``fc1_x`` for timm's ``SwiGLU``).

transformers adds the position of the class token to the class token; where the timm network gives the
class token no position (``no_embed_class=True``, timm's layout for DINOv2 with registers), that position is
folded into ``cls_token``, which is exact. Keys a map does not know are kept as they are, so the strict load
reports them. ``tests/models/test_key_maps.py`` checks each map against transformers' own forward pass.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping

import torch

from evalkit.errors import EvalkitError

State = dict[str, torch.Tensor]

# transformers' key -> timm's key, by regular expression (``None``: dropped), shared by ViT and DINOv2.
_EMBEDDINGS: list[tuple[str, str | None]] = [
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.register_tokens", "reg_token"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"embeddings\.mask_token", None),  # masked-image pretraining only
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
]
_VIT: list[tuple[str, str | None]] = _EMBEDDINGS + [
    (r"encoder\.layer\.(\d+)\.layernorm_before\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (r"encoder\.layer\.(\d+)\.layernorm_after\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (r"encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"pooler\.dense\.(weight|bias)", None),  # ViTModel's tanh pooler: not part of the backbone's tokens
]
_DINOV2: list[tuple[str, str | None]] = _EMBEDDINGS + [
    (r"encoder\.layer\.(\d+)\.norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (r"encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1", r"blocks.\1.ls\2.gamma"),
    (r"encoder\.layer\.(\d+)\.mlp\.fc([12])\.(weight|bias)", r"blocks.\1.mlp.fc\2.\3"),
    (r"encoder\.layer\.(\d+)\.mlp\.weights_in\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (r"encoder\.layer\.(\d+)\.mlp\.weights_out\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
]
_QKV = re.compile(r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)")


def _rename(state: Mapping[str, torch.Tensor], table: list[tuple[str, str | None]]) -> State:
    """``state`` renamed by ``table``, query/key/value fused into ``qkv``; unknown keys kept as they are."""
    rules = [(re.compile(pattern), target) for pattern, target in table]
    out: State = {}
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if match := _QKV.fullmatch(key):
            parts.setdefault((match[1], match[3]), {})[match[2]] = value
            continue
        rule = next(((rx, target) for rx, target in rules if rx.fullmatch(key)), None)
        if rule is None:
            out[key] = value
        elif rule[1] is not None:
            out[rule[0].sub(rule[1], key)] = value
    for (layer, kind), qkv in parts.items():
        if set(qkv) == {"query", "key", "value"}:
            out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([qkv["query"], qkv["key"], qkv["value"]])
        else:  # an incomplete triple stays as it is, for the strict load to name
            out.update({f"encoder.layer.{layer}.attention.attention.{name}.{kind}": v for name, v in qkv.items()})
    return out


def _fold_class_position(state: State, target: Mapping[str, torch.Tensor]) -> State:
    """Where the timm network has no position for the class token (``no_embed_class``) and transformers has one,
    add it to the class token: transformers adds it to every image alike."""
    pos, own = state.get("pos_embed"), target.get("pos_embed")
    if pos is not None and own is not None and "cls_token" in state and pos.shape[1] == own.shape[1] + 1:
        state["cls_token"] = state["cls_token"] + pos[:, :1]
        state["pos_embed"] = pos[:, 1:]
    return state


def _split_swiglu(state: State, target: Mapping[str, torch.Tensor]) -> State:
    """transformers' packed SwiGLU input layer (gate half first) as timm's ``SwiGLU`` (``fc1_g``, ``fc1_x``), where
    the network has that one rather than ``SwiGLUPacked`` (one ``fc1``)."""
    for key in [k for k in state if re.fullmatch(r"blocks\.\d+\.mlp\.fc1\.(weight|bias)", k)]:
        prefix, kind = key.rsplit(".fc1.", 1)
        if f"{prefix}.fc1_g.{kind}" in target and key not in target:
            gate, value = state.pop(key).chunk(2, dim=0)
            state[f"{prefix}.fc1_g.{kind}"], state[f"{prefix}.fc1_x.{kind}"] = gate, value
    return state


def _timm(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> State:
    return dict(state)


def _hf_vit(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> State:
    return _fold_class_position(_rename(state, _VIT), target)


def _hf_dinov2(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> State:
    return _split_swiglu(_fold_class_position(_rename(state, _DINOV2), target), target)


KEY_MAPS: dict[str, Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], State]] = {
    "timm": _timm, "hf_vit": _hf_vit, "hf_dinov2": _hf_dinov2}


def to_timm(state: Mapping[str, torch.Tensor], weight_format: str, target: Mapping[str, torch.Tensor]) -> State:
    """``state`` (in the layout ``weight_format`` names) with timm's keys; ``target`` is the timm network's
    ``state_dict``, whose shapes decide the two layout choices (class-token position, SwiGLU packing)."""
    if weight_format not in KEY_MAPS:
        raise EvalkitError(f"weight_format '{weight_format}' is not one of {', '.join(KEY_MAPS)}")
    return KEY_MAPS[weight_format](state, target)


def load_mapped(net: torch.nn.Module, state: Mapping[str, torch.Tensor], weight_format: str, source: str,
                what_to_do: str, assign: bool = False) -> None:
    """Load ``state`` (layout ``weight_format``) into the timm network ``net`` strictly: any missing, unexpected or
    mis-shaped key is one line naming the first few, ending in ``what_to_do``. ``assign``: the tensors become the
    network's (cast to its dtypes), for a network built on the meta device."""
    own = net.state_dict()
    mapped = to_timm(state, weight_format, own)
    missing, unexpected = sorted(set(own) - set(mapped)), sorted(set(mapped) - set(own))
    mismatched = [f"{k} {tuple(mapped[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(set(own) & set(mapped))
                  if own[k].shape != mapped[k].shape]
    parts = [f"{label}: {', '.join(keys[:4])}" + (f", ... ({len(keys)} in all)" if len(keys) > 4 else "")
             for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)) if keys]
    if parts:
        raise EvalkitError(f"{source} does not fit the network in the {weight_format} layout ({'; '.join(parts)}); "
                           f"{what_to_do}")
    if assign:
        mapped = {k: v.to(dtype=own[k].dtype).contiguous() for k, v in mapped.items()}
    net.load_state_dict(mapped, strict=True, assign=assign)
