"""Checkpoints written by ``evalkit pretrain``, loaded as frozen backbones.

A Lightning checkpoint of the LeJEPA module holds its hyper-parameters (which timm backbone)
and the weights of backbone and projector; the adapter rebuilds the backbone and loads its
weights strictly, dropping the projector, so the model under test is exactly what was trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from evalkit.errors import EvalkitError
from evalkit.models.base import Backbone, ModelSpec, Preprocessing
from evalkit.models.checkpoint import load_strict
from evalkit.models.registry import MODELS


@MODELS.register("lejepa")
class LeJEPAModel(ModelSpec):
    """A LeJEPA checkpoint (``.ckpt``) from ``evalkit pretrain``: its backbone, projector dropped.

    Args:
        checkpoint_path: e.g. ``runs/pretrain/checkpoints/last.ckpt`` or ``epoch=009.ckpt``.
        preprocessing: overrides the transform (default: resize/crop to 224, ImageNet statistics,
            the normalisation the pretraining views used).
        name: display name; default ``lejepa-<run folder>-<checkpoint stem>``.
    """

    weight_files = ("checkpoint_path",)
    missing_weights_hint = "run `evalkit pretrain` first (it writes <output_dir>/checkpoints/), or fix checkpoint_path"

    def __init__(self, checkpoint_path: str, preprocessing: Preprocessing | None = None, name: str | None = None) -> None:
        super().__init__(name, preprocessing)
        self.checkpoint_path = checkpoint_path

    def _read(self) -> dict[str, Any]:
        path = Path(self.checkpoint_path)
        if not path.is_file():
            raise EvalkitError(f"LeJEPA checkpoint not found: {path}; run `evalkit pretrain` or fix checkpoint_path")
        try:  # weights_only: a checkpoint from elsewhere cannot run code; ours holds only tensors and plain types
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            checkpoint["hyper_parameters"]["model"]["backbone"]
        except Exception as exc:  # any foreign or corrupt file; torch's own messages run to paragraphs
            raise EvalkitError(f"{path} is not a checkpoint of `evalkit pretrain` ({type(exc).__name__}); use a "
                               "file from <output_dir>/checkpoints/, e.g. last.ckpt or epoch=009.ckpt") from None
        return checkpoint

    def default_name(self) -> str:
        """``lejepa-<run folder>-<checkpoint>``, e.g. ``lejepa-lejepa_resnet18_cpu-last``, without reading the file."""
        path = Path(self.checkpoint_path)
        run = path.parent.parent.name if path.parent.name == "checkpoints" else path.parent.name
        return f"lejepa-{run}-{path.stem}".replace("=", "")

    def config(self) -> dict[str, Any]:
        return {"checkpoint_path": str(self.checkpoint_path)}

    def build(self) -> Backbone:
        from evalkit.models.timm_model import TimmBackbone
        from evalkit.pretrain.model import build_backbone

        checkpoint = self._read()
        net = build_backbone(checkpoint["hyper_parameters"]["model"]["backbone"])
        prefix = "network.backbone."
        state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        load_strict(net, state, str(self.checkpoint_path))
        return TimmBackbone(net.eval().requires_grad_(False), self.preprocessing_override or Preprocessing())
