"""timm backbones: any model name, random init by default, local weights by path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from evalkit.errors import EvalkitError
from evalkit.models.base import Backbone, ModelSpec, Preprocessing, package_version
from evalkit.models.checkpoint import load_strict, no_code_loads, read_state_dict, remap_keys, unreadable
from evalkit.models.registry import MODELS


class TimmBackbone(Backbone):
    def __init__(self, net: torch.nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__(net.num_features, preprocessing)
        self.net = net
        self.num_prefix_tokens = getattr(net, "num_prefix_tokens", 0)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.net.forward_features(images)
        pooled = self.net.forward_head(features, pre_logits=True)
        if features.ndim == 4:  # CNN: [B, C, H, W] -> positions as patches
            patch = features.flatten(2).transpose(1, 2)
        else:  # ViT: drop class and register tokens
            patch = features[:, self.num_prefix_tokens:]
        return {"cls": pooled, "patch": patch}

    def dense(self, images: torch.Tensor) -> list[torch.Tensor]:
        """CNNs: every stage from stride 4 on (timm's ``forward_intermediates``); ViTs: the patch grid."""
        if self.num_prefix_tokens or not hasattr(self.net, "forward_intermediates"):
            return super().dense(images)
        maps = self.net.forward_intermediates(images, intermediates_only=True)
        return [m for m in maps if images.shape[-1] // m.shape[-1] >= 4]


@MODELS.register("timm")
class TimmModel(ModelSpec):
    """A ``timm`` model by name, as a frozen feature extractor (classifier removed).

    Args:
        model_name: any name ``timm.list_models()`` knows, optionally with a pretrained tag
            (``vit_small_patch16_224.dino``).
        pretrained: fetch timm's published weights (needs network or a filled HF cache).
        checkpoint_path: local weights file loaded strictly after creation; wins over ``pretrained``.
        checkpoint_key: nested entry of the checkpoint that holds the weights (e.g. ``teacher``).
        prefix_map: key-prefix renames, a prefix mapped to null is dropped (``{"backbone.": ""}``).
        model_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. ``img_size``).
        seed: seed of the random initialisation, so random-init baselines are reproducible.
        name: display name in results; defaults to ``model_name`` (+ ``-random`` without weights,
            + ``-<checkpoint file stem>`` with a checkpoint).
        preprocessing: overrides the input transform that timm's pretrained config implies.
    """

    weight_files = ("checkpoint_path",)

    def __init__(
        self,
        model_name: str,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        checkpoint_key: str | None = None,
        prefix_map: dict[str, str | None] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        seed: int = 0,
        name: str | None = None,
        preprocessing: Preprocessing | None = None,
    ) -> None:
        super().__init__(name, preprocessing)
        self.model_name = model_name
        self.pretrained = pretrained
        self.checkpoint_path = checkpoint_path
        self.checkpoint_key = checkpoint_key
        self.prefix_map = dict(prefix_map or {})
        self.model_kwargs = dict(model_kwargs or {})
        self.seed = seed

    def default_name(self) -> str:
        if self.checkpoint_path:  # two checkpoints of one architecture must not share a results folder
            return f"{self.model_name}-{Path(self.checkpoint_path).stem}"
        return self.model_name + ("" if self.pretrained else "-random")

    def config(self) -> dict[str, Any]:
        cfg = {"model_name": self.model_name, "pretrained": self.pretrained and not self.checkpoint_path,
               "checkpoint_key": self.checkpoint_key, "prefix_map": self.prefix_map,
               "model_kwargs": self.model_kwargs}
        if not cfg["pretrained"] and not self.checkpoint_path:
            cfg.update(seed=self.seed, timm=package_version("timm"), torch=torch.__version__.split("+")[0])
        return cfg

    def build(self) -> Backbone:
        import timm

        base_name = self.model_name.split(".")[0]
        if base_name not in timm.list_models():
            raise EvalkitError(
                f"unknown timm model '{self.model_name}'; see `python -c \"import timm; print(timm.list_models('*vit*'))\"`"
            )
        if "checkpoint_path" in self.model_kwargs:  # timm would load it leniently, without prefix_map
            raise EvalkitError(f"timm model '{self.model_name}': set checkpoint_path on the model config, not in "
                               "model_kwargs; evalkit then loads it strictly, with checkpoint_key and prefix_map")
        use_hub = self.pretrained and not self.checkpoint_path
        with torch.random.fork_rng(devices=[]), no_code_loads():
            torch.manual_seed(self.seed)
            try:
                net = timm.create_model(self.model_name, pretrained=use_hub, num_classes=0, **self.model_kwargs)
            except TypeError as exc:  # a model_kwargs key the architecture does not take
                raise EvalkitError(f"timm model '{self.model_name}' refused model_kwargs "
                                   f"{self.model_kwargs}: {exc}") from None
            except Exception as exc:  # offline, or a damaged or refused file in the weights cache
                if not use_hub:
                    raise
                problem = unreadable(f"the cached weights file of timm model '{self.model_name}'", exc)
                if problem.refused:
                    raise EvalkitError(problem.message()) from None
                raise EvalkitError(
                    f"cannot load pretrained weights for timm model '{self.model_name}' ({problem.detail}): offline, "
                    "or a damaged download in the cache; download them elsewhere and set model checkpoint_path to "
                    "the local file"
                ) from None
        if self.checkpoint_path:
            state = remap_keys(read_state_dict(self.checkpoint_path, self.checkpoint_key), self.prefix_map)
            load_strict(net, state, self.checkpoint_path)
        return TimmBackbone(net.eval(), self.preprocessing_override or _timm_preprocessing(net))


def _timm_preprocessing(net: torch.nn.Module) -> Preprocessing:
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    size = cfg.get("input_size", (3, 224, 224))[-1]
    patch_embed = getattr(net, "patch_embed", None)
    if getattr(patch_embed, "img_size", None):  # a ViT built with img_size=... expects that size
        size = patch_embed.img_size[-1]
    interpolation = cfg.get("interpolation", "bicubic")
    return Preprocessing(
        input_size=size,
        mean=tuple(cfg.get("mean", Preprocessing.mean)),
        std=tuple(cfg.get("std", Preprocessing.std)),
        interpolation=interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bicubic",
    )
