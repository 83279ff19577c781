"""Model adapters: one front door, :func:`create_model`, over the ``MODELS`` registry.

The classes are imported on first access (:mod:`evalkit.lazy`): the command line imports this
package for its registry, and an adapter module imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evalkit.lazy import lazy_exports
from evalkit.models.registry import MODELS

if TYPE_CHECKING:
    from evalkit.models.base import ModelSpec

_EXPORTS = {"Backbone": "base", "HuggingFaceModel": "huggingface_model", "LeJEPAModel": "lejepa",
            "LocalCheckpointModel": "local_checkpoint", "ModelSpec": "base", "PresetModel": "preset_model",
            "Preprocessing": "base",
            "TimmModel": "timm_model", "TorchvisionModel": "torchvision_model"}
__getattr__ = lazy_exports(__name__, _EXPORTS)


def create_model(adapter: str, **kwargs: Any) -> ModelSpec:
    """The model spec of adapter family ``adapter`` (``timm``, ``torchvision``, ...) with ``kwargs``."""
    return MODELS.get(adapter)(**kwargs)


__all__ = ["MODELS", "create_model", *_EXPORTS]
