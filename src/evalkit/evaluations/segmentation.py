"""Semantic segmentation (CoNSeP; kaiko paper, Mask2Former protocol): seeded decoders trained on the
frozen backbone's feature maps of a fixed crop pool, scored on the stitched test grid."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Callable

import torch

from evalkit.embed.features import FeatureSet
from evalkit.evaluations.base import Evaluation, EvaluationResult
from evalkit.evaluations.registry import EVALUATIONS
from evalkit.metrics.spec import METRICS, per_class
from evalkit.predictions import SplitClassMaps
from evalkit.segmentation.features import CropPoolFeatures, GridFeatures, SegmentationCache
from evalkit.segmentation.outputs import write_curve, write_overlay
from evalkit.segmentation.protocol import SegmentationConfig, SegmentationRun, fit_run, summary_table, untrained_scores
from evalkit.stats.config import StatsConfig
from evalkit.task import Task


@EVALUATIONS.register("segmentation")
class Segmentation(Evaluation):
    """Seeded decoders on frozen feature maps of crops, scored on stitched test images."""

    name = "segmentation"
    options = {"seg": (SegmentationConfig, "segmentation: crops, test grid and decoder")}
    predict_options = ("seg",)  # the crop pool and the grid decide what is embedded
    metrics = ("dice", "dice_nucleus", "dice_per_image", "miou")
    primary_metric = "dice"

    @property
    def protocol(self) -> str:
        return self.config["seg"].decoder

    @property
    def n_runs(self) -> int:
        return self.config["seg"].n_runs

    def features(self, task: Task) -> dict[str, FeatureSet]:
        seg: SegmentationConfig = self.config["seg"]
        return {split: (CropPoolFeatures(seg.crop_size, seg.crops_per_image, seg.seed) if split == task.train_split
                        else GridFeatures(seg.crop_size, seg.test_stride, seg.overlays))
                for split in task.splits}

    def fit(self, task: Task, data: dict[str, Any], stats: StatsConfig,
            log: Callable[[str], None]) -> EvaluationResult:
        seg: SegmentationConfig = self.config["seg"]
        train: SegmentationCache = data[task.train_split]
        class_names = task.dataset.classes
        result = EvaluationResult({}, len(class_names), {})
        result.curves["training"] = {}
        seconds_per_epoch: list[float] = []
        for split in task.eval_splits:
            test: SegmentationCache = data[split]
            log(f"{task.name}: {seg.n_runs} {seg.decoder} decoder runs on {len(train.masks)} cached crops, scored on "
                f"{len(test.full_masks)} stitched {split} images")
            start_scores = untrained_scores(train, test, class_names, seg)
            runs = [fit_run(train, test, class_names, seg, r, log) for r in range(seg.n_runs)]
            seconds_per_epoch += [run.seconds_per_epoch for run in runs]
            result.metrics[split] = {name: [run.scores[name] for run in runs] for name in runs[0].scores}
            result.per_class[split] = summary_table([run.scores for run in runs], class_names)
            result.curves["training"][split] = {"untrained": {"dice": start_scores["dice"], "miou": start_scores["miou"]},
                                                "runs": [run.curve for run in runs]}
            result.predictions[split] = SplitClassMaps(test.ids, test.full_masks, [
                torch.stack([run.prediction[j] for run in runs]) for j in range(len(test.full_masks))])
            result.artifacts.update(self._plots(split, test, runs, start_scores["dice"], class_names))
        for name in class_names:
            for prefix, parent in (("dice", "dice"), ("iou", "miou")):
                spec = per_class(METRICS.get(parent), name, prefix)
                result.metric_info[spec.name] = spec
        result.settings = {"device": str(seg.resolved_device()), "seeds": [seg.seed + r for r in range(seg.n_runs)]}
        result.timing["seconds_per_epoch"] = round(statistics.fmean(seconds_per_epoch), 3)
        return result

    def _plots(self, split: str, test: SegmentationCache, runs: list[SegmentationRun], untrained_dice: float,
               class_names: list[str]) -> dict[str, Callable[[Path], None]]:
        seg: SegmentationConfig = self.config["seg"]
        plots: dict[str, Callable[[Path], None]] = {
            f"training_curve_{split}.png": lambda path: write_curve(path, [run.curve for run in runs], untrained_dice)}
        title = f"{seg.decoder}, run 0: Dice {runs[0].scores['dice']:.3f}"
        for j, rgb in enumerate(test.overlay_images):
            plots[f"overlay_{split}_{Path(test.ids[j]).stem}.png"] = (
                lambda path, j=j, rgb=rgb: write_overlay(path, rgb, test.full_masks[j], runs[0].prediction[j],
                                                         class_names, title))
        return plots
