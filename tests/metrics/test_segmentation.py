"""The three Dice numbers on hand-computed 4×4 label maps, MONAI's rule for empty classes, and the
per-image Dice against a textbook loop over images and classes written from MONAI's DiceMetric."""

from __future__ import annotations

import math

import pytest
import torch

from evalkit.errors import EvalkitError
from evalkit.metrics.segmentation import (confusion, dice_nucleus, dice_per_image, image_confusions,
                                          segmentation_scores)
from evalkit.metrics.spec import METRICS

CLASSES = ["background", "other", "inflammatory", "epithelial", "spindle-shaped"]

# Image A: classes 1 and 2 in the target; one class-2 pixel predicted as class 1 (found, mistyped),
# one class-1 pixel missed. Classes 3 and 4 in neither.
TARGET_A = [[0, 0, 1, 1],
            [0, 0, 1, 1],
            [2, 2, 0, 0],
            [2, 2, 0, 0]]
PRED_A = [[0, 0, 1, 1],
          [0, 0, 1, 0],
          [2, 1, 0, 0],
          [2, 2, 0, 0]]
# Image B: class 3 in the target, one pixel missed; class 4 absent from the target but predicted once.
TARGET_B = [[0, 0, 0, 0],
            [0, 3, 3, 0],
            [0, 3, 3, 0],
            [0, 0, 0, 0]]
PRED_B = [[0, 0, 0, 0],
          [0, 3, 3, 4],
          [0, 3, 0, 0],
          [0, 0, 0, 0]]


def _counts(*pairs: tuple[list[list[int]], list[list[int]]]) -> torch.Tensor:
    return image_confusions([torch.tensor(p) for p, _ in pairs], [torch.tensor(t) for _, t in pairs], len(CLASSES))


def test_the_three_dice_numbers_by_hand():
    counts = _counts((PRED_A, TARGET_A), (PRED_B, TARGET_B))
    assert counts.shape == (2, 5, 5) and int(counts.sum()) == 32
    scores = segmentation_scores(counts, CLASSES)
    # pooled per class: 1: 2*3/(4+4); 2: 2*3/(4+3); 3: 2*3/(4+3); 4: 2*0/(0+1) (predicted, never there)
    assert scores["dice_other"] == pytest.approx(3 / 4)
    assert scores["dice_inflammatory"] == pytest.approx(6 / 7)
    assert scores["dice_epithelial"] == pytest.approx(6 / 7)
    assert scores["dice_spindle-shaped"] == 0.0
    assert scores["dice"] == pytest.approx((3 / 4 + 6 / 7 + 6 / 7 + 0) / 4)  # 69/112, unchanged definition
    # any nucleus vs background, pooled: A has TP 7 (the mistyped pixel counts), FN 1; B TP 3, FP 1, FN 1
    assert scores["dice_nucleus"] == pytest.approx(2 * 10 / (2 * 10 + 1 + 2))
    # per image, classes absent from the image's target left out: A (3/4 + 6/7) / 2, B 6/7 (class 4 ignored)
    assert scores["dice_per_image"] == pytest.approx(((3 / 4 + 6 / 7) / 2 + 6 / 7) / 2)  # 93/112
    assert dice_nucleus(counts) == scores["dice_nucleus"] and dice_per_image(counts) == scores["dice_per_image"]


def test_monai_ignore_empty_false_scores_absent_classes_one_or_zero():
    counts = _counts((PRED_A, TARGET_A), (PRED_B, TARGET_B))
    # A: 3/4, 6/7, then 1 and 1 (classes 3, 4 in neither); B: 1, 1 (classes 1, 2), 6/7, 0 (class 4 predicted)
    expected = ((3 / 4 + 6 / 7 + 1 + 1) / 4 + (1 + 1 + 6 / 7 + 0) / 4) / 2
    assert dice_per_image(counts, ignore_empty=False) == pytest.approx(expected)


