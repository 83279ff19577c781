"""The fixed linear-probe protocols (DESIGN.md), as typed data so they can be printed and tested.

Sources: kaiko.ai, "Towards Large-Scale Training of Pathology Foundation Models" (2024),
Table VI, and eva's configs before its switch to AdamW (eva commit c6af9309, Oct 2024):
BACH and MHIST used batch 256 with lr 0.000625 (= 0.01 * 256 / 4096), CRC and PCam batch
4,096 with lr 0.01, all 12,500 steps with cosine annealing and no warmup. eva's current
leaderboard protocol uses AdamW with lr 3e-4 at batch 256.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from evalkit.registry import Registry


def cosine_factor(step: int, max_steps: int) -> float:
    """The protocols' schedule as a factor of the lr at optimiser step ``step`` (from 0): a cosine
    from 1 to 0 over ``max_steps``, no warmup (CosineAnnealingLR with T_max = max_steps, held at 0 after)."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, max_steps) / max_steps))


def cosine_schedule(lr: float, max_steps: int) -> list[float]:
    """The lr of every optimiser step, precomputed so it can be printed and tested: ``lr * cosine_factor``.

    Entry ``s`` is what :func:`cosine_to_zero` sets before step ``s``, float for float.
    """
    return [lr * cosine_factor(step, max_steps) for step in range(max_steps)]


def cosine_to_zero(optimizer: torch.optim.Optimizer, max_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`cosine_factor` as a scheduler of ``optimizer``, stepped once per optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_factor(step, max_steps))


@dataclass(frozen=True)
class Protocol:
    """One linear-probe protocol; :meth:`batch_size` and :meth:`lr` apply its small-dataset rule."""

    name: str
    optimizer: Literal["sgd", "adamw"]
    base_lr: float
    base_batch_size: int
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    small_batch_size: int | None = None  # batch size for training sets below small_dataset_size
    small_dataset_size: int = 10_000
    patience_fraction: float = 1 / 20  # early-stopping patience as a fraction of max_epochs

    def batch_size(self, n_train: int) -> int:
        if self.small_batch_size is not None and n_train < self.small_dataset_size:
            return self.small_batch_size
        return self.base_batch_size

    def lr(self, batch_size: int) -> float:
        """The linear scaling rule: lr grows with the batch size from ``base_lr`` at ``base_batch_size``."""
        return self.base_lr * batch_size / self.base_batch_size

    def patience(self, n_train: int, batch_size: int, max_steps: int) -> int:
        """Early-stopping patience in epochs: ``max_epochs * patience_fraction`` rounded down, at least 1."""
        max_epochs = math.ceil(max_steps / math.ceil(n_train / batch_size))
        return max(1, int(max_epochs * self.patience_fraction))


PROTOCOLS: Registry[Protocol] = Registry("protocol")
PROTOCOLS.add("sgd_kaiko", Protocol(
    name="sgd_kaiko", optimizer="sgd", base_lr=0.01, base_batch_size=4096, momentum=0.9, nesterov=True,
    weight_decay=0.0, small_batch_size=256,
))
# eva leaves AdamW's weight decay at torch's default (0.01). DESIGN.md fixes the patience at
# max_epochs/20 for both protocols; eva's current configs use 20 % of max_epochs instead
# (1,250 / 7 / 278 / 3 epochs for BACH / CRC / MHIST / PCam, rounded up): --head.patience_fraction 0.2
# comes within one epoch of it.
PROTOCOLS.add("adamw_eva", Protocol(
    name="adamw_eva", optimizer="adamw", base_lr=3e-4, base_batch_size=256, weight_decay=0.01,
))
