"""The CoNSeP protocol: decoders fitted on the cached crop pool, scored on stitched test images.

Each seeded run builds a fresh decoder and trains it with AdamW (cosine schedule) on
mini-batches of the cached training crops: the frozen backbone never runs here. Every
``eval_every`` epochs, and at the end, the decoder predicts every test tile, the tiles are
stitched into full images (overlaps averaged) and scored. The reported numbers are those of
the last epoch: the test split is not used to pick a checkpoint.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from evalkit.runtime import check_torch_device
from evalkit.errors import EvalkitError
from evalkit.heads.protocols import cosine_to_zero
from evalkit.metrics.segmentation import image_confusions, segmentation_scores
from evalkit.segmentation.features import SegmentationCache
from evalkit.segmentation.decoders import SEG_DECODERS, build_decoder
from evalkit.segmentation.inference import stitch


@dataclass
class SegmentationConfig:
    """The segmentation protocol of ``predict`` (which crops are embedded) and ``fit`` (the decoder).

    Args:
        decoder: ``mask2former`` (32 queries, 4 layers, 4 heads, hidden 32), ``linear`` or ``fpn`` (CNNs).
        n_runs: seeded decoder runs, reported as mean and std.
        max_steps: optimiser steps per run.
        batch_size: crops per step.
        lr: AdamW learning rate (cosine to 0 over max_steps); weight decay 0.01.
        crop_size: training crop and test tile size in pixels.
        crops_per_image: size of the fixed pool of augmented training crops, per training image.
        test_stride: step of the test grid; CoNSeP's 1000 px with 224 tiles and stride 194 gives 5x5 tiles.
        eval_every: epochs between two points of the validation curve (scored on the test split).
        seed: seed of the crop pool and of run 0 (run r uses seed + r).
        overlays: test images drawn as PNG overlays.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    """

    decoder: str = "mask2former"
    n_runs: int = 3
    max_steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3
    crop_size: int = 224
    crops_per_image: int = 32
    test_stride: int = 194
    eval_every: int = 5
    seed: int = 0
    overlays: int = 3
    device: str = "auto"

    def __post_init__(self) -> None:
        SEG_DECODERS.get(self.decoder)
        for name in ("n_runs", "max_steps", "batch_size", "crop_size", "crops_per_image", "test_stride", "eval_every"):
            if getattr(self, name) < 1:
                raise EvalkitError(f"seg.{name} must be at least 1, got {getattr(self, name)}")
        if self.test_stride > self.crop_size:
            raise EvalkitError(f"seg.test_stride ({self.test_stride}) must not exceed seg.crop_size "
                               f"({self.crop_size}): the grid would leave gaps")
        check_torch_device(self.device, "seg.device")

    def resolved_device(self) -> torch.device:
        return check_torch_device(self.device, "seg.device")


@dataclass
class SegmentationRun:
    scores: dict[str, float]
    curve: list[dict[str, float]]
    prediction: list[torch.Tensor]  # stitched class maps of the test images
    seconds_per_epoch: float


def predict_split(decoder, cache: SegmentationCache, num_classes: int, device: torch.device,
                  batch_size: int = 16) -> list[torch.Tensor]:
    """Stitched ``[H, W]`` class maps of every image of a grid cache."""
    size = (int(cache.attrs["crop"]),) * 2
    heights, widths = _sizes(cache)
    decoder.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(cache.masks), batch_size):
            feats = [f[start:start + batch_size].to(device, torch.float32) for f in cache.features]
            scores.append(decoder.semantic_logits(decoder(feats, size), size).float().cpu())
    scores_all = torch.cat(scores)
    out = []
    for j in range(len(heights)):
        rows = torch.nonzero(cache.image_index == j).flatten()
        origins = [(int(cache.top[r]), int(cache.left[r])) for r in rows]
        out.append(stitch(scores_all[rows], origins, heights[j], widths[j]).argmax(0))
    return out


def _sizes(cache: SegmentationCache) -> tuple[list[int], list[int]]:
    return json.loads(cache.attrs["heights"]), json.loads(cache.attrs["widths"])


def score(predictions: list[torch.Tensor], cache: SegmentationCache, class_names: list[str]) -> dict[str, float]:
    """Every segmentation metric of the stitched ``predictions`` against the grid's full label maps."""
    return segmentation_scores(image_confusions(predictions, cache.full_masks, len(class_names)), class_names)


