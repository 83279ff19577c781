"""torchvision backbones by name, classifier removed."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from evalkit.errors import EvalkitError
from evalkit.models.base import Backbone, ModelSpec, ModuleBackbone, Preprocessing, package_version
from evalkit.models.checkpoint import load_strict, no_code_loads, probe_weights_file, read_state_dict, remap_keys
from evalkit.models.registry import MODELS

_CLASSIFIER_ATTRS = ("fc", "heads", "classifier", "head")


@MODELS.register("torchvision")
class TorchvisionModel(ModelSpec):
    """A ``torchvision.models`` network by name; its classifier becomes the identity.

    Args:
        model_name: a name ``torchvision.models.list_models()`` knows (``resnet50``, ``vit_b_16``).
        weights: a torchvision weights name (``IMAGENET1K_V2``) or null for random init.
        checkpoint_path: local weights file (a state dict of the network, with or without its
            classifier, whose keys are ignored), loaded strictly.
        prefix_map: key-prefix renames; a prefix mapped to null is dropped (e.g. ``{"module.": ""}``).
        seed: seed of the random initialisation.
        name: display name in results.
        preprocessing: overrides the transform implied by ``weights``.
    """

    weight_files = ("checkpoint_path",)

    def __init__(
        self,
        model_name: str,
        weights: str | None = None,
        checkpoint_path: str | None = None,
        prefix_map: dict[str, str | None] | None = None,
        seed: int = 0,
        name: str | None = None,
        preprocessing: Preprocessing | None = None,
    ) -> None:
        super().__init__(name, preprocessing)
        self.model_name = model_name
        self.weights = weights
        self.checkpoint_path = checkpoint_path
        self.prefix_map = dict(prefix_map or {})
        self.seed = seed

    def default_name(self) -> str:
        suffix = f"-{self.weights}" if self.weights else ("" if self.checkpoint_path else "-random")
        return f"tv-{self.model_name}{suffix}"

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"model_name": self.model_name, "weights": self.weights, "prefix_map": self.prefix_map}
        if not self.weights and not self.checkpoint_path:
            cfg.update(seed=self.seed, torchvision=package_version("torchvision"))
        return cfg

    def _named_weights(self) -> Any:
        """The torchvision weights enum member of ``weights`` (``None`` for random init or a checkpoint)."""
        import torchvision

        if self.model_name not in torchvision.models.list_models():
            raise EvalkitError(f"unknown torchvision model '{self.model_name}'; see torchvision.models.list_models()")
        if not self.weights or self.checkpoint_path:
            return None
        enum = torchvision.models.get_model_weights(self.model_name)
        if self.weights not in enum.__members__:
            raise EvalkitError(f"unknown weights '{self.weights}' for torchvision model '{self.model_name}'; "
                               f"known: {', '.join(enum.__members__)}")
        return enum[self.weights]

    def resolved_preprocessing(self) -> Preprocessing:
        """The config's ``preprocessing``, else the transform of the named ``weights``, else the defaults."""
        if self.preprocessing_override is not None:
            return self.preprocessing_override
        if not self.weights or self.checkpoint_path:  # no torchvision import: a random-init fingerprint stays cheap
            return Preprocessing()
        return _weights_preprocessing(self._named_weights())

    def build(self) -> Backbone:
        import torchvision

        weights = self._named_weights()
        # no_code_loads: torchvision reads its hub cache with weights_only=False
        with torch.random.fork_rng(devices=[]), no_code_loads():
            torch.manual_seed(self.seed)
            try:
                net = torchvision.models.get_model(self.model_name, weights=weights)
            except Exception as exc:
                cached = _hub_file(weights) if weights is not None else None
                if cached is not None and cached.is_file() and (problem := probe_weights_file(cached)) is not None:
                    raise EvalkitError(problem.message("delete it to download it again")) from None
                if not isinstance(exc, OSError):
                    raise
                raise EvalkitError(
                    f"cannot fetch weights {self.weights} for torchvision model '{self.model_name}' (offline?): "
                    "download them elsewhere and set model checkpoint_path to the local file"
                ) from exc
        classifier = next((a for a in _CLASSIFIER_ATTRS if isinstance(getattr(net, a, None), nn.Module)), None)
        if classifier is not None:
            setattr(net, classifier, nn.Identity())
        if self.checkpoint_path:
            # The classifier is removed on purpose, so its weights (present or not) are not a mismatch.
            drop = {f"{classifier}.": None} if classifier else {}
            state = remap_keys(read_state_dict(self.checkpoint_path), {**drop, **self.prefix_map})
            load_strict(net, state, self.checkpoint_path)
        return ModuleBackbone(net, self.resolved_preprocessing())


def _hub_file(weights: Any) -> Path:
    """Where ``torch.hub`` keeps the download of torchvision ``weights`` (as ``load_state_dict_from_url`` names it)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def _weights_preprocessing(weights: Any) -> Preprocessing:
    if weights is None:
        return Preprocessing()
    t = weights.transforms()
    return Preprocessing(
        input_size=t.crop_size[0], resize_size=t.resize_size[0], mean=tuple(t.mean), std=tuple(t.std),
        interpolation=t.interpolation.value,
    )
