"""Every registered few-shot head obeys one contract; derived from the registry, not a hand-kept list."""

from __future__ import annotations

import pytest
import torch

from evalkit.errors import EvalkitError
from evalkit.heads.fewshot import FEWSHOT_HEADS
from evalkit.heads.label_efficiency import LabelEfficiencyConfig
from evalkit.heads.subsets import k_shot_indices


def blobs(n: int, classes: int = 4, dim: int = 16, seed: int = 0):
    centers = 3 * torch.randn(classes, dim, generator=torch.Generator().manual_seed(42))
    y = torch.arange(n) % classes
    return centers[y] + torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), y


def test_registered_heads():
    assert FEWSHOT_HEADS.names() == ["knn", "logreg", "simpleshot"]
    with pytest.raises(EvalkitError, match="known: knn, logreg, simpleshot"):
        FEWSHOT_HEADS.get("svm")
    with pytest.raises(EvalkitError, match="unknown few-shot head 'svm'; known: linear, knn, logreg, simpleshot"):
        LabelEfficiencyConfig(heads=["linear", "svm"])


@pytest.mark.parametrize("name", FEWSHOT_HEADS.names())
def test_contract_on_a_few_shot_subset(name):
    head = FEWSHOT_HEADS.get(name)
    train_x, train_y = blobs(400)
    eval_x, eval_y = blobs(200, seed=1)
    subset = k_shot_indices(train_y, 8, seed=0)
    keep = subset.indices[train_y[subset.indices] != 3]  # class 3 absent from the training subset
    probs = head(train_x[keep], train_y[keep], eval_x, 5)
    assert probs.shape == (200, 5) and probs.dtype == torch.float32 and probs.device == eval_x.device
    torch.testing.assert_close(probs.sum(1), torch.ones(200))
    assert (probs >= 0).all()
    assert (probs[:, 3:] == 0).all(), "classes absent from training get probability 0"
    seen = eval_y != 3
    assert (probs.argmax(1)[seen] == eval_y[seen]).float().mean() > 0.95
