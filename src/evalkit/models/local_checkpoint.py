"""Any PyTorch module (built by an importable function) with weights from a local file."""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from evalkit.errors import EvalkitError
from evalkit.models.base import Backbone, ModelSpec, ModuleBackbone, Preprocessing
from evalkit.models.checkpoint import load_strict, read_state_dict, remap_keys
from evalkit.models.registry import MODELS


def _import_callable(path: str) -> Any:
    module_name, _, attr = path.replace(":", ".").rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise EvalkitError(f"cannot import builder '{path}'; expected 'package.module.function'") from None


@MODELS.register("checkpoint")
class LocalCheckpointModel(ModelSpec):
    """A network built by ``builder(**builder_kwargs)`` and loaded strictly from ``checkpoint_path``.

    The module's output is read by shape: ``[B, D]`` is the embedding, ``[B, C, H, W]`` is
    average-pooled, ``[B, N, D]`` takes token 0.

    Args:
        builder: importable callable returning an ``nn.Module`` (``torchvision.models.resnet18``,
            ``mypackage.models:build``).
        checkpoint_path: local weights file (``.pt``, ``.pth``, ``.ckpt``, ``.safetensors``).
        builder_kwargs: keyword arguments for ``builder``.
        checkpoint_key: nested entry that holds the weights (``state_dict``, ``teacher``, ...).
        prefix_map: key-prefix renames; a prefix mapped to null drops its keys.
        num_prefix_tokens: for token outputs, tokens before the patches.
        identity_modules: attribute names of submodules replaced by the identity after loading,
            typically the classifier (``[fc]`` for a torchvision ResNet) so the output is the embedding.
        name: display name in results; defaults to the builder's name.
        preprocessing: the input transform (ImageNet statistics at 224 px by default).
    """

    weight_files = ("checkpoint_path",)

    def __init__(
        self,
        builder: str,
        checkpoint_path: str,
        builder_kwargs: dict[str, Any] | None = None,
        checkpoint_key: str | None = None,
        prefix_map: dict[str, str | None] | None = None,
        num_prefix_tokens: int = 1,
        identity_modules: list[str] | None = None,
        name: str | None = None,
        preprocessing: Preprocessing | None = None,
    ) -> None:
        super().__init__(name, preprocessing)
        self.builder = builder
        self.checkpoint_path = checkpoint_path
        self.builder_kwargs = dict(builder_kwargs or {})
        self.checkpoint_key = checkpoint_key
        self.prefix_map = dict(prefix_map or {})
        self.num_prefix_tokens = num_prefix_tokens
        self.identity_modules = list(identity_modules or [])

    def default_name(self) -> str:
        return self.builder.replace(":", ".").rpartition(".")[2]

    def config(self) -> dict[str, Any]:
        return {"builder": self.builder, "builder_kwargs": self.builder_kwargs,
                "checkpoint_key": self.checkpoint_key, "prefix_map": self.prefix_map,
                "identity_modules": self.identity_modules}

    def build(self) -> Backbone:
        try:
            net = _import_callable(self.builder)(**self.builder_kwargs)
        except TypeError as exc:  # builder_kwargs that do not fit the builder's signature
            raise EvalkitError(f"{self.builder} refused builder_kwargs {self.builder_kwargs}: {exc}") from None
        state = remap_keys(read_state_dict(self.checkpoint_path, self.checkpoint_key), self.prefix_map)
        load_strict(net, state, self.checkpoint_path)
        for attr in self.identity_modules:
            if not isinstance(getattr(net, attr, None), nn.Module):
                raise EvalkitError(f"identity_modules: {self.builder} has no submodule '{attr}'")
            setattr(net, attr, nn.Identity())
        return ModuleBackbone(net, self.preprocessing_override or Preprocessing(), self.num_prefix_tokens)
