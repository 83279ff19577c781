"""The two reference decoders that put Mask2Former's numbers in context.

- ``linear``: a 1x1 conv on the feature maps, as eva's linear decoder: what a backbone
  gives with no spatial modelling at all.
- ``fpn``: segmentation-models-pytorch's FPN decoder on a CNN's four stage outputs, the
  usual convolutional baseline. A ViT's single map has no pyramid to feed it, so it refuses
  one instead of faking the missing levels.

Both are trained with per-pixel cross-entropy on logits upsampled to the target size, and
report softmax probabilities as their semantic scores (averageable across tiles).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evalkit.errors import EvalkitError
from evalkit.segmentation.decoders import IGNORE_INDEX, SEG_DECODERS, SegDecoder, resize_bilinear


class _PixelClassifier(SegDecoder):
    """Shared by the baselines: ``logits`` [B, K, H, W] at the image size, cross-entropy, softmax."""

    def loss(self, outputs: dict[str, Any], targets: torch.Tensor) -> torch.Tensor:
        """Per-pixel cross-entropy, :data:`IGNORE_INDEX` left out."""
        self._check_targets(targets)
        logits = resize_bilinear(outputs["logits"], targets.shape[-2:]).float()
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)

    def semantic_logits(self, outputs: dict[str, Any], size: tuple[int, int]) -> torch.Tensor:
        """Softmax probabilities [B, K, H, W]: bounded, so one confident tile cannot outvote its neighbours."""
        return resize_bilinear(outputs["logits"], size).softmax(dim=1)


@SEG_DECODERS.register("linear")
class LinearDecoder(_PixelClassifier):
    """A 1x1 conv on all maps resized to the finest and concatenated; logits upsampled bilinearly.

    Args:
        in_channels, strides, num_classes: see :class:`SegDecoder`.
        batch_norm: BatchNorm before the conv (DINOv2's linear variant; eva's has none), which
            evens out backbones whose feature scales differ by orders of magnitude.
    """

    def __init__(self, in_channels: list[int], strides: list[int], num_classes: int, batch_norm: bool = False) -> None:
        super().__init__(in_channels, strides, num_classes)
        channels = sum(self.in_channels)
        self.norm = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> dict[str, Any]:
        """-> ``logits`` [B, K, H, W]."""
        self._check_features(features)
        finest = max((f.shape[-2:] for f in features), key=lambda s: s[0] * s[1])
        x = torch.cat([resize_bilinear(f, finest) for f in features], dim=1)
        return {"logits": resize_bilinear(self.classifier(self.norm(x)), size)}


@SEG_DECODERS.register("fpn")
class FPNDecoder(_PixelClassifier):
    """smp's FPN decoder + a 1x1 segmentation head on the last four maps (strides s, 2s, 4s, 8s).

    Maps before the last four (a stride-2 stem) are not used, as in smp. The map sizes must
    halve exactly from one level to the next (smp upsamples by 2): an input side that is a
    multiple of 32 for a ResNet.

    Args:
        in_channels, strides, num_classes: see :class:`SegDecoder`.
        pyramid_channels, segmentation_channels, dropout, merge_policy: smp's FPN options and
            defaults; ``segmentation_channels`` must be a multiple of 32 (smp's GroupNorm).
    """

    def __init__(self, in_channels: list[int], strides: list[int], num_classes: int, pyramid_channels: int = 256,
                 segmentation_channels: int = 128, dropout: float = 0.2, merge_policy: str = "add") -> None:
        super().__init__(in_channels, strides, num_classes)
        if len(self.in_channels) < 4:
            raise EvalkitError(f"the fpn decoder needs a CNN's stage outputs at 4 strides (e.g. 4, 8, 16, 32), got "
                               f"{len(self.in_channels)} feature map(s) at stride(s) {self.strides}; for a ViT use "
                               f"the mask2former or linear decoder")
        last = self.strides[-4:]
        if last != [last[0] * 2 ** i for i in range(4)]:
            raise EvalkitError(f"the fpn decoder needs its last four maps at strides s, 2s, 4s, 8s, got {last}")
        if segmentation_channels % 32:
            raise EvalkitError(f"fpn segmentation_channels must be a multiple of 32, got {segmentation_channels}")
        # Imported here: smp pulls in all its encoders (1.5 s), which only this decoder needs.
        from segmentation_models_pytorch.base import SegmentationHead
        from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder as _SmpFPNDecoder

        # smp reverses encoder_channels and keeps encoder_depth + 1 of them: depth 3 = our four maps.
        self.decoder = _SmpFPNDecoder(self.in_channels[-4:], encoder_depth=3, pyramid_channels=pyramid_channels,
                                      segmentation_channels=segmentation_channels, dropout=dropout,
                                      merge_policy=merge_policy)
        self.head = SegmentationHead(self.decoder.out_channels, num_classes, kernel_size=1)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> dict[str, Any]:
        """-> ``logits`` [B, K, H, W]."""
        self._check_features(features)
        maps = features[-4:]
        sizes = [tuple(f.shape[-2:]) for f in maps]
        if any(fine != (2 * coarse[0], 2 * coarse[1]) for fine, coarse in zip(sizes, sizes[1:])):
            raise EvalkitError(f"the fpn decoder needs feature maps whose sizes halve exactly, got {sizes}; "
                               f"use an input side that is a multiple of {8 * self.strides[-4]}")
        return {"logits": resize_bilinear(self.head(self.decoder(maps)), size)}
