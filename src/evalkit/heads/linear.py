"""Fixed-protocol linear probes on cached embeddings, all seeded runs fitted together.

A fit trains R runs, each a linear layer on its own training rows (every row, or a
few-shot subset) with its own seed, data order and early stopping. The runs are one
stack of parameters ``[R, C, D + 1]`` (weights, bias last). Each step gathers every
run's mini-batch with ``index_select``, a chunk of about 1 MB at a time that stays in the
cache for both matmuls, and computes the cross-entropy gradient in closed form,
``(softmax(W X^T + b) - onehot(y)) X / B``, classes first: the logits ``[R, C, B]`` keep
the batch contiguous, so the softmax over C classes is a vectorised reduction rather than
B tiny ones. SGD and AdamW update the stack element by element
(``_Optimizer``, torch's own update formulas), so every run gets exactly the update it
would get alone.

Runs on training sets of the same size share their epochs (``_groups``): all the draws of
a few-shot budget, or all the runs of a probe. When a training set fits in one batch
(few-shot subsets, small data sets) every epoch is one step on the whole set, always the
same: the rows are gathered once and not reshuffled, since a reshuffle would only reorder
a sum.

Validation is batched over epochs: the parameters after every epoch are kept in a block
of snapshots, scored on the validation split together, and early stopping is replayed
over the block epoch by epoch (``_replay``). The scores are those of per-epoch validation,
so the decisions are the same; epochs trained past a run's stopping point within a
block are discarded, and stopped runs leave the stack.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from evalkit.env import env_int
from evalkit.errors import EvalkitError
from evalkit.heads.protocols import PROTOCOLS, Protocol, cosine_schedule
from evalkit.metrics.classification import balanced_accuracy, classification_metrics, confusion_matrices
from evalkit.runtime import check_torch_device, torch_threads

# Epoch snapshots scored together: up to this many optimiser steps of them (a block of 32
# one-step epochs on a small set; one epoch of a large one), and at most this many bytes of
# snapshots or of validation logits at a time.
BLOCK_STEPS = 32
BLOCK_BYTES = 64 * 2**20
# A large mini-batch is taken in chunks of about this many bytes of gathered rows (all runs),
# so that a chunk is still in the CPU's cache when the gradient's matmul reads it again; the
# matmuls of [C, D] weights with 64 to 256 rows also run faster than with thousands.
CHUNK_BYTES = 2**20
CHUNK_MIN_ROWS = 64
# torch's AdamW defaults, which eva keeps.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


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
    """Per-run metrics on each evaluation split plus what the protocol resolved to.

    ``settings`` holds one value per setting; where runs on subsets of different sizes
    resolved differently (batch size, lr, patience, steps run), a list with one per run.
    ``val_scores`` are, per run, the validation balanced accuracy of every epoch that early
    stopping saw (epochs 0 to the run's stopped epoch).
    """

    metrics: dict[str, dict[str, list[float]]]  # split -> metric -> one value per run
    probs: dict[str, torch.Tensor]  # split -> [R, N, C] class probabilities of each run's best weights
    settings: dict[str, Any]
    best_epochs: list[int]
    stopped_epochs: list[int]
    seconds: float
    val_scores: list[list[float]] = field(default_factory=list)


# ---- the runs' parameters and their optimiser ----

def _init_runs(seeds: Sequence[int], dim: int, num_classes: int) -> tuple[torch.Tensor, list[torch.Generator]]:
    """``nn.Linear``'s default initialisation (uniform in ±1/sqrt(D)) as ``[R, C, D + 1]``, one generator per run.

    Run r draws exactly what ``torch.manual_seed(seeds[r]); nn.Linear(D, C)`` draws; its
    generator then shuffles its data.
    """
    bound = 1.0 / math.sqrt(dim)
    params, generators = [], []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        weight = torch.empty(num_classes, dim).uniform_(-bound, bound, generator=g)
        bias = torch.empty(num_classes, 1).uniform_(-bound, bound, generator=g)
        params.append(torch.cat([weight, bias], dim=1))
        generators.append(g)
    return torch.stack(params), generators


class _Optimizer:
    """SGD (momentum, Nesterov) or AdamW over the stacked parameters, with the lr given per step.

    The update formulas are those of ``torch.optim.SGD`` and ``torch.optim.AdamW`` (their
    single-tensor code paths), element by element, so each run is updated as if alone;
    ``tests/heads/test_linear.py`` checks them against torch's optimisers. The state has the
    runs first, so :meth:`keep` can drop stopped runs.
    """

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self.state: dict[str, torch.Tensor] = {}
        self.steps = 0

    def step(self, params: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
        """One update of ``params`` in place with the gradient ``grad`` at learning rate ``lr``."""
        self.steps += 1
        if self.protocol.optimizer == "sgd":
            self._sgd(params, grad, lr)
        else:
            self._adamw(params, grad, lr)

    def _sgd(self, params: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
        p = self.protocol
        if p.weight_decay:
            grad = grad.add(params, alpha=p.weight_decay)
        if p.momentum:
            buf = self.state.get("momentum")
            if buf is None:
                buf = self.state["momentum"] = grad.clone()
            else:
                buf.mul_(p.momentum).add_(grad)
            grad = grad.add(buf, alpha=p.momentum) if p.nesterov else buf
        params.add_(grad, alpha=-lr)

    def _adamw(self, params: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
        beta1, beta2 = ADAM_BETAS
        if not self.state:
            self.state = {"exp_avg": torch.zeros_like(params), "exp_avg_sq": torch.zeros_like(params)}
        exp_avg, exp_avg_sq = self.state["exp_avg"], self.state["exp_avg_sq"]
        if self.protocol.weight_decay:
            params.mul_(1 - lr * self.protocol.weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** self.steps
        bias_correction2_sqrt = (1 - beta2 ** self.steps) ** 0.5
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(ADAM_EPS)
        params.addcdiv_(exp_avg, denom, value=-(lr / bias_correction1))

    def keep(self, runs: torch.Tensor) -> None:
        """Keep the state of the runs at positions ``runs`` of the stack."""
        self.state = {name: value[runs] for name, value in self.state.items()}


def _logits(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Class scores of every run for rows ``x`` [N, D]: ``params`` [M, C, D + 1] -> [M, C, N], one matmul.

    Validation and the final scoring both call this, so the scores that chose a run's best
    epoch are those its reported metrics are computed from.
    """
    runs, classes, width = params.shape
    flat = params.reshape(runs * classes, width)
    return torch.addmm(flat[:, -1:], flat[:, :-1], x.T).view(runs, classes, -1)


def _predictions(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """The predicted class [M, N] of every run for rows ``x``: the first of the highest scores.

    ``max(dim).indices`` rather than ``argmax``: the same first index, several times faster
    over the class dimension of [M, C, N].
    """
    return _logits(x, params).max(dim=1).indices


def _gradient(params: torch.Tensor, rows: Callable[[int, int], torch.Tensor], yb: torch.Tensor,
              chunk: int) -> torch.Tensor:
    """The gradient [R, C, D + 1] of each run's mean cross-entropy on its mini-batch.

    ``rows(lo, hi)`` gives the batch's rows ``lo:hi`` of every run, [R, hi - lo, D], or
    [hi - lo, D] when all runs share them; ``yb`` [R, B] are their labels. The batch is taken
    ``chunk`` rows at a time, so that the rows a chunk gathers are still in the cache for the
    second matmul.
    """
    runs, classes, _ = params.shape
    weight, bias = params[..., :-1].contiguous(), params[..., -1:]  # a contiguous weight: faster matmuls
    weight_grad, bias_grad = params.new_empty(0), params.new_empty(0)
    for lo in range(0, yb.shape[1], chunk):
        hi = min(lo + chunk, yb.shape[1])
        xb = rows(lo, hi)
        if xb.dim() == 2:
            logits = _logits(xb, params)
        else:
            logits = torch.baddbmm(bias, weight, xb.transpose(1, 2))
        # the gradient of the logits: (softmax - onehot) / B, the classes first and the batch contiguous
        g = logits.softmax(dim=1)
        target = yb[:, lo:hi].unsqueeze(1)
        g.scatter_add_(1, target, g.new_full((1, 1, 1), -1.0).expand(target.shape))
        g.div_(yb.shape[1])
        if xb.dim() == 2:
            part = torch.mm(g.reshape(runs * classes, -1), xb).view(runs, classes, -1)
        else:
            part = torch.bmm(g, xb)
        if lo == 0:
            weight_grad, bias_grad = part, g.sum(dim=2, keepdim=True)
        else:
            weight_grad.add_(part)
            bias_grad.add_(g.sum(dim=2, keepdim=True))
    return torch.cat([weight_grad, bias_grad], dim=2)


# ---- early stopping, replayed over a block of epochs ----

@dataclass
class _Replay:
    """What a block of epochs decided, per run: indices into the block, -1 for "none"."""

    best: torch.Tensor  # epoch of the block whose weights became the run's best
    stop: torch.Tensor  # epoch of the block at which the run stopped
    last: torch.Tensor  # last epoch of the block the run trained (its stop, else the block's end)
    best_score: torch.Tensor
    waited: torch.Tensor


def _replay(scores: torch.Tensor, best_score: torch.Tensor, waited: torch.Tensor, patience: int) -> _Replay:
    """Early stopping over ``scores`` [K, R] (K epochs, in order) as if checked after each epoch.

    Per run and epoch: a score strictly above the best so far becomes the best and resets
    the wait; otherwise the wait grows by one, and at ``patience`` the run stops. Vectorised:
    the best so far is a running maximum, the wait the distance to the last improvement.
    """
    epochs = torch.arange(scores.shape[0], device=scores.device).unsqueeze(1)
    running = torch.cat([best_score.unsqueeze(0), scores]).cummax(dim=0).values  # running[k]: best before epoch k
    improved = scores > running[:-1]
    last_improvement = torch.where(improved, epochs, -1).cummax(dim=0).values
    waits = torch.where(last_improvement >= 0, epochs - last_improvement, waited + epochs + 1)
    stopping = waits >= patience
    stopped = stopping.any(dim=0)
    stop = torch.where(stopped, stopping.long().argmax(dim=0), -1)
    last = torch.where(stopped, stop, scores.shape[0] - 1).unsqueeze(0)
    return _Replay(last_improvement.gather(0, last)[0], stop, last[0], running.gather(0, last + 1)[0],
                   waits.gather(0, last)[0])


# ---- one group of runs that share their epochs ----

@dataclass
class _Group:
    """Runs on training sets of the same size, hence the same batch size, epochs and patience."""

    runs: list[int]
    size: int
    batch_size: int
    steps_per_epoch: int


def _groups(sizes: Sequence[int], protocol: Protocol, batch_size: int | None) -> list[_Group]:
    """Runs grouped by the size of their training set, which fixes their batch size and epochs.

    Runs of different sizes are not padded into one stack: padding would change the shapes of
    the matmuls and so the rounding of each run, and a run's result would then depend on
    which other runs it was fitted with.
    """
    by_size: dict[int, list[int]] = {}
    for run, n in enumerate(sizes):
        by_size.setdefault(n, []).append(run)
    groups = []
    for n, runs in by_size.items():
        batch = batch_size or protocol.batch_size(n)
        groups.append(_Group(runs, n, batch, math.ceil(n / batch)))
    return groups


class _Batches:
    """The mini-batches of a group's active runs, epoch by epoch; :meth:`keep` follows the stack.

    Each run reshuffles its rows every epoch with its own generator (``torch.randperm``, the
    draws of a run fitted alone). A group whose sets fit in one batch has one batch, the
    whole set, every epoch: its rows are gathered once (shared by all runs when they train
    on the same rows; the embeddings themselves, no copy, when that is every row) and
    not reshuffled, since only the order of a sum would change.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, pools: list[torch.Tensor], generators: list[torch.Generator],
                 group: _Group) -> None:
        self.x, self.y, self.generators = x, y, generators
        self.batch, self.steps = group.batch_size, group.steps_per_epoch
        # Runs on every row (a probe, not few-shot draws) shuffle the row numbers themselves: no
        # [R, n] stack of pools to index through (10 MB per run-million rows, twice per epoch).
        self.every_row = all(p is pools[0] for p in pools) and len(pools[0]) == len(x) and \
            bool((pools[0] == torch.arange(len(x), device=x.device)).all())
        self.rows = pools[0].expand(len(pools), -1) if self.every_row else torch.stack(pools)  # [R, n]
        self.fixed: tuple[torch.Tensor, torch.Tensor] | None = None
        self._buffer = x.new_empty(0)
        if self.steps == 1:
            if all(p is pools[0] or torch.equal(p, pools[0]) for p in pools):
                every = len(pools[0]) == len(x) and bool((pools[0] == torch.arange(len(x), device=x.device)).all())
                self.fixed = (x if every else x.index_select(0, pools[0])), y[pools[0]].expand(len(pools), -1)
            else:
                self.fixed = x[self.rows], y[self.rows]

    def keep(self, runs: torch.Tensor) -> None:
        """Keep the runs at positions ``runs`` of the stack."""
        self.rows = self.rows[:1].expand(len(runs), -1) if self.every_row else self.rows[runs]
        self.generators = [self.generators[i] for i in runs.tolist()]
        if self.fixed is not None:
            xb, yb = self.fixed
            self.fixed = (xb if xb.dim() == 2 else xb[runs]), yb[runs]

    def epoch(self) -> list[tuple[Callable[[int, int], torch.Tensor], torch.Tensor]]:
        """This epoch's steps: (rows ``lo:hi`` of the batch of every run, their labels [R, B]) per step."""
        if self.fixed is not None:
            xb, yb = self.fixed
            rows = (lambda lo, hi: xb[lo:hi]) if xb.dim() == 2 else (lambda lo, hi: xb[:, lo:hi])
            return [(rows, yb)]
        n = self.rows.shape[1]
        perms = torch.stack([torch.randperm(n, generator=g) for g in self.generators]).to(self.rows.device)
        order = perms if self.every_row else self.rows.gather(1, perms)
        labels = self.y[order]
        return [(self._gather(order[:, lo:lo + self.batch]), labels[:, lo:lo + self.batch])
                for lo in range(0, n, self.batch)]

    def _gather(self, index: torch.Tensor) -> Callable[[int, int], torch.Tensor]:
        """Rows ``lo:hi`` of every run's batch, gathered into one reused buffer (a fresh one per
        chunk would be paged in every time); :func:`_gradient` is done with a chunk before the next."""
        x, runs = self.x, len(index)

        def rows(lo: int, hi: int) -> torch.Tensor:
            size = runs * (hi - lo) * x.shape[1]
            if self._buffer.numel() < size:
                self._buffer = x.new_empty(size)
            out = self._buffer[:size].view(runs * (hi - lo), x.shape[1])
            return torch.index_select(x, 0, index[:, lo:hi].reshape(-1), out=out).view(runs, hi - lo, x.shape[1])
        return rows


@dataclass
class _GroupResult:
    best: torch.Tensor  # [R, C, D + 1]
    best_epochs: list[int]
    stopped_epochs: list[int]
    val_scores: list[list[float]]
    steps_run: int


def _chunk_rows(runs: int, dim: int, batches: _Batches) -> int:
    """Rows per run that one chunk of :func:`_gradient` takes: about ``CHUNK_BYTES`` of gathered rows,
    at least ``CHUNK_MIN_ROWS``; a batch gathered once is taken whole."""
    if batches.fixed is not None:
        return batches.batch
    return max(CHUNK_MIN_ROWS, CHUNK_BYTES // (runs * dim * 4))


def _train_group(x: torch.Tensor, y: torch.Tensor, val: tuple[torch.Tensor, torch.Tensor], pools: list[torch.Tensor],
                 seeds: list[int], group: _Group, lr: float, patience: int, protocol: Protocol, max_steps: int,
                 num_classes: int) -> _GroupResult:
    """Train one group's runs to the end of early stopping; the best parameters and epochs of each."""
    device, runs = x.device, len(pools)
    vx, vy = val
    params, generators = _init_runs(seeds, x.shape[1], num_classes)
    params = params.to(device)
    best = params.clone()
    optimizer = _Optimizer(protocol)
    schedule = cosine_schedule(lr, max_steps)
    batches = _Batches(x, y, pools, generators, group)
    ids = list(range(runs))  # the caller's run of each row of the stack
    best_score = torch.full((runs,), -math.inf, dtype=torch.float64, device=device)
    waited = torch.zeros(runs, dtype=torch.long, device=device)
    best_epochs, stopped_epochs = [0] * runs, [0] * runs
    scores_seen: list[list[torch.Tensor]] = [[] for _ in range(runs)]
    total_epochs = math.ceil(max_steps / group.steps_per_epoch)
    step, epoch = 0, 0
    while epoch < total_epochs:
        # ---- train a block of epochs, keeping the parameters after each ----
        active = len(ids)
        snapshot_bytes = active * num_classes * params.shape[2] * 4
        logit_bytes = active * num_classes * len(vx) * 4
        block = max(1, min(BLOCK_STEPS // group.steps_per_epoch, BLOCK_BYTES // snapshot_bytes,
                           BLOCK_BYTES // logit_bytes, total_epochs - epoch))
        snapshots = torch.empty((block, *params.shape), device=device)
        chunk = _chunk_rows(active, x.shape[1], batches)
        for k in range(block):
            for rows, labels in batches.epoch():
                if step == max_steps:
                    break
                optimizer.step(params, _gradient(params, rows, labels, chunk), schedule[step])
                step += 1
            snapshots[k].copy_(params)
        # Non-finite parameters stay non-finite, so the block's last epoch tells; sums find the first.
        if not bool(torch.isfinite(snapshots[-1]).all()):
            bad = epoch + int((~torch.isfinite(snapshots.flatten(1).sum(dim=1))).long().argmax())
            raise EvalkitError(f"linear probe weights became non-finite by step "
                               f"{min(max_steps, (bad + 1) * group.steps_per_epoch)}; the embeddings hold non-finite "
                               "or huge values, or lower --head.lr")
        # ---- validate the whole block, then replay early stopping epoch by epoch ----
        with torch.no_grad():
            preds = _predictions(vx, snapshots.flatten(0, 1))
            scores = balanced_accuracy(confusion_matrices(preds, vy, num_classes)).view(block, active)
        replay = _replay(scores, best_score, waited, patience)
        improved = (replay.best >= 0).nonzero().flatten()
        best[torch.tensor(ids, device=device)[improved]] = snapshots[replay.best[improved], improved]
        best_score, waited = replay.best_score, replay.waited
        cpu_scores, last, best_in_block = scores.cpu(), replay.last.tolist(), replay.best.tolist()
        for i, run in enumerate(ids):
            scores_seen[run].append(cpu_scores[:last[i] + 1, i])
            stopped_epochs[run] = epoch + last[i]
            if best_in_block[i] >= 0:
                best_epochs[run] = epoch + best_in_block[i]
        epoch += block
        keep = (replay.stop < 0).nonzero().flatten()
        if len(keep) == 0:
            break
        if len(keep) < len(ids):  # stopped runs leave the stack
            ids = [ids[i] for i in keep.tolist()]
            params, best_score, waited = params[keep], best_score[keep], waited[keep]
            optimizer.keep(keep)
            batches.keep(keep)
    steps_run = min(max_steps, (max(stopped_epochs) + 1) * group.steps_per_epoch)
    return _GroupResult(best, best_epochs, stopped_epochs, [torch.cat(seen).tolist() for seen in scores_seen],
                        steps_run)


# ---- the probe ----

def _pools(subsets: torch.Tensor | Sequence[torch.Tensor] | None, n_train: int, runs: int,
           device: torch.device) -> list[torch.Tensor]:
    if subsets is None:
        every = torch.arange(n_train, device=device)
        return [every] * runs
    if len(subsets) != runs:
        raise ValueError(f"subsets has {len(subsets)} rows for {runs} runs")
    pools = [torch.as_tensor(s).to(device, torch.long) for s in subsets]
    if any(p.dim() != 1 or len(p) == 0 for p in pools):
        raise ValueError("every subset must be a non-empty 1-D tensor of row indices")
    return pools


def _per_run(values: list[Any]) -> Any:
    """One value when every run has it, else the list."""
    return values[0] if all(v == values[0] for v in values) else values


SMALL_STEP = 1 << 22  # rows x width gathered per step (all runs) below which a CPU step runs on one thread


def _step_threads(elements: int, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """One torch thread on the CPU while steps are small (``elements`` = runs x batch x width below
    :data:`SMALL_STEP`, e.g. 5 x 256 x 512 on the PCam demo): such a step is a few dozen microsecond-sized ops,
    and each op's threads meet at a barrier, so a second thread saves little on a quiet machine and, when
    another process holds a core, makes every op wait for a descheduled thread. Measured side by side on
    2 cores under load 4-6: the demo's 5-run probe 0.6-5.8 s on one thread, 20-133 s on two
    (docs/performance.md). Threads do not change which rows, steps or epochs a run uses."""
    return torch_threads(1 if device.type == "cpu" and elements < SMALL_STEP else None)


def fit_linear_probe(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    cfg: LinearProbeConfig,
    evaluate: dict[str, tuple[torch.Tensor, torch.Tensor]],
    subsets: torch.Tensor | Sequence[torch.Tensor] | None = None,
    seeds: Sequence[int] | None = None,
) -> ProbeResult:
    """Fit ``cfg.n_runs`` linear heads on ``train``, early-stopped on ``val`` balanced accuracy.

    Each run keeps the weights of its best validation epoch; every split in ``evaluate``
    (named as the dataset names it) is scored with them. ``subsets`` gives run r its own
    training rows (few-shot draws fitted together): a [R, m] tensor or R index tensors of
    any sizes; the batch size and patience then follow each run's size, as they would for a
    data set of that many samples. ``seeds`` (default ``cfg.seed + r``) seeds run r.
    """
    start = time.perf_counter()
    protocol = PROTOCOLS.get(cfg.protocol)
    if cfg.patience_fraction is not None:
        protocol = dataclasses.replace(protocol, patience_fraction=cfg.patience_fraction)
    device = check_torch_device(cfg.device, "head.device")
    x, y = train[0].to(device, torch.float32), train[1].to(device)  # no copy when already float32 there
    vx, vy = val[0].to(device, torch.float32), val[1].to(device)
    runs = cfg.n_runs
    pools = _pools(subsets, len(x), runs, device)
    seeds = list(seeds) if seeds is not None else [cfg.seed + r for r in range(runs)]
    if len(seeds) != runs:
        raise ValueError(f"seeds has {len(seeds)} entries for {runs} runs")

    best = torch.empty(runs, num_classes, x.shape[1] + 1, device=device)
    per_run: dict[str, list[Any]] = {key: [None] * runs for key in
                                     ("batch_size", "lr", "patience_epochs", "steps_run", "best", "stopped", "scores")}
    for group in _groups([len(p) for p in pools], protocol, cfg.batch_size):
        lr = cfg.lr if cfg.lr is not None else protocol.lr(group.batch_size)
        patience = protocol.patience(group.size, group.batch_size, cfg.max_steps)
        with _step_threads(len(group.runs) * group.batch_size * x.shape[1], device):
            fitted = _train_group(x, y, (vx, vy), [pools[r] for r in group.runs], [seeds[r] for r in group.runs],
                                  group, lr, patience, protocol, cfg.max_steps, num_classes)
        best[group.runs] = fitted.best
        for i, r in enumerate(group.runs):
            for key, value in (("batch_size", group.batch_size), ("lr", lr), ("patience_epochs", patience),
                               ("steps_run", fitted.steps_run), ("best", fitted.best_epochs[i]),
                               ("stopped", fitted.stopped_epochs[i]), ("scores", fitted.val_scores[i])):
                per_run[key][r] = value

    metrics: dict[str, dict[str, list[float]]] = {}
    probs: dict[str, torch.Tensor] = {}
    for split_name, split in evaluate.items():
        sx, sy = split[0].to(device, torch.float32), split[1].to(device)
        with torch.no_grad():
            logits = _logits(sx, best).transpose(1, 2).cpu()
        probs[split_name] = logits.softmax(dim=-1)
        per_split = classification_metrics(probs[split_name], sy.cpu(), num_classes)  # what the bootstrap scores
        metrics[split_name] = {name: values.tolist() for name, values in per_split.items()}
    settings = {"protocol": protocol.name, "optimizer": protocol.optimizer,
                "batch_size": _per_run(per_run["batch_size"]), "lr": _per_run(per_run["lr"]),
                "max_steps": cfg.max_steps, "steps_run": _per_run(per_run["steps_run"]),
                "patience_epochs": _per_run(per_run["patience_epochs"]),
                "momentum": protocol.momentum, "nesterov": protocol.nesterov,
                "weight_decay": protocol.weight_decay, "seeds": seeds, "device": str(device)}
    return ProbeResult(metrics, probs, settings, per_run["best"], per_run["stopped"], time.perf_counter() - start,
                       per_run["scores"])
