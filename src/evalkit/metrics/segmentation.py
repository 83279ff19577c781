"""Segmentation metrics from confusion matrices of pixel counts, one per test image.

Three Dice numbers, so that a user can tell "finds nuclei" from "types nuclei":

- ``dice`` (the headline, the kaiko paper's "Dice without background"): Dice per class from the
  pixel counts pooled over all test images (torchmetrics' ``aggregation_level="global"``), so a
  large image weighs by its pixels, then the mean over the foreground (nucleus) classes;
- ``dice_nucleus``: binary Dice of "any nucleus class" against background, counts pooled: how
  well the nuclei are found, whatever type they are given;
- ``dice_per_image``: eva's ``MonaiDiceScore`` (MONAI's ``DiceMetric``): Dice per image and
  foreground class, the mean over the classes present in the image's target, then over images.

``miou`` is ``dice``'s counterpart for IoU; ``dice_<class>`` and ``iou_<class>`` are per class, pooled.
"""

from __future__ import annotations

from typing import Sequence

import torch

from evalkit.errors import EvalkitError


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[K, K]`` int64 counts, rows = target class, columns = predicted class."""
    index = target.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def image_confusions(predictions: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                     num_classes: int) -> torch.Tensor:
    """``[N, K, K]``: the confusion matrix of each image (prediction ``[H, W]`` against target ``[H, W]``)."""
    if len(predictions) != len(targets):
        raise ValueError(f"expected one prediction per target, got {len(predictions)} and {len(targets)}")
    return torch.stack([confusion(p, t, num_classes) for p, t in zip(predictions, targets)])


def _foreground(num_classes: int, background: int) -> torch.Tensor:
    mask = torch.ones(num_classes, dtype=torch.bool)
    mask[background] = False
    return mask


def _per_image(counts: torch.Tensor) -> torch.Tensor:
    """``counts`` as ``[N, K, K]``: a single ``[K, K]`` matrix is one image."""
    if counts.ndim not in (2, 3) or counts.shape[-1] != counts.shape[-2]:
        raise ValueError(f"expected confusion counts [K, K] or [N, K, K], got shape {tuple(counts.shape)}")
    return counts[None] if counts.ndim == 2 else counts


def dice_nucleus(counts: torch.Tensor, background: int = 0) -> float:
    """Binary Dice of the foreground: every non-background class merged into one, pixels pooled over all images.

    ``2 TP / (2 TP + FP + FN)`` with TP = foreground pixels predicted as any foreground class, FP =
    background predicted as foreground, FN = foreground predicted as background. A nucleus of the wrong
    type counts as found. NaN when neither target nor prediction has a foreground pixel.

    Args:
        counts: ``[K, K]`` or per-image ``[N, K, K]`` confusion counts (rows target, columns prediction).
        background: the background class index.
    """
    pooled = _per_image(counts).double().sum(0)
    foreground = _foreground(pooled.shape[0], background)
    tp = pooled[foreground][:, foreground].sum()
    fp = pooled[background, foreground].sum()
    fn = pooled[foreground, background].sum()
    return float(2 * tp / (2 * tp + fp + fn))


def dice_per_image(counts: torch.Tensor, background: int = 0, ignore_empty: bool = True) -> float:
    """The mean over images of each image's mean Dice over the foreground classes, as MONAI and eva compute it.

    Follows MONAI's ``DiceMetric(include_background=False, reduction="mean")``
    (``monai/metrics/meandice.py`` ``DiceHelper.compute_channel`` and ``monai/metrics/utils.py``
    ``do_metric_reduction``), which eva's CoNSeP headline ``MonaiDiceScore`` wraps with ``ignore_empty=True``
    (``eva/vision/metrics/defaults/segmentation/multiclass.py``). Per image i and class c,
    ``D[i, c] = 2 TP / (|target == c| + |pred == c|)``; when class c is absent from image i's target:

    - ``ignore_empty=True`` (eva's headline): ``D[i, c]`` is undefined and left out, predicted or not;
    - ``ignore_empty=False``: 1 if c is not predicted either, else 0.

    Then the mean over the defined classes of each image, and over the images with at least one.
    Where no image has one, MONAI returns 0; this returns NaN (no score is defined), as ``dice`` does.

    Args:
        counts: per-image ``[N, K, K]`` confusion counts (``[K, K]``: one image).
        background: the background class index, left out.
        ignore_empty: MONAI's flag of the same name.
    """
    counts = _per_image(counts).double()
    tp = counts.diagonal(dim1=1, dim2=2)  # [N, K]
    in_target, in_prediction = counts.sum(2), counts.sum(1)
    dice = 2 * tp / (in_target + in_prediction)  # NaN where the class is in neither
    if ignore_empty:
        dice = torch.where(in_target > 0, dice, torch.nan)
    else:
        dice = torch.where(in_target + in_prediction > 0, dice, 1.0)
    per_image = dice[:, _foreground(counts.shape[1], background)].nanmean(1)  # NaN: no class defined in the image
    return float(per_image.nanmean())


def segmentation_scores(counts: torch.Tensor, class_names: list[str], background: int = 0) -> dict[str, float]:
    """Every reported segmentation number from the per-image confusion counts of a split.

    ``dice`` and ``miou`` (means over the foreground classes of the pooled per-class scores),
    ``dice_nucleus`` (:func:`dice_nucleus`), ``dice_per_image`` (:func:`dice_per_image`, MONAI's
    ``ignore_empty=True``), and ``dice_<class>`` / ``iou_<class>`` for every class, pooled. A class
    absent from both the pooled prediction and target has no defined score: it is left out of the
    means (and reported as NaN).

    Args:
        counts: ``[N, K, K]`` confusion counts of each image (:func:`image_confusions`); ``[K, K]``: one image.
        class_names: the K class names.
        background: the background class index.
    """
    per_class_names = {f"{prefix}_{name}" for name in class_names for prefix in ("dice", "iou")}
    clash = sorted(per_class_names & {"dice_nucleus", "dice_per_image"})
    if clash:
        raise EvalkitError(f"a class name makes the per-class metric {clash[0]} clash with the metric of that name; "
                           "rename the class")
    per_image = _per_image(counts)
    pooled = per_image.double().sum(0)
    tp = pooled.diag()
    fp = pooled.sum(0) - tp
    fn = pooled.sum(1) - tp
    dice = 2 * tp / (2 * tp + fp + fn)
    iou = tp / (tp + fp + fn)
    foreground = _foreground(len(tp), background)
    out = {"dice": float(dice[foreground].nanmean()), "dice_nucleus": dice_nucleus(per_image, background),
           "dice_per_image": dice_per_image(per_image, background), "miou": float(iou[foreground].nanmean())}
    for k, name in enumerate(class_names):
        out[f"dice_{name}"] = float(dice[k])
        out[f"iou_{name}"] = float(iou[k])
    return out
