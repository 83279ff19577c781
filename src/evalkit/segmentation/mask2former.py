"""A light Mask2Former (Cheng et al., CVPR 2022) on frozen backbone features.

Light by design, as in the kaiko paper and eva: 32 queries, 4 decoder layers, 4 heads,
hidden size 32. A frozen-backbone benchmark should rank backbones, not decoders, so the
decoder is kept small enough that the features must carry the segmentation.

Layout, for a ViT map at stride 16 (a CNN's stage outputs at 4/8/16/32 skip the upsampling):

- pixel decoder: a 1x1 conv + GroupNorm projects every map to the hidden size; a top-down
  FPN adds each coarser level, upsampled, to the next finer one and refines it with a 3x3
  conv + GroupNorm + GELU; ×2 upsampling steps of the same block carry the finest level to
  stride 4, where a 1x1 conv gives the mask features.
- transformer decoder: the three coarsest levels of that pyramid (16/8/4 for a ViT, 32/16/8
  for a CNN, as in the paper) are its memory, visited round-robin, each with a learnable
  level embedding and a fixed sine positional encoding (DETR's, normalised). A layer is
  masked cross-attention -> self-attention -> FFN, post-norm, no dropout (the paper's order).
- masked attention: a query attends only where the previous prediction of its mask,
  resized to the memory level, has sigmoid >= 0.5; a query whose mask is empty there
  attends everywhere instead (the paper's fix: an all-masked softmax row is NaN).

Every prediction (before the first layer and after each) gives class logits [B, Q, K + 1]
and mask logits at stride 4; the last is the output, the others are ``aux`` for deep
supervision.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evalkit.errors import EvalkitError
from evalkit.segmentation.decoders import IGNORE_INDEX, SEG_DECODERS, SegDecoder, resize_bilinear
from evalkit.segmentation.losses import mask2former_loss


def _conv_block(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    """conv + GroupNorm (+ GELU for 3x3): GroupNorm because crops come in small batches."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
                               nn.GroupNorm(math.gcd(8, out_ch), out_ch)]
    if kernel > 1:
        layers.append(nn.GELU())
    return nn.Sequential(*layers)


