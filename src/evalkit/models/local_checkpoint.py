"""Any PyTorch module (built by an importable function) with weights from a local file."""

from __future__ import annotations

import contextlib
from typing import Any

from torch import nn

from evalkit.errors import EvalkitError
from evalkit.models.base import Backbone, ModelSpec, ModuleBackbone, Pooling, Preprocessing
from evalkit.models.checkpoint import load_strict, no_code_loads, read_state_dict, remap_keys
from evalkit.models.registry import MODELS
from evalkit.models.trust import code_trusted, import_builder


@MODELS.register("checkpoint")
class LocalCheckpointModel(ModelSpec):
    """A network built by ``builder(**builder_kwargs)`` and loaded strictly from ``checkpoint_path``.

    The module's output is read by shape: ``[B, D]`` is the embedding, ``[B, C, H, W]`` is
    average-pooled, ``[B, N, D]`` takes token 0 (or what ``pooling`` says).

    Args:
        builder: importable callable returning an ``nn.Module``: a model class or factory of evalkit,
            torch.nn, torchvision.models, timm or transformers (``torchvision.models.resnet18``,
            ``timm.create_model``); any other code (``mypackage.models:build``) only with
            ``EVALKIT_TRUST_CODE=1`` in the environment (see :mod:`evalkit.models.trust`).
        checkpoint_path: local weights file (``.pt``, ``.pth``, ``.ckpt``, ``.safetensors``).
        builder_kwargs: keyword arguments for ``builder``.
        checkpoint_key: nested entry that holds the weights (``state_dict``, ``teacher``, ...).
        prefix_map: key-prefix renames; a prefix mapped to null drops its keys.
        num_prefix_tokens: for token outputs, tokens before the patches (class token first, then registers).
        pooling: for token outputs, null (token 0), ``cls``, ``mean`` (patch tokens) or ``cls_mean`` (both,
            concatenated); a feature map is averaged for ``cls`` and ``mean``; see docs/models.md, Pooling.
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
        pooling: Pooling | None = None,
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
        self.pooling = pooling

    def default_name(self) -> str:
        return self.builder.replace(":", ".").rpartition(".")[2]

    def config(self) -> dict[str, Any]:
        cfg = {"builder": self.builder, "builder_kwargs": self.builder_kwargs,
               "checkpoint_key": self.checkpoint_key, "prefix_map": self.prefix_map,
               "identity_modules": self.identity_modules}
        if self.pooling is not None:  # only then: the default keeps the fingerprints made before the option existed
            cfg["pooling"] = self.pooling
        return cfg

    def build(self) -> Backbone:
        builder = import_builder(self.builder)  # refuses code outside model building unless the user opted in
        # Model factories read weights only without running code (torchvision's, given weights, read their hub cache
        # with weights_only=False); code the user opted in to runs as written, its own torch.load calls included.
        guard = contextlib.nullcontext() if code_trusted() else no_code_loads()
        try:
            with guard:
                net = builder(**self.builder_kwargs)
        except TypeError as exc:  # builder_kwargs that do not fit the builder's signature
            raise EvalkitError(f"{self.builder} refused builder_kwargs {self.builder_kwargs}: {exc}") from None
        if not isinstance(net, nn.Module):
            raise EvalkitError(f"builder '{self.builder}' returned a {type(net).__name__}, expected a torch.nn.Module; "
                               "name a function or class that builds the network")
        state = remap_keys(read_state_dict(self.checkpoint_path, self.checkpoint_key), self.prefix_map)
        load_strict(net, state, self.checkpoint_path)
        for attr in self.identity_modules:
            if not isinstance(getattr(net, attr, None), nn.Module):
                raise EvalkitError(f"identity_modules: {self.builder} has no submodule '{attr}'")
            setattr(net, attr, nn.Identity())
        return ModuleBackbone(net, self.resolved_preprocessing(), self.num_prefix_tokens, self.pooling)
