"""The contract every segmentation decoder obeys, its registry and its front door.

A decoder sits on frozen backbone feature maps (one ViT map at stride 16, or the stage
outputs of a CNN) and is the only thing trained. The training loop, the tiled inference
and the metrics never know which decoder they hold: all three speak
``forward(features, size) -> outputs``, ``loss(outputs, targets) -> scalar`` and
``semantic_logits(outputs, size) -> [B, K, H, W]``. ``outputs`` is whatever the decoder
needs between those calls (a dict of tensors), so a new decoder changes no caller.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evalkit.errors import EvalkitError
from evalkit.registry import Registry

IGNORE_INDEX = 255  # target value of pixels that no loss sees (unlabelled or padding)


def resize_bilinear(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of [B, C, h, w] to ``size`` (a no-op when it already has that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class SegDecoder(nn.Module):
    """Base class: checks the construction arguments and the features it is then fed.

    Args:
        in_channels: channels of each feature map, in the order the backbone gives them.
        strides: input pixels per feature pixel of each map, e.g. ``[16]`` or ``[4, 8, 16, 32]``.
        num_classes: K, background included (5 for CoNSeP).
    """

    def __init__(self, in_channels: list[int], strides: list[int], num_classes: int) -> None:
        super().__init__()
        in_channels, strides = list(in_channels), list(strides)
        if not in_channels:
            raise EvalkitError("a segmentation decoder needs at least one feature map, got in_channels=[]")
        if len(in_channels) != len(strides):
            raise EvalkitError(f"expected one stride per feature map, got {len(in_channels)} in_channels "
                               f"and {len(strides)} strides")
        if min(in_channels) < 1 or min(strides) < 1:
            raise EvalkitError(f"in_channels and strides must be positive, got {in_channels} and {strides}")
        if num_classes < 2:
            raise EvalkitError(f"num_classes counts the background and must be at least 2, got {num_classes}")
        self.in_channels = in_channels
        self.strides = strides
        self.num_classes = num_classes

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> dict[str, Any]:
        raise NotImplementedError

    def loss(self, outputs: dict[str, Any], targets: torch.Tensor) -> torch.Tensor:
        """Scalar training loss; ``targets`` [B, H, W] int64 class maps, :data:`IGNORE_INDEX` ignored."""
        raise NotImplementedError

    def semantic_logits(self, outputs: dict[str, Any], size: tuple[int, int]) -> torch.Tensor:
        """Per-class scores [B, K, H, W] that may be averaged over overlapping tiles before the argmax."""
        raise NotImplementedError

    def _check_features(self, features: list[torch.Tensor]) -> None:
        """A mismatch here means the decoder was built for another backbone: say which."""
        channels = [f.shape[1] if f.ndim == 4 else None for f in features]
        if channels != self.in_channels:
            shapes = [tuple(f.shape) for f in features]
            raise EvalkitError(f"{type(self).__name__} was built for feature maps with channels {self.in_channels}, "
                               f"got maps of shapes {shapes}; build it with this backbone's in_channels")

    def _check_targets(self, targets: torch.Tensor) -> None:
        if targets.ndim != 3 or targets.dtype != torch.long:
            raise EvalkitError(f"expected targets as [B, H, W] int64 class maps, got {targets.dtype} "
                               f"of shape {tuple(targets.shape)}")
        bad = ((targets >= self.num_classes) & (targets != IGNORE_INDEX)) | (targets < 0)
        if bool(bad.any()):
            raise EvalkitError(f"targets hold class {int(targets[bad][0])} but the decoder has {self.num_classes} "
                               f"classes (0..{self.num_classes - 1}, {IGNORE_INDEX} = ignore); "
                               "check the task's classes")


SEG_DECODERS: Registry[type[SegDecoder]] = Registry("segmentation decoder")


def build_decoder(name: str, in_channels: list[int], strides: list[int], num_classes: int,
                  **kwargs: Any) -> SegDecoder:
    """The one front door: ``mask2former``, ``linear`` or ``fpn`` for these backbone maps.

    Options a decoder does not take fail here, with the ones it does take, instead of as a
    ``TypeError`` deep in a config.
    """
    cls = SEG_DECODERS.get(name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters
                if p not in ("self", "in_channels", "strides", "num_classes")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise EvalkitError(f"segmentation decoder '{name}' has no option {', '.join(unknown)}; "
                           f"its options: {', '.join(accepted) or 'none'}")
    return cls(in_channels, strides, num_classes, **kwargs)
