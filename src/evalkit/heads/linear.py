"""Fixed-protocol linear probes on cached embeddings, all seeded runs fitted together.

The ``R`` runs share one weight tensor ``[R, C, D]`` and one optimiser over the embeddings
held resident on the device. Each step gathers every run's own mini-batch and computes
its cross-entropy gradient in closed form, ``X^T (softmax(XW + b) - onehot(y)) / B``:
two small matmuls per run, several times faster on a CPU than autograd through a batched
matmul. The optimisers act element-wise, so every run gets exactly the update it would
get alone; each run has its own initialisation, its own sampling order and its own early
stopping.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from evalkit.runtime import check_torch_device
from evalkit.env import env_int
from evalkit.errors import EvalkitError
from evalkit.heads.protocols import PROTOCOLS, Protocol, cosine_to_zero
from evalkit.metrics.classification import balanced_accuracy, classification_metrics, confusion_matrices


def _env_or(name: str, default: int) -> int:
    value = env_int(name)
    return default if value is None else value


@dataclass
class LinearProbeConfig:
    """The linear probe of ``evalkit fit``.

    Args:
        protocol: ``sgd_kaiko`` (kaiko paper, Table VI) or ``adamw_eva`` (eva's leaderboard).
        n_runs: seeded runs, reported as mean, std and each run; default ``$N_RUNS`` or 5.
        max_steps: optimiser steps per run; default ``$MAX_STEPS`` or 12,500.
        batch_size: overrides the protocol's batch size (lr then scales linearly); default ``$BATCH_SIZE``.
        lr: overrides the (scaled) learning rate.
        patience_fraction: overrides the early-stopping patience as a fraction of max_epochs
            (protocol default 1/20; eva's current configs use 0.2).
        seed: seed of run 0; run r uses ``seed + r``.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    """

    protocol: str = "sgd_kaiko"
    n_runs: int = field(default_factory=lambda: _env_or("N_RUNS", 5))
    max_steps: int = field(default_factory=lambda: _env_or("MAX_STEPS", 12_500))
    batch_size: int | None = field(default_factory=lambda: env_int("BATCH_SIZE"))
    lr: float | None = None
    patience_fraction: float | None = None
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        PROTOCOLS.get(self.protocol)  # an unknown protocol fails before any data is read
        for name in ("n_runs", "max_steps"):
            if getattr(self, name) < 1:
                raise EvalkitError(f"head.{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise EvalkitError(f"head.batch_size must be at least 1, got {self.batch_size}")
        if self.lr is not None and not self.lr > 0:
            raise EvalkitError(f"head.lr must be > 0, got {self.lr}")
        if self.patience_fraction is not None and not 0 < self.patience_fraction <= 1:
            raise EvalkitError(f"head.patience_fraction must be in (0, 1], got {self.patience_fraction}")
        check_torch_device(self.device, "head.device")


@dataclass
class ProbeResult:
    """Per-run metrics on each evaluation split plus what the protocol resolved to."""

    metrics: dict[str, dict[str, list[float]]]  # split -> metric -> one value per run
    probs: dict[str, torch.Tensor]  # split -> [R, N, C] class probabilities of each run's best weights
    settings: dict[str, Any]
    best_epochs: list[int]
    stopped_epochs: list[int]
    seconds: float


def _init_runs(n_runs: int, dim: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Generator]]:
    """``nn.Linear``'s default initialisation (uniform in ±1/sqrt(D)), one generator per run.

    Run r draws exactly what ``torch.manual_seed(seed + r); nn.Linear(D, C)`` draws.
    """
    bound = 1.0 / math.sqrt(dim)
    weights, biases, generators = [], [], []
    for r in range(n_runs):
        g = torch.Generator().manual_seed(seed + r)
        weights.append(torch.empty(num_classes, dim).uniform_(-bound, bound, generator=g))
        biases.append(torch.empty(num_classes).uniform_(-bound, bound, generator=g))
        generators.append(g)
    return torch.stack(weights), torch.stack(biases), generators


def _optimizer(protocol: Protocol, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    if protocol.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=protocol.momentum, nesterov=protocol.nesterov,
                               weight_decay=protocol.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=protocol.weight_decay)


def _logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x`` [N, D] shared by all runs -> [R, N, C] (one plain matmul per run: faster than bmm on CPU)."""
    return torch.stack([torch.addmm(bias[r], x, weight[r].T) for r in range(weight.shape[0])])


def _cross_entropy_grad(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gradient of the mean cross-entropy with respect to the logits: ``(softmax - onehot) / B``."""
    grad = logits.softmax(dim=1)
    grad[torch.arange(len(target), device=target.device), target] -= 1.0
    return grad.div_(len(target))


def fit_linear_probe(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    cfg: LinearProbeConfig,
    evaluate: dict[str, tuple[torch.Tensor, torch.Tensor]],
    subsets: torch.Tensor | None = None,
) -> ProbeResult:
    """Fit ``cfg.n_runs`` linear heads on ``train``, early-stopped on ``val`` balanced accuracy.

    Each run keeps the weights of its best validation epoch; every split in ``evaluate``
    (named as the dataset names it) is scored with them. ``subsets`` [R, m] gives run r
    its own m training rows (few-shot draws fitted together); the batch size and
    patience then follow m, as they would for a data set of m samples.
    """
    start = time.perf_counter()
    protocol = PROTOCOLS.get(cfg.protocol)
    device = check_torch_device(cfg.device, "head.device")
    x, y = train[0].to(device, torch.float32), train[1].to(device)
    vx, vy = val[0].to(device, torch.float32), val[1].to(device)
    dim = x.shape[1]
    runs = cfg.n_runs
    if subsets is None:
        pool = torch.arange(len(x), device=device).expand(runs, -1)
    elif subsets.shape[0] != runs:
        raise ValueError(f"subsets has {subsets.shape[0]} rows for {runs} runs")
    else:
        pool = subsets.to(device)
    n = pool.shape[1]
    batch_size = cfg.batch_size or protocol.batch_size(n)
    lr = cfg.lr if cfg.lr is not None else protocol.lr(batch_size)
    if cfg.patience_fraction is not None:
        protocol = dataclasses.replace(protocol, patience_fraction=cfg.patience_fraction)
    patience = protocol.patience(n, batch_size, cfg.max_steps)

    weight, bias, generators = _init_runs(runs, dim, num_classes, cfg.seed)
    weight, bias = weight.to(device), bias.to(device)
    weight.grad, bias.grad = torch.zeros_like(weight), torch.zeros_like(bias)
    optimizer = _optimizer(protocol, [weight, bias], lr)
    schedule = cosine_to_zero(optimizer, cfg.max_steps)

    best_score = torch.full((runs,), -math.inf, dtype=torch.float64, device=device)
    best_weight, best_bias = weight.detach().clone(), bias.detach().clone()
    best_epoch = torch.zeros(runs, dtype=torch.long)
    stopped_epoch = torch.zeros(runs, dtype=torch.long)
    waited = torch.zeros(runs, dtype=torch.long, device=device)
    active = torch.ones(runs, dtype=torch.bool, device=device)

    step, epoch = 0, 0
    while step < cfg.max_steps and bool(active.any()):
        order = pool.gather(1, torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device))
        # A stopped run keeps its best weights; training it further would change nothing reported.
        training = [r for r in range(runs) if bool(active[r])]
        for r in set(range(runs)) - set(training):
            weight.grad[r].zero_()
            bias.grad[r].zero_()
        for lo in range(0, n, batch_size):
            for r in training:  # each run its own mini-batch; gradients in closed form
                rows = order[r, lo:lo + batch_size]
                xb = x.index_select(0, rows)
                grad = _cross_entropy_grad(torch.addmm(bias[r], xb, weight[r].T), y.index_select(0, rows))
                torch.mm(grad.T, xb, out=weight.grad[r])
                torch.sum(grad, dim=0, out=bias.grad[r])
            optimizer.step()
            schedule.step()
            step += 1
            if step >= cfg.max_steps:
                break
        if not bool(torch.isfinite(weight).all()):
            raise EvalkitError(f"linear probe weights became non-finite by step {step}; the embeddings hold "
                               "non-finite or huge values, or lower --head.lr")
        # ---- validation and per-run early stopping ----
        with torch.no_grad():
            score = balanced_accuracy(confusion_matrices(_logits(vx, weight, bias).argmax(dim=-1), vy, num_classes))
            improved = (score > best_score) & active
            best_score = torch.where(improved, score, best_score)
            best_weight[improved] = weight[improved]
            best_bias[improved] = bias[improved]
            best_epoch[improved.cpu()] = epoch
            waited = torch.where(improved, 0, waited + active.long())
            newly_stopped = active & (waited >= patience)
            stopped_epoch[active.cpu()] = epoch
            active &= ~newly_stopped
        epoch += 1

    metrics: dict[str, dict[str, list[float]]] = {}
    probs: dict[str, torch.Tensor] = {}
    for split_name, split in evaluate.items():
        sx, sy = split[0].to(device, torch.float32), split[1].to(device)
        with torch.no_grad():
            logits = _logits(sx, best_weight, best_bias).cpu()
        probs[split_name] = logits.softmax(dim=-1)
        per_run = classification_metrics(probs[split_name], sy.cpu(), num_classes)  # what the bootstrap scores
        metrics[split_name] = {name: values.tolist() for name, values in per_run.items()}
    settings = {"protocol": protocol.name, "optimizer": protocol.optimizer, "batch_size": batch_size, "lr": lr,
                "max_steps": cfg.max_steps, "steps_run": step, "patience_epochs": patience,
                "momentum": protocol.momentum, "nesterov": protocol.nesterov,
                "weight_decay": protocol.weight_decay, "seeds": [cfg.seed + r for r in range(runs)],
                "device": str(device)}
    return ProbeResult(metrics, probs, settings, best_epoch.tolist(), stopped_epoch.tolist(), time.perf_counter() - start)
