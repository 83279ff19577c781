"""Mask2Former's pieces against hand-computed answers: masked attention, costs, loss, semantic inference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import evalkit.segmentation.mask2former as m2f
from evalkit.runtime import torch_threads
from evalkit.segmentation import (IGNORE_INDEX, Mask2FormerDecoder, mask2former_loss, match_cost,
                                  semantic_targets)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small ops: one thread avoids OpenMP contention on a shared 2-core machine (see test_decoders)."""
    with torch_threads(1):
        yield


def test_attention_mask_opens_empty_rows():
    logits = torch.full((1, 3, 4, 4), -5.0)  # query 0: empty mask
    logits[0, 1, :2] = 5.0  # query 1: top half
    logits[0, 2] = 5.0  # query 2: everywhere
    mask = m2f.attention_mask(logits, (4, 4), num_heads=2)
    assert mask.shape == (2, 3, 16) and mask.dtype == torch.bool
    assert torch.equal(mask[0], mask[1])  # one copy per head
    assert not mask[0, 0].any()  # empty mask -> attends everywhere
    assert mask[0, 1].tolist() == [False] * 8 + [True] * 8
    assert not mask[0, 2].any()


def test_empty_previous_masks_attend_everywhere_without_nan(monkeypatch):
    """All masks empty: every row is opened, so the decoder equals one with no masking at all."""
    torch.manual_seed(0)
    decoder = Mask2FormerDecoder([16], [16], 5).eval()
    feats = [torch.randn(2, 16, 4, 4)]
    original = m2f.attention_mask
    monkeypatch.setattr(m2f, "attention_mask", lambda logits, size, heads: original(torch.full_like(logits, -10.0),
                                                                                    size, heads))
    empty = decoder(feats, (64, 64))
    monkeypatch.setattr(m2f, "attention_mask", lambda logits, size, heads: None)
    unmasked = decoder(feats, (64, 64))
    assert bool(torch.isfinite(empty["pred_masks"]).all()) and bool(torch.isfinite(empty["pred_logits"]).all())
    torch.testing.assert_close(empty["pred_masks"], unmasked["pred_masks"])
    torch.testing.assert_close(empty["pred_logits"], unmasked["pred_logits"])


def test_masked_attention_changes_the_output(monkeypatch):
    """Guard for the test above: with real masks the masking is in force."""
    torch.manual_seed(0)
    decoder = Mask2FormerDecoder([16], [16], 5).eval()
    feats = [torch.randn(2, 16, 4, 4)]
    masked = decoder(feats, (64, 64))
    monkeypatch.setattr(m2f, "attention_mask", lambda logits, size, heads: None)
    unmasked = decoder(feats, (64, 64))
    assert not torch.allclose(masked["pred_masks"], unmasked["pred_masks"])


def test_sine_position():
    pos = m2f.sine_position(3, 5, 8)
    assert pos.shape == (15, 8)
    assert len({tuple(row.tolist()) for row in pos}) == 15  # every position distinct
    assert torch.equal(pos[:5, :4], pos[0, :4].expand(5, 4))  # first half: y only


def test_semantic_targets_sample_cell_centres():
    targets = torch.zeros(1, 8, 8, dtype=torch.long)
    targets[0, 2, 2] = 3  # centre pixel of cell (0, 0) of a 4 px grid
    targets[0, 4, 4] = 1  # corner pixel of cell (1, 1): not sampled
    targets[0, 6, 2] = IGNORE_INDEX  # centre of cell (1, 0)
    onehot, valid, present = semantic_targets(targets, (2, 2), num_classes=4)
    assert onehot.shape == (1, 4, 4)
    assert onehot[0].argmax(0).tolist() == [3, 0, 0, 0]
    assert valid[0].tolist() == [1.0, 1.0, 0.0, 1.0] and onehot[0, :, 2].sum() == 0
    assert present[0].tolist() == [True, False, False, True]


def test_match_cost_equals_the_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    b, q, k, p = 2, 4, 3, 10
    class_logits, mask_logits = torch.randn(b, q, k + 1, generator=g), torch.randn(b, q, p, generator=g) * 3
    onehot = F.one_hot(torch.randint(0, k, (b, p), generator=g), k).transpose(1, 2).float()
    valid = (torch.rand(b, p, generator=g) > 0.3).float()
    onehot = onehot * valid[:, None]
    cost = match_cost(class_logits, mask_logits, onehot, valid)
    for i in range(b):
        v = valid[i].bool()
        for j in range(q):
            for c in range(k):
                x, t = mask_logits[i, j, v], onehot[i, c, v]
                bce = F.binary_cross_entropy_with_logits(x, t)
                s = x.sigmoid()
                dice = 1 - (2 * (s * t).sum() + 1) / (s.sum() + t.sum() + 1)
                expected = -2 * class_logits[i, j].softmax(-1)[c] + 5 * bce + 5 * dice
                assert float(cost[i, j, c]) == pytest.approx(float(expected), abs=1e-5)