def test_an_image_without_nuclei_is_left_out_of_the_per_image_mean():
    empty = [[0] * 4] * 4
    predicted_nucleus = [[0, 0, 0, 0], [0, 2, 2, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    counts = _counts((PRED_A, TARGET_A), (PRED_B, TARGET_B), (predicted_nucleus, empty))
    assert dice_per_image(counts) == pytest.approx(93 / 112)  # MONAI's ignore_empty=True: no class defined
    # ignore_empty=False: the empty image scores 1 for classes 1, 3, 4 (in neither) and 0 for class 2
    two = dice_per_image(counts[:2], ignore_empty=False)
    assert dice_per_image(counts, ignore_empty=False) == pytest.approx((2 * two + 3 / 4) / 3)
    # the false nucleus costs the pooled binary Dice: 2 more false positives
    assert dice_nucleus(counts) == pytest.approx(20 / (20 + 3 + 2))


def test_no_nucleus_anywhere_has_no_score():
    empty = torch.zeros(4, 4, dtype=torch.long)
    counts = image_confusions([empty, empty], [empty, empty], 5)
    scores = segmentation_scores(counts, CLASSES)
    assert math.isnan(scores["dice"]) and math.isnan(scores["dice_nucleus"]) and math.isnan(scores["dice_per_image"])
    assert scores["dice_background"] == 1.0
    assert dice_per_image(counts, ignore_empty=False) == 1.0  # MONAI: nothing there and nothing predicted


def test_a_single_matrix_is_one_image_and_pooling_is_a_sum():
    one = confusion(torch.tensor(PRED_A), torch.tensor(TARGET_A), 5)
    assert dice_per_image(one) == dice_per_image(one[None]) == pytest.approx((3 / 4 + 6 / 7) / 2)
    both = _counts((PRED_A, TARGET_A), (PRED_B, TARGET_B))
    pooled = segmentation_scores(both.sum(0), CLASSES)
    per_image = segmentation_scores(both, CLASSES)
    assert {k: v for k, v in pooled.items() if k != "dice_per_image"} == {
        k: v for k, v in per_image.items() if k != "dice_per_image"}
    with pytest.raises(ValueError, match=r"expected confusion counts \[K, K\] or \[N, K, K\], got shape \(5,\)"):
        dice_per_image(torch.zeros(5))


def _monai_loop(preds: torch.Tensor, targets: torch.Tensor, num_classes: int, ignore_empty: bool) -> float:
    """MONAI's DiceHelper.compute_channel per (image, class), then do_metric_reduction's "mean", in loops."""
    image_means = []
    for pred, target in zip(preds, targets):
        values = []
        for c in range(1, num_classes):  # include_background=False
            y, y_pred = target == c, pred == c
            if y.sum() > 0:
                values.append(2.0 * float((y & y_pred).sum()) / float(y.sum() + y_pred.sum()))
            elif not ignore_empty:
                values.append(1.0 if y_pred.sum() == 0 else 0.0)
        if values:
            image_means.append(sum(values) / len(values))
    return sum(image_means) / len(image_means)


@pytest.mark.parametrize("ignore_empty", [True, False])
def test_per_image_dice_equals_a_loop_written_from_monai(ignore_empty):
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (6, 12, 12), generator=g)
    target[0][target[0] == 3] = 0  # class 3 absent from image 0's target ...
    target[1][target[1] > 0] = 0  # ... and image 1 without nuclei
    pred = torch.where(torch.rand(6, 12, 12, generator=g) < 0.6, target, torch.randint(0, 5, (6, 12, 12), generator=g))
    pred[2][pred[2] == 4] = 1  # class 4 never predicted in image 2
    ours = dice_per_image(image_confusions(list(pred), list(target), 5), ignore_empty=ignore_empty)
    assert ours == pytest.approx(_monai_loop(pred, target, 5, ignore_empty), abs=1e-12)


def test_the_new_dice_numbers_are_registered_metrics():
    for name, function in (("dice_nucleus", dice_nucleus), ("dice_per_image", dice_per_image)):
        spec = METRICS.get(name)
        assert spec.higher_is_better is True and (spec.lower, spec.upper) == (0.0, 1.0)
        assert spec.function() is function


def test_a_class_named_like_a_metric_is_one_line():
    with pytest.raises(EvalkitError, match="per-class metric dice_nucleus clash") as info:
        segmentation_scores(torch.zeros(2, 2, dtype=torch.long), ["background", "nucleus"])
    assert "\n" not in str(info.value)
