"""The labelled rows a probe fits on: the cached tensors themselves when every row is labelled."""

from __future__ import annotations

from pathlib import Path

import torch

from evalkit.embed.cache import Embeddings
from evalkit.evaluations.rows import _labelled


def _split(labels: list[int]) -> Embeddings:
    x = torch.randn(len(labels), 4, generator=torch.Generator().manual_seed(0))
    return Embeddings(x, torch.tensor(labels), [f"s{i}" for i in range(len(labels))], {}, Path("train.h5"))


def test_every_row_labelled_is_not_copied():
    data = _split([0, 1, 2, 1])
    (x, y), ids = _labelled(data)
    assert x.data_ptr() == data.embeddings.data_ptr() and y.data_ptr() == data.labels.data_ptr()
    assert ids == data.ids


def test_unlabelled_rows_are_left_out():
    data = _split([0, -1, 2, -1])
    (x, y), ids = _labelled(data)
    assert torch.equal(x, data.embeddings[[0, 2]]) and y.tolist() == [0, 2] and ids == ["s0", "s2"]