def _perfect_outputs(targets: torch.Tensor, num_classes: int, queries: int) -> dict:
    """Query c predicts class c's mask at stride 4 with certainty; the rest predict "no object"."""
    onehot, _, _ = semantic_targets(targets, (targets.shape[1] // 4, targets.shape[2] // 4), num_classes)
    b = targets.shape[0]
    masks = torch.full((b, queries, onehot.shape[-1]), -30.0)
    masks[:, :num_classes] = 30.0 * (2 * onehot - 1)
    logits = torch.full((b, queries, num_classes + 1), -30.0)
    logits[:, :num_classes, :num_classes] += 60 * torch.eye(num_classes)
    logits[:, num_classes:, num_classes] = 30.0
    return {"pred_logits": logits, "pred_masks": masks.view(b, queries, targets.shape[1] // 4, -1)}


def test_loss_of_a_perfect_prediction_is_zero_and_permutation_invariant():
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 3, (2, 4, 4), generator=g).repeat_interleave(4, 1).repeat_interleave(4, 2)
    outputs = _perfect_outputs(targets, num_classes=3, queries=6)
    # Absent classes have queries that predict them, which must then be trained to "no object";
    # here all three are present in both images so the perfect answer has loss ~0.
    assert all(len(targets[i].unique()) == 3 for i in range(2))
    assert float(mask2former_loss(outputs, targets, 3)) < 1e-4
    perm = torch.tensor([4, 2, 0, 5, 1, 3])
    shuffled = {key: value[:, perm] for key, value in outputs.items()}
    assert float(mask2former_loss(shuffled, targets, 3)) < 1e-4
    # A wrong class on one matched query costs the cross-entropy of that query only.
    wrong = {key: value.clone() for key, value in outputs.items()}
    wrong["pred_logits"][0, 0] = torch.tensor([0.0, 0.0, 0.0, 0.0])  # uniform over 3 classes + no object
    total_weight = 2 * 3 * 1.0 + 2 * 3 * 0.1  # 6 matched queries weight 1, 6 unmatched weight 0.1
    expected_ce = float(torch.log(torch.tensor(4.0))) / total_weight
    assert float(mask2former_loss(wrong, targets, 3)) == pytest.approx(2 * expected_ce, abs=1e-4)


def test_loss_sums_over_aux_predictions():
    targets = torch.randint(0, 3, (1, 16, 16), generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    layer = {"pred_logits": torch.randn(1, 5, 4, generator=g), "pred_masks": torch.randn(1, 5, 4, 4, generator=g)}
    single = mask2former_loss(layer, targets, 3)
    assert float(mask2former_loss({**layer, "aux": [layer, layer]}, targets, 3)) == pytest.approx(3 * float(single))


def test_ignored_pixels_do_not_count():
    g = torch.Generator().manual_seed(3)
    targets = torch.randint(0, 3, (1, 16, 16), generator=g)
    targets[:, :8] = IGNORE_INDEX
    outputs = {"pred_logits": torch.randn(1, 5, 4, generator=g), "pred_masks": torch.randn(1, 5, 4, 4, generator=g)}
    changed = {**outputs, "pred_masks": outputs["pred_masks"].clone()}
    changed["pred_masks"][:, :, :2] = torch.randn(1, 5, 2, 4, generator=g) * 10  # the ignored half only
    assert float(mask2former_loss(changed, targets, 3)) == pytest.approx(float(mask2former_loss(outputs, targets, 3)))
    all_ignored = torch.full_like(targets, IGNORE_INDEX)  # no targets: only "no object" is learnt
    loss = mask2former_loss(outputs, all_ignored, 3)
    expected = 2 * F.cross_entropy(outputs["pred_logits"][0], torch.full((5,), 3))
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_semantic_logits_is_the_papers_sum():
    decoder = Mask2FormerDecoder([8], [16], 2)
    logits = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 0.0, 5.0]]])  # [1, Q=2, K+1=3]
    masks = torch.tensor([[[[0.0, 3.0]], [[-1.0, 1.0]]]])  # [1, 2, 1, 2]
    scores = decoder.semantic_logits({"pred_logits": logits, "pred_masks": masks}, (1, 2))
    probs, sig = logits.softmax(-1)[0, :, :2], masks[0, :, 0].sigmoid()  # [Q, K], [Q, 2 px]
    expected = torch.stack([(probs[:, k, None] * sig).sum(0) for k in range(2)])
    torch.testing.assert_close(scores[0, :, 0], expected)
    assert scores.shape == (1, 2, 1, 2)
