"""The linear probe's training loop as it was before epochs were validated in blocks (evalkit commit
2b96433, ``src/evalkit/heads/linear.py``), kept as the reference the batched loop must agree with.

One stacked optimiser from ``torch.optim`` and ``LambdaLR``, gradients in closed form per run with
the batch first, every run reshuffled every epoch (one-step epochs included), validation after every
epoch. It also returns every epoch's validation scores, so a test can tell a changed decision from a
tie between equal scores.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from evalkit.heads.linear import LinearProbeConfig
from evalkit.heads.protocols import PROTOCOLS, cosine_to_zero
from evalkit.metrics.classification import balanced_accuracy, confusion_matrices


@dataclass
class Reference:
    best_epochs: list[int]
    stopped_epochs: list[int]
    scores: torch.Tensor  # [epochs, R] validation balanced accuracy of every epoch trained
    probs: torch.Tensor  # [R, N_val, C] of each run's best weights
    steps_run: int


def reference_fit(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor], num_classes: int,
                  cfg: LinearProbeConfig, subsets: torch.Tensor | None = None) -> Reference:
    """Commit 2b96433's ``fit_linear_probe`` on the CPU, trimmed to what it decides."""
    protocol = PROTOCOLS.get(cfg.protocol)
    x, y = train[0].float(), train[1]
    vx, vy = val[0].float(), val[1]
    dim, runs = x.shape[1], cfg.n_runs
    pool = torch.arange(len(x)).expand(runs, -1) if subsets is None else subsets
    n = pool.shape[1]
    batch_size = cfg.batch_size or protocol.batch_size(n)
    lr = cfg.lr if cfg.lr is not None else protocol.lr(batch_size)
    if cfg.patience_fraction is not None:
        protocol = dataclasses.replace(protocol, patience_fraction=cfg.patience_fraction)
    patience = protocol.patience(n, batch_size, cfg.max_steps)

    bound = 1.0 / math.sqrt(dim)
    weights, biases, generators = [], [], []
    for r in range(runs):
        g = torch.Generator().manual_seed(cfg.seed + r)
        weights.append(torch.empty(num_classes, dim).uniform_(-bound, bound, generator=g))
        biases.append(torch.empty(num_classes).uniform_(-bound, bound, generator=g))
        generators.append(g)
    weight, bias = torch.stack(weights), torch.stack(biases)
    weight.grad, bias.grad = torch.zeros_like(weight), torch.zeros_like(bias)
    if protocol.optimizer == "sgd":
        optimizer = torch.optim.SGD([weight, bias], lr=lr, momentum=protocol.momentum, nesterov=protocol.nesterov,
                                    weight_decay=protocol.weight_decay)
    else:
        optimizer = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=protocol.weight_decay)
    schedule = cosine_to_zero(optimizer, cfg.max_steps)

    def logits(data: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.addmm(b[r], data, w[r].T) for r in range(w.shape[0])])

    best_score = torch.full((runs,), -math.inf, dtype=torch.float64)
    best_weight, best_bias = weight.detach().clone(), bias.detach().clone()
    best_epoch, stopped_epoch = torch.zeros(runs, dtype=torch.long), torch.zeros(runs, dtype=torch.long)
    waited = torch.zeros(runs, dtype=torch.long)
    active = torch.ones(runs, dtype=torch.bool)
    seen = []
    step, epoch = 0, 0
    while step < cfg.max_steps and bool(active.any()):
        order = pool.gather(1, torch.stack([torch.randperm(n, generator=g) for g in generators]))
        training = [r for r in range(runs) if bool(active[r])]
        for r in set(range(runs)) - set(training):
            weight.grad[r].zero_()
            bias.grad[r].zero_()
        for lo in range(0, n, batch_size):
            for r in training:
                rows = order[r, lo:lo + batch_size]
                xb = x.index_select(0, rows)
                grad = torch.addmm(bias[r], xb, weight[r].T).softmax(dim=1)
                grad[torch.arange(len(rows)), y.index_select(0, rows)] -= 1.0
                grad.div_(len(rows))
                torch.mm(grad.T, xb, out=weight.grad[r])
                torch.sum(grad, dim=0, out=bias.grad[r])
            optimizer.step()
            schedule.step()
            step += 1
            if step >= cfg.max_steps:
                break
        with torch.no_grad():
            score = balanced_accuracy(confusion_matrices(logits(vx, weight, bias).argmax(dim=-1), vy, num_classes))
            seen.append(score)
            improved = (score > best_score) & active
            best_score = torch.where(improved, score, best_score)
            best_weight[improved] = weight[improved]
            best_bias[improved] = bias[improved]
            best_epoch[improved] = epoch
            waited = torch.where(improved, 0, waited + active.long())
            stopped_epoch[active] = epoch
            active &= ~(active & (waited >= patience))
        epoch += 1
    with torch.no_grad():
        probs = logits(vx, best_weight, best_bias).softmax(dim=-1)
    return Reference(best_epoch.tolist(), stopped_epoch.tolist(), torch.stack(seen), probs, step)
