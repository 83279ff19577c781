"""Checkpoints written by ``evalkit pretrain``, loaded as frozen backbones.

A Lightning checkpoint of the LeJEPA module holds its hyper-parameters (which timm backbone)
and the weights of backbone and projector; the adapter rebuilds the backbone and loads its
weights strictly, dropping the projector, so the model under test is exactly what was trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.models.base import Backbone, ModelSpec, Pooling, Preprocessing
from evalkit.models.checkpoint import load_strict, load_weights_file
from evalkit.models.registry import MODELS


@MODELS.register("lejepa")
class LeJEPAModel(ModelSpec):
    """A LeJEPA checkpoint (``.ckpt``) from ``evalkit pretrain``: its backbone, projector dropped.

    Args:
        checkpoint_path: e.g. ``runs/pretrain/checkpoints/last.ckpt`` or ``epoch=009.ckpt``.
        preprocessing: overrides the transform (default: resize/crop to 224, ImageNet statistics,
            the normalisation the pretraining views used).
        name: display name; default ``lejepa-<run folder>-<checkpoint stem>``.
        pooling: null (timm's pooled feature: the class token of a ViT, the global average of a CNN),
            ``cls``, ``mean`` (patch tokens) or ``cls_mean`` (both, concatenated; ViTs only); see
            docs/models.md, Pooling.
    """

    weight_files = ("checkpoint_path",)
    missing_weights_hint = "run `evalkit pretrain` first (it writes <output_dir>/checkpoints/), or fix checkpoint_path"

    def __init__(self, checkpoint_path: str, preprocessing: Preprocessing | None = None, name: str | None = None,
                 pooling: Pooling | None = None) -> None:
        super().__init__(name, preprocessing)
        self.checkpoint_path = checkpoint_path
        self.pooling = pooling

    def _read(self) -> dict[str, Any]:
        path = Path(self.checkpoint_path)
        if not path.is_file():
            raise EvalkitError(f"LeJEPA checkpoint not found: {path}; run `evalkit pretrain` or fix checkpoint_path")
        # weights_only: a checkpoint from elsewhere cannot run code; ours holds only tensors and plain types
        checkpoint = load_weights_file(path, "use a whole checkpoint from <output_dir>/checkpoints/, e.g. "
                                             "epoch=009.ckpt")
        if not _holds_backbone(checkpoint):
            raise EvalkitError(f"{path} is not a checkpoint of `evalkit pretrain` (no hyper_parameters.model.backbone "
                               "and state_dict); use a file from <output_dir>/checkpoints/, e.g. last.ckpt or "
                               "epoch=009.ckpt")
        return checkpoint

    def default_name(self) -> str:
        """``lejepa-<run folder>-<checkpoint>``, e.g. ``lejepa-lejepa_resnet18_cpu-last``, without reading the file."""
        path = Path(self.checkpoint_path)
        run = path.parent.parent.name if path.parent.name == "checkpoints" else path.parent.name
        return f"lejepa-{run}-{path.stem}".replace("=", "")

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"checkpoint_path": str(self.checkpoint_path)}
        if self.pooling is not None:  # only then: the default keeps the fingerprints made before the option existed
            cfg["pooling"] = self.pooling
        return cfg

    def build(self) -> Backbone:
        from evalkit.models.timm_model import TimmBackbone
        from evalkit.pretrain.model import build_backbone

        checkpoint = self._read()
        net = build_backbone(checkpoint["hyper_parameters"]["model"]["backbone"])
        prefix = "network.backbone."
        state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        load_strict(net, state, str(self.checkpoint_path))
        return TimmBackbone(net.eval().requires_grad_(False), self.resolved_preprocessing(), self.pooling)


def _holds_backbone(checkpoint: Any) -> bool:
    """Whether ``checkpoint`` has what the adapter reads: the backbone's timm name and the weights."""
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    model = hparams.get("model") if isinstance(hparams, dict) else None
    return (isinstance(model, dict) and isinstance(model.get("backbone"), str)
            and isinstance(checkpoint.get("state_dict"), dict))
