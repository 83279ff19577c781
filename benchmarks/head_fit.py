"""Head fitting: evalkit's batched linear probe beside a plain PyTorch loop of the same protocol.

Synthetic embeddings (N=100,000 x D=384, 9 classes, a 7,000-sample validation split), the
full ``sgd_kaiko`` protocol (SGD momentum 0.9 Nesterov, lr 0.01 at batch 4,096, cosine over
12,500 steps, early stopping with patience max_epochs/20 on validation balanced accuracy,
best weights restored) with 5 seeded runs. The plain loop is what one writes without
evalkit: one run after another, a DataLoader over a TensorDataset, nn.Linear, autograd.

    .venv/bin/python benchmarks/head_fit.py            # the full protocol
    .venv/bin/python benchmarks/head_fit.py --quick    # N=20,000, to try it out
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import torch
import torch.nn.functional as F

from evalkit.heads import PROTOCOLS, LinearProbeConfig, fit_linear_probe
from evalkit.metrics import balanced_accuracy, confusion_matrices


def synthetic(n: int, dim: int, classes: int, seed: int, noise: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters around fixed class centres (norm 1), overlapping so that accuracy stays below 1."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(1234)) / math.sqrt(dim)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + noise * torch.randn(n, dim, generator=g), y


def plain_loop(train, val, classes: int, runs: int, max_steps: int, seed: int) -> list[float]:
    """The same protocol written the usual way, one run after another."""
    protocol = PROTOCOLS.get("sgd_kaiko")
    x, y = train
    batch = protocol.batch_size(len(x))
    lr = protocol.lr(batch)
    patience = protocol.patience(len(x), batch, max_steps)
    scores = []
    for r in range(runs):
        torch.manual_seed(seed + r)
        head = torch.nn.Linear(x.shape[1], classes)
        optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=protocol.momentum, nesterov=True)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_steps)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=True)
        best, best_state, waited, step = -1.0, None, 0, 0
        while step < max_steps and waited < patience:
            for xb, yb in loader:
                loss = F.cross_entropy(head(xb), yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                if step >= max_steps:
                    break
            with torch.no_grad():
                score = float(balanced_accuracy(confusion_matrices(head(val[0]).argmax(1)[None], val[1], classes))[0])
            if score > best:
                best, best_state, waited = score, {k: v.clone() for k, v in head.state_dict().items()}, 0
            else:
                waited += 1
        head.load_state_dict(best_state)
        with torch.no_grad():
            scores.append(float(balanced_accuracy(confusion_matrices(head(val[0]).argmax(1)[None], val[1], classes))[0]))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N=20,000 instead of 100,000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max_steps", type=int, default=12_500)
    args = parser.parse_args()
    n, dim, classes = (20_000 if args.quick else 100_000), 384, 9
    train, val = synthetic(n, dim, classes, seed=0), synthetic(7_000, dim, classes, seed=1)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"data: N={n:,} x D={dim}, {classes} classes, val 7,000; sgd_kaiko, {args.runs} runs, max {args.max_steps:,} steps")

    start = time.perf_counter()
    result = fit_linear_probe(train, val, classes, LinearProbeConfig(n_runs=args.runs, max_steps=args.max_steps,
                                                                      device="cpu"), {"val": val})
    evalkit_s = time.perf_counter() - start
    evalkit_ba = result.metrics["val"]["balanced_accuracy"]

    start = time.perf_counter()
    plain_ba = plain_loop(train, val, classes, args.runs, args.max_steps, seed=0)
    plain_s = time.perf_counter() - start

    mean = lambda v: sum(v) / len(v)  # noqa: E731
    print()
    print("| | wall time (s) | val balanced accuracy (mean of runs) | runs |")
    print("|---|---:|---:|---|")
    print(f"| evalkit (batched runs) | {evalkit_s:.1f} | {mean(evalkit_ba):.4f} | {', '.join(f'{v:.4f}' for v in evalkit_ba)} |")
    print(f"| plain PyTorch loop | {plain_s:.1f} | {mean(plain_ba):.4f} | {', '.join(f'{v:.4f}' for v in plain_ba)} |")
    print()
    diff_pp = 100 * abs(mean(evalkit_ba) - mean(plain_ba))
    print(f"speed-up: {plain_s / evalkit_s:.1f}x (target >= 10x); accuracy difference: {diff_pp:.2f} pp (target <= 0.5 pp)")
    print(f"evalkit steps run: {result.settings['steps_run']:,}, best epochs {result.best_epochs}, "
          f"stopped epochs {result.stopped_epochs}")


if __name__ == "__main__":
    main()