def _seeded_decoder(train: SegmentationCache, num_classes: int, cfg: SegmentationConfig, seed: int):
    """The decoder of the run with ``seed``, built for the cached feature maps, on the run's device."""
    torch.manual_seed(seed)
    return build_decoder(cfg.decoder, json.loads(train.attrs["channels"]), json.loads(train.attrs["strides"]),
                         num_classes).to(cfg.resolved_device())


def fit_run(train: SegmentationCache, test: SegmentationCache, class_names: list[str], cfg: SegmentationConfig,
            run: int, log: Callable[[str], None] = print) -> SegmentationRun:
    """One seeded decoder run: train on the crop pool, score the stitched test images along the way."""
    device = cfg.resolved_device()
    num_classes = len(class_names)
    seed = cfg.seed + run
    decoder = _seeded_decoder(train, num_classes, cfg, seed)
    optimizer = torch.optim.AdamW([p for p in decoder.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.01)
    schedule = cosine_to_zero(optimizer, cfg.max_steps)
    generator = torch.Generator().manual_seed(seed)
    size = (cfg.crop_size, cfg.crop_size)
    n = len(train.masks)
    curve: list[dict[str, float]] = []
    step, epoch, started = 0, 0, time.perf_counter()
    while step < cfg.max_steps:
        decoder.train()
        order = torch.randperm(n, generator=generator)
        losses = []
        for lo in range(0, n, cfg.batch_size):
            rows = order[lo:lo + cfg.batch_size]
            feats = [f[rows].to(device, torch.float32) for f in train.features]
            loss = decoder.loss(decoder(feats, size), train.masks[rows].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            step += 1
            if step >= cfg.max_steps:
                break
        epoch += 1
        point: dict[str, float] = {"epoch": epoch, "step": step, "loss": sum(losses) / len(losses)}
        if epoch % cfg.eval_every == 0 or step >= cfg.max_steps:  # always true in the last epoch
            prediction = predict_split(decoder, test, num_classes, device)
            scores = score(prediction, test, class_names)
            point.update({k: v for k, v in scores.items() if k in ("dice", "miou")})
            log(f"  run {run}: epoch {epoch} step {step} loss {point['loss']:.4f} test dice {point['dice']:.4f}")
        curve.append(point)
    seconds_per_epoch = (time.perf_counter() - started) / epoch
    return SegmentationRun(scores, curve, prediction, seconds_per_epoch)


def untrained_scores(train: SegmentationCache, test: SegmentationCache, class_names: list[str],
                     cfg: SegmentationConfig) -> dict[str, float]:
    """The scores of run 0's decoder before its first step: the start of the training curve."""
    decoder = _seeded_decoder(train, len(class_names), cfg, cfg.seed)
    return score(predict_split(decoder, test, len(class_names), cfg.resolved_device()), test, class_names)


def summary_table(scores: list[dict[str, float]], class_names: list[str]) -> list[dict[str, Any]]:
    """Per-class Dice and IoU, mean and std over runs (background included, marked)."""
    rows = []
    for name in class_names:
        dice = [s[f"dice_{name}"] for s in scores]
        iou = [s[f"iou_{name}"] for s in scores]
        rows.append({"class": name, "dice_mean": statistics.fmean(dice), "iou_mean": statistics.fmean(iou),
                     "dice_std": statistics.stdev(dice) if len(dice) > 1 else 0.0})
    return rows