def sine_position(height: int, width: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """DETR's normalised 2-D sine encoding, [height * width, dim]: y in the first half, x in the second.

    Normalised coordinates make the encoding of a 14x14 memory and of a 56x56 one span the
    same range, so the levels line up in space.
    """
    half = dim // 2
    y = (torch.arange(height, device=device, dtype=torch.float32) + 1) / height * 2 * math.pi
    x = (torch.arange(width, device=device, dtype=torch.float32) + 1) / width * 2 * math.pi
    freq = 10000 ** (2 * (torch.arange(half, device=device) // 2) / half)

    def encode(coord: torch.Tensor) -> torch.Tensor:
        angles = coord[:, None] / freq  # [n, half]: sin on even channels, cos on odd
        return torch.stack([angles[:, 0::2].sin(), angles[:, 1::2].cos()], dim=2).flatten(1)

    pos_y, pos_x = encode(y), encode(x)
    return torch.cat([pos_y[:, None, :].expand(height, width, half),
                      pos_x[None, :, :].expand(height, width, half)], dim=-1).flatten(0, 1)


def attention_mask(mask_logits: torch.Tensor, size: tuple[int, int], num_heads: int) -> torch.Tensor:
    """Masked attention: [B * heads, Q, h * w] bool, True where a query may NOT attend.

    sigmoid(x) < 0.5 is x < 0. Rows masked everywhere (an empty mask at this level) are
    opened entirely, else the softmax over no key would be NaN.
    """
    small = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False).flatten(2) < 0
    small = small & ~small.all(-1, keepdim=True)
    return small.repeat_interleave(num_heads, dim=0).detach()


class _PixelDecoder(nn.Module):
    """Top-down FPN over the input maps, then ×2 steps to ``mask_stride``; maps at one stride are summed."""

    def __init__(self, in_channels: list[int], strides: list[int], hidden: int, mask_stride: int) -> None:
        super().__init__()
        self.strides = list(strides)
        self.lateral = nn.ModuleList(_conv_block(c, hidden, 1) for c in in_channels)
        self.level_strides = sorted(set(strides), reverse=True)  # coarse to fine
        self.output = nn.ModuleList(_conv_block(hidden, hidden, 3) for _ in self.level_strides)
        finest = self.level_strides[-1]
        steps = max(0, round(math.log2(finest / mask_stride)))
        # Strides of the upsampled levels, ending exactly at mask_stride whatever the patch size (14, 16).
        self.up_strides = [mask_stride * 2 ** (steps - 1 - i) for i in range(steps)]
        self.up = nn.ModuleList(_conv_block(hidden, hidden, 3) for _ in self.up_strides)
        self.mask_proj = nn.Conv2d(hidden, hidden, 1)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """-> (pyramid coarse to fine, each [B, hidden, h_i, w_i]; mask features at the finest)."""
        laterals: dict[int, torch.Tensor] = {}
        for lateral, stride, x in zip(self.lateral, self.strides, features):
            y = lateral(x)
            if stride in laterals:
                y = laterals[stride] + resize_bilinear(y, laterals[stride].shape[-2:])
            laterals[stride] = y
        # Top-down: the running sum goes down the levels; each level's output is its refined sum.
        pyramid, running = [], None
        for output, stride in zip(self.output, self.level_strides):
            lateral = laterals[stride]
            running = lateral if running is None else lateral + resize_bilinear(running, lateral.shape[-2:])
            pyramid.append(output(running))
        x = pyramid[-1]
        for up, stride in zip(self.up, self.up_strides):
            x = up(resize_bilinear(x, (math.ceil(size[0] / stride), math.ceil(size[1] / stride))))
            pyramid.append(x)
        return pyramid, self.mask_proj(pyramid[-1])


class _DecoderLayer(nn.Module):
    """Masked cross-attention -> self-attention -> FFN, each with a residual and a LayerNorm after it."""

    def __init__(self, hidden: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(hidden, num_heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(hidden, num_heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, hidden))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(3))

    def forward(self, queries: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        attended = self.cross_attn(queries + query_pos, memory + memory_pos, memory, attn_mask=mask,
                                   need_weights=False)[0]
        queries = self.norms[0](queries + attended)
        q = queries + query_pos
        queries = self.norms[1](queries + self.self_attn(q, q, queries, need_weights=False)[0])
        return self.norms[2](queries + self.ffn(queries))


@SEG_DECODERS.register("mask2former")
class Mask2FormerDecoder(SegDecoder):
    """Light Mask2Former for semantic segmentation.

    Args:
        in_channels, strides, num_classes: see :class:`SegDecoder`.
        num_queries: learnable queries (32: a CoNSeP crop holds at most 5 class masks).
        num_layers: transformer decoder layers; each adds an auxiliary prediction.
        num_heads: attention heads; must divide ``hidden``.
        hidden: width of the pixel decoder, the memory and the queries.
        ffn_dim: FFN width (4 x hidden; the paper's 2,048 would make this decoder five times larger).
        num_levels: memory levels visited round-robin (the coarsest of the pixel decoder's pyramid).
        mask_stride: stride of the mask features and of ``pred_masks``.
        class_weight, mask_weight, dice_weight: matching-cost and loss weights (paper: 2, 5, 5).
        no_object_weight: weight of the "no object" class in the class loss (paper: 0.1).
    """

    def __init__(self, in_channels: list[int], strides: list[int], num_classes: int, num_queries: int = 32,
                 num_layers: int = 4, num_heads: int = 4, hidden: int = 32, ffn_dim: int = 128, num_levels: int = 3,
                 mask_stride: int = 4, class_weight: float = 2.0, mask_weight: float = 5.0,
                 dice_weight: float = 5.0, no_object_weight: float = 0.1) -> None:
        super().__init__(in_channels, strides, num_classes)
        if hidden % num_heads or hidden % 2:
            raise EvalkitError(f"mask2former needs an even hidden size divisible by num_heads, "
                               f"got hidden={hidden}, num_heads={num_heads}")
        if min(num_queries, num_layers, num_levels) < 1:
            raise EvalkitError(f"mask2former needs at least one query, layer and level, got num_queries={num_queries}, "
                               f"num_layers={num_layers}, num_levels={num_levels}")
        self.num_heads, self.hidden = num_heads, hidden
        self.loss_weights = {"class_weight": class_weight, "mask_weight": mask_weight, "dice_weight": dice_weight,
                             "no_object_weight": no_object_weight}

        self.pixel_decoder = _PixelDecoder(self.in_channels, self.strides, hidden, mask_stride)
        pyramid_levels = len(self.pixel_decoder.level_strides) + len(self.pixel_decoder.up_strides)
        self.num_levels = min(num_levels, pyramid_levels)
        self.level_embed = nn.Embedding(self.num_levels, hidden)
        self.query_feat = nn.Embedding(num_queries, hidden)  # the queries' content
        self.query_pos = nn.Embedding(num_queries, hidden)  # their positional part, added at every attention
        self.layers = nn.ModuleList(_DecoderLayer(hidden, num_heads, ffn_dim) for _ in range(num_layers))
        self.out_norm = nn.LayerNorm(hidden)
        self.class_head = nn.Linear(hidden, num_classes + 1)
        self.mask_head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                       nn.Linear(hidden, hidden))

    def _predict(self, queries: torch.Tensor, mask_features: torch.Tensor,
                 attn_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The shared heads: class logits, mask logits at stride 4, and the next layer's attention mask."""
        queries = self.out_norm(queries)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_head(queries), mask_features)
        return self.class_head(queries), masks, attention_mask(masks, attn_size, self.num_heads)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> dict[str, Any]:
        """-> ``pred_logits`` [B, Q, K + 1], ``pred_masks`` [B, Q, H/4, W/4], ``aux`` (earlier predictions)."""
        self._check_features(features)
        pyramid, mask_features = self.pixel_decoder(features, size)
        levels = pyramid[:self.num_levels]
        memories = [x.flatten(2).transpose(1, 2) + self.level_embed.weight[i] for i, x in enumerate(levels)]
        positions = [sine_position(*x.shape[-2:], self.hidden, x.device).to(x.dtype) for x in levels]
        batch = mask_features.shape[0]
        queries = self.query_feat.weight.expand(batch, -1, -1)
        query_pos = self.query_pos.weight.expand(batch, -1, -1)

        predictions = []
        class_logits, masks, attn = self._predict(queries, mask_features, levels[0].shape[-2:])
        predictions.append({"pred_logits": class_logits, "pred_masks": masks})
        for i, layer in enumerate(self.layers):
            level = i % self.num_levels
            queries = layer(queries, query_pos, memories[level], positions[level], attn)
            class_logits, masks, attn = self._predict(queries, mask_features,
                                                      levels[(i + 1) % self.num_levels].shape[-2:])
            predictions.append({"pred_logits": class_logits, "pred_masks": masks})
        return {**predictions[-1], "aux": predictions[:-1]}

    def loss(self, outputs: dict[str, Any], targets: torch.Tensor) -> torch.Tensor:
        """Mask2Former's matched set loss, summed over the final and auxiliary predictions."""
        self._check_targets(targets)
        return mask2former_loss(outputs, targets, self.num_classes, ignore_index=IGNORE_INDEX, **self.loss_weights)

    def semantic_logits(self, outputs: dict[str, Any], size: tuple[int, int]) -> torch.Tensor:
        """The paper's semantic inference: sum over queries of p(class) x sigmoid(mask), [B, K, H, W].

        Scores lie in [0, Q] and are linear in each query's contribution, so averaging them over
        overlapping tiles is as valid as averaging probabilities.
        """
        probs = outputs["pred_logits"].softmax(-1)[..., :self.num_classes]
        masks = resize_bilinear(outputs["pred_masks"], size).sigmoid()
        return torch.einsum("bqk,bqhw->bkhw", probs, masks)
