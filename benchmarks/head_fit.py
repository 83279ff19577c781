"""Head fitting: evalkit's batched linear probe against its compute floor and beside a plain PyTorch loop.

Synthetic embeddings (N=100,000 x D=384, 9 classes, a 7,000-sample validation split), the
full ``sgd_kaiko`` protocol (SGD momentum 0.9 Nesterov, lr 0.01 at batch 4,096, cosine over
12,500 steps, early stopping with patience max_epochs/20 on validation balanced accuracy,
best weights restored) with 5 seeded runs. The plain loop is what one writes without
evalkit: one run after another, a DataLoader over a TensorDataset, nn.Linear, autograd.

The floors are measured on the machine that runs the benchmark, in the same process: the
GEMM rate of a large float32 matmul and the rate of a streaming read of a large tensor. The
fit's work is counted from what it ran (each run's steps up to its stopping epoch and one
validation per epoch): 4 B D C flops and B D row reads (float32) per run and step, 2 N_val D C
flops per run and epoch. The compute floor is the flops at the GEMM rate, the memory floor
the row reads at the read rate.

    .venv/bin/python benchmarks/head_fit.py              # the full protocol and the plain loop (~7 minutes)
    .venv/bin/python benchmarks/head_fit.py --skip_plain # evalkit and the floors only
    .venv/bin/python benchmarks/head_fit.py --scaling    # N, D and C varied (evalkit and floors, ~5 minutes)
    .venv/bin/python benchmarks/head_fit.py --quick      # N=20,000, to try it out
    .venv/bin/python benchmarks/head_fit.py --threads    # a PCam-demo-sized probe on 1 and 2 torch threads, alternating
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from evalkit.heads import PROTOCOLS, LinearProbeConfig, ProbeResult, fit_linear_probe
from evalkit.metrics import balanced_accuracy, confusion_matrices
from common import load_average


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


def gemm_rate(size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large float32 matmul (the best of ``repeats``): what the CPU's GEMM can do."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best


def read_rate(mb: int = 512, repeats: int = 5) -> float:
    """Bytes/s of a streaming read (``sum`` of a tensor far larger than the caches), the best of ``repeats``."""
    data = torch.randn(mb * 2**20 // 4)
    data.sum()
    return data.numel() * 4 / min(_seconds(data.sum) for _ in range(repeats))


def _seconds(f) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


@dataclass
class Work:
    """What a fit computed and read, counted from the steps and epochs each run trained."""

    flops: float
    row_bytes: float
    run_steps: int


def fit_work(result: ProbeResult, n: int, n_val: int, dim: int, classes: int, max_steps: int) -> Work:
    batch = result.settings["batch_size"]
    steps_per_epoch = math.ceil(n / batch)
    flops, row_bytes, run_steps = 0.0, 0.0, 0
    for stopped in result.stopped_epochs:
        epochs = stopped + 1
        steps = min(max_steps, epochs * steps_per_epoch)
        run_steps += steps
        flops += steps * 4 * batch * dim * classes + epochs * 2 * n_val * dim * classes
        row_bytes += steps * batch * dim * 4 + epochs * n_val * dim * 4
    return Work(flops, row_bytes, run_steps)


def floors(seconds: float, work: Work, gflops: float, gbs: float) -> dict[str, float]:
    compute, memory = work.flops / (gflops * 1e9), work.row_bytes / (gbs * 1e9)
    return {"compute_s": compute, "memory_s": memory, "x_compute": seconds / compute,
            "x_both": seconds / (compute + memory)}


def timed_fit(n: int, dim: int, classes: int, n_val: int, runs: int, max_steps: int):
    train, val = synthetic(n, dim, classes, seed=0), synthetic(n_val, dim, classes, seed=1)
    start = time.perf_counter()
    result = fit_linear_probe(train, val, classes, LinearProbeConfig(n_runs=runs, max_steps=max_steps, device="cpu"),
                              {"val": val})
    return train, val, result, time.perf_counter() - start


def scaling(args: argparse.Namespace, gflops: float, gbs: float) -> None:
    """evalkit's fit against its floors as N, D and C vary (the plain loop would take hours)."""
    cases = [(100_000, 384, 9), (25_000, 384, 9), (400_000, 384, 9), (100_000, 1536, 9), (100_000, 768, 9),
             (100_000, 384, 2), (100_000, 384, 32)]
    print("| N | D | C | steps (all runs) | fit (s) | compute floor (s) | memory floor (s) | fit / compute floor "
          "| fit / both floors | load |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for n, dim, classes in cases:
        _, _, result, seconds = timed_fit(n, dim, classes, args.val, args.runs, args.max_steps)
        work = fit_work(result, n, args.val, dim, classes, args.max_steps)
        f = floors(seconds, work, gflops, gbs)
        print(f"| {n:,} | {dim} | {classes} | {work.run_steps:,} | {seconds:.1f} | {f['compute_s']:.2f} | "
              f"{f['memory_s']:.2f} | {f['x_compute']:.1f}x | {f['x_both']:.1f}x | {load_average()} |", flush=True)


def threads_side_by_side(rounds: int) -> None:
    """The PCam demo's 5-run probe at its size (600 x 512, 2 classes, val 198) on 1 and on 2 torch threads,
    alternating in one process (the order flips every round), so that both see the same load."""
    train, val = synthetic(600, 512, 2, seed=0), synthetic(198, 512, 2, seed=1)
    seconds: dict[int, list[float]] = {1: [], 2: []}
    for r in range(rounds):
        for threads in (1, 2) if r % 2 == 0 else (2, 1):
            torch.set_num_threads(threads)
            start = time.perf_counter()
            result = fit_linear_probe(train, val, 2, LinearProbeConfig(n_runs=5, device="cpu"), {"val": val})
            seconds[threads].append(time.perf_counter() - start)
            print(f"round {r}, {threads} thread(s): {seconds[threads][-1]:.2f} s, best epochs {result.best_epochs}, "
                  f"load {load_average()}", flush=True)
    for threads, values in seconds.items():
        print(f"{threads} thread(s): median {sorted(values)[len(values) // 2]:.2f} s, min {min(values):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N=20,000 instead of 100,000")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--classes", type=int, default=9)
    parser.add_argument("--val", type=int, default=7_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max_steps", type=int, default=12_500)
    parser.add_argument("--skip_plain", action="store_true", help="leave out the plain loop (the slow part)")
    parser.add_argument("--scaling", action="store_true", help="a table over N, D and C instead (no plain loop)")
    parser.add_argument("--threads", action="store_true", help="a demo-sized probe on 1 and 2 threads instead")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of --threads")
    args = parser.parse_args()
    if args.threads:
        print(f"{os.cpu_count()} cores, torch {torch.__version__}; load average (1/5/15 min) {load_average()}")
        threads_side_by_side(args.rounds)
        return
    n = 20_000 if args.quick else args.n

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average (1/5/15 min) {load_average()}")
    gflops, gbs = gemm_rate() / 1e9, read_rate() / 1e9
    print(f"floors measured here: GEMM {gflops:.1f} GFLOP/s (2048^3 float32 matmul), streaming read {gbs:.1f} GB/s")
    if args.scaling:
        scaling(args, gflops, gbs)
        return
    print(f"data: N={n:,} x D={args.dim}, {args.classes} classes, val {args.val:,}; sgd_kaiko, {args.runs} runs, "
          f"max {args.max_steps:,} steps")

    train, val, result, evalkit_s = timed_fit(n, args.dim, args.classes, args.val, args.runs, args.max_steps)
    evalkit_ba = result.metrics["val"]["balanced_accuracy"]
    work = fit_work(result, n, args.val, args.dim, args.classes, args.max_steps)
    f = floors(evalkit_s, work, gflops, gbs)
    print(f"evalkit: {evalkit_s:.1f} s for {work.run_steps:,} run-steps; {work.flops / 1e12:.2f} TFLOP -> compute floor "
          f"{f['compute_s']:.2f} s, {work.row_bytes / 1e9:.1f} GB of row reads -> memory floor {f['memory_s']:.2f} s")
    print(f"evalkit / compute floor: {f['x_compute']:.1f}x (target <= 4x); / (compute + memory floors): "
          f"{f['x_both']:.1f}x; load now {load_average()}")
    print(f"evalkit steps run: {result.settings['steps_run']:,}, best epochs {result.best_epochs}, "
          f"stopped epochs {result.stopped_epochs}")
    if args.skip_plain:
        return

    start = time.perf_counter()
    plain_ba = plain_loop(train, val, args.classes, args.runs, args.max_steps, seed=0)
    plain_s = time.perf_counter() - start

    mean = lambda v: sum(v) / len(v)  # noqa: E731
    print()
    print("| | wall time (s) | val balanced accuracy (mean of runs) | runs |")
    print("|---|---:|---:|---|")
    print(f"| evalkit (batched runs) | {evalkit_s:.1f} | {mean(evalkit_ba):.4f} | {', '.join(f'{v:.4f}' for v in evalkit_ba)} |")
    print(f"| plain PyTorch loop | {plain_s:.1f} | {mean(plain_ba):.4f} | {', '.join(f'{v:.4f}' for v in plain_ba)} |")
    print()
    diff_pp = 100 * abs(mean(evalkit_ba) - mean(plain_ba))
    print(f"speed-up: {plain_s / evalkit_s:.1f}x (target >= 10x); accuracy difference: {diff_pp:.2f} pp (target <= 0.5 pp); "
          f"load {load_average()}")


if __name__ == "__main__":
    main()
