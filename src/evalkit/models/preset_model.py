"""Named foundation models: ``preset: uni2-h`` builds the preset's timm network and loads its published weights
from this machine (a given file or folder, else the Hugging Face cache; never the network).

A :class:`~evalkit.models.presets.Preset` fixes the architecture, the transform, the pooling and where the
weights are published; this adapter turns one into a frozen backbone. The weights are read without running
code, renamed from their upstream layout to timm's keys (:mod:`evalkit.models.key_maps`) and loaded strictly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from evalkit.errors import EvalkitError
from evalkit.models.base import Backbone, ModelSpec, Pooling, Preprocessing, check_pooling, package_version
from evalkit.models.checkpoint import read_state_dict
from evalkit.models.key_maps import load_mapped
from evalkit.models.presets import Preset, create_network, get_preset
from evalkit.models.registry import MODELS
from evalkit.models.timm_model import TimmBackbone
from evalkit.models.weights import find_weights, how_to_get, resolve_weights, weight_locations


@MODELS.register("preset")
class PresetModel(ModelSpec):
    """A named foundation model (``evalkit models list`` shows the names), built from its preset.

    Args:
        preset: the preset's name or alias, any case (``uni2-h``, ``pathology/mahmood_uni2_h``);
            ``<name>-random`` is the same architecture with random weights, the random-init control.
        weights: the weights file, or a folder holding one of the preset's weight files (what
            ``hf download ORG/NAME --local-dir DIR`` writes); default: the Hugging Face cache
            (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``), as
            ``hf download ORG/NAME`` fills it. Nothing is ever downloaded.
        pooling: overrides the preset's pooling: ``cls`` (class token), ``mean`` (patch tokens, register
            tokens excluded) or ``cls_mean`` (both, concatenated, class token first).
        seed: seed of the random initialisation of a ``-random`` preset.
        name: display name in results; defaults to the preset's name.
        preprocessing: overrides the preset's input transform.
    """

    weight_files = ("weights",)  # config_key records the path as given; the fingerprint hashes the file found

    def __init__(
        self,
        preset: str,
        weights: str | None = None,
        pooling: Pooling | None = None,
        seed: int = 0,
        name: str | None = None,
        preprocessing: Preprocessing | None = None,
    ) -> None:
        super().__init__(name, preprocessing)
        if pooling is not None:
            check_pooling(pooling)
        self.preset: Preset = get_preset(preset)
        if self.preset.random_init and weights is not None:
            raise EvalkitError(f"model preset '{self.preset.name}' is the random-init control and takes no weights; "
                               f"name the preset '{self.preset.name.removesuffix('-random')}' to load {weights}")
        self.weights = weights
        self.pooling: Pooling = pooling or self.preset.pooling
        self.seed = seed

    def default_name(self) -> str:
        return self.preset.name

    def config(self) -> dict[str, Any]:
        """Everything the preset fixes that decides the embeddings (the transform enters through
        :meth:`resolved_preprocessing`, the weights by their bytes)."""
        p = self.preset
        cfg: dict[str, Any] = {"architecture": p.architecture, "arch_kwargs": p.arch_kwargs, "pooling": self.pooling,
                               "num_registers": p.num_registers, "weight_format": p.weight_format}
        if p.random_init:
            cfg.update(random_init=True, seed=self.seed, timm=package_version("timm"),
                       torch=torch.__version__.split("+")[0])
        return cfg

    def resolved_preprocessing(self) -> Preprocessing:
        """The config's ``preprocessing``, else the preset's transform."""
        p = self.preset
        return self.preprocessing_override or Preprocessing(
            input_size=p.input_size, resize_size=p.resize_size, mean=p.mean, std=p.std, interpolation=p.interpolation)

    def weight_paths(self) -> dict[str, Path]:
        """The weights file found now (a random-init preset has none); missing weights are one line naming
        every place looked and how to get them."""
        return {} if self.preset.random_init else {"weights": resolve_weights(self.preset, self.weights)}

    def weight_sources(self) -> dict[str, str]:
        """``weights`` as the config gives it, else the preset's repository in the Hugging Face cache (presets of one
        architecture and transform, such as h-optimus-0 and h-optimus-1, differ only there)."""
        if self.preset.random_init:
            return {}
        return super().weight_sources() or {"hf_repo": str(self.preset.hf_repo)}

    def missing_weights(self) -> list[str]:
        """Where the weights were looked for, when they are nowhere (empty when found, or for random init)."""
        if self.preset.random_init or find_weights(self.preset, self.weights) is not None:
            return []
        return [", ".join(weight_locations(self.preset, self.weights)) or f"model preset '{self.preset.name}'"]

    @property
    def missing_weights_hint(self) -> str:  # type: ignore[override]
        return how_to_get(self.preset, self.weights)

    def build(self) -> Backbone:
        p = self.preset
        file = None if p.random_init else resolve_weights(p, self.weights)  # before building: fail at once
        # With weights to load, the network is built on the meta device and takes the loaded tensors: no random
        # initialisation to overwrite (seconds for a ViT-g) and no second copy in memory. Not where the network
        # has buffers outside its state dict (they would stay on the meta device).
        net = create_network(p, meta=True) if file is not None else None
        if net is None or set(dict(net.named_buffers())) - set(net.state_dict()):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                net = create_network(p)
        preprocessing = self.resolved_preprocessing()
        _check_network(p, net, preprocessing)
        if file is not None:
            load_mapped(net, read_state_dict(file), p.weight_format, str(file),
                        f"is it the weights file of {p.hf_repo or 'model preset ' + repr(p.name)}? "
                        "Download it again, or point the model's weights at the right file",
                        assign=next(net.parameters()).is_meta)
        return TimmBackbone(net.eval().requires_grad_(False), preprocessing, self.pooling)


def _check_network(preset: Preset, net: torch.nn.Module, preprocessing: Preprocessing) -> None:
    """The built network must be what the preset says: token width, register tokens, no pooling inside the
    network that the adapter's pooling would bypass, and an input size it accepts."""
    where = f"model preset '{preset.name}' ({preset.architecture})"
    width = preset.embed_dim // (2 if preset.pooling == "cls_mean" else 1)
    if net.num_features != width:
        raise EvalkitError(f"{where} gives {net.num_features}-d tokens, but its embed_dim {preset.embed_dim} with "
                           f"pooling '{preset.pooling}' implies {width}-d; fix the preset entry")
    prefix = getattr(net, "num_prefix_tokens", None)
    expected = (getattr(net, "cls_token", None) is not None) + preset.num_registers
    if prefix != expected:
        raise EvalkitError(f"{where} has {prefix} prefix tokens, but the preset says a class token and "
                           f"{preset.num_registers} register tokens; fix num_registers or reg_tokens in the preset entry")
    if getattr(net, "attn_pool", None) is not None or not isinstance(getattr(net, "fc_norm", torch.nn.Identity()),
                                                                        torch.nn.Identity):
        raise EvalkitError(f"{where} pools inside the network (attn_pool or fc_norm), which the preset's pooling would "
                           "bypass; build it with global_pool='token' in arch_kwargs")
    patch_embed = getattr(net, "patch_embed", None)
    size = getattr(patch_embed, "img_size", None)
    if getattr(patch_embed, "strict_img_size", False) and size and size[-1] != preprocessing.input_size:
        raise EvalkitError(f"{where} takes {size[-1]} px inputs, the transform gives {preprocessing.input_size} px; "
                           "set preprocessing input_size to it, or use a preset with dynamic_img_size")
