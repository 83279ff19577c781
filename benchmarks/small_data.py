"""Small data: the probe protocol and label-efficiency grids on 1,000 embeddings, beside a plain loop.

Synthetic embeddings as in ``head_fit.py`` (Gaussian clusters, D=384, 9 classes), 1,000
training rows and a 500-row validation split (``--val``). Below 10,000 training rows
``sgd_kaiko`` trains at batch 256 and lr 0.000625 for up to 12,500 steps, validating after
every epoch of 4 steps (one step for a few-shot subset) with a patience of 156 epochs (625).

Measured, one after the other in this process (wall time, with the load average):

1. the default probe: 5 seeded runs of ``fit_linear_probe``;
2. the standard label-efficiency grid (``configs/fewshot/standard.yaml``: 9 shot budgets,
   6 fractions, 5 draws, heads linear, knn, simpleshot, logreg) on the same 1,000 rows, on
   its own (its whole-set runs are fitted too, not taken from the probe as ``fit`` does);
3. the demo's grid (``configs/fewshot/demo.yaml``) on the crc_demo task for one model, with
   its 5-run probe, from the demo's cached embeddings (skipped when they are not there);
4. the plain loop of ``head_fit.py`` (DataLoader, nn.Linear, autograd) on the 1,000 rows: one
   seeded run, then the protocol's 5 (``--plain_runs``).

    .venv/bin/python benchmarks/small_data.py              # about 1 minute, most of it the plain loop
    .venv/bin/python benchmarks/small_data.py --val 7000   # head_fit.py's validation size
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

import torch
import yaml

from evalkit.embed.cache import read_embeddings
from evalkit.heads.label_efficiency import LabelEfficiencyConfig, label_efficiency, whole_set_fits
from evalkit.heads.linear import LinearProbeConfig, fit_linear_probe
from evalkit.stats.config import StatsConfig

sys.path.insert(0, str(Path(__file__).parent))
from head_fit import plain_loop, synthetic  # noqa: E402
from common import load_average, timed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO_CACHE = ROOT / "data/embeddings/crc_demo/vit_small_patch16_224-random"


def grid_config(name: str) -> LabelEfficiencyConfig:
    return LabelEfficiencyConfig(**yaml.safe_load((ROOT / "configs/fewshot" / name).read_text())["fewshot"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--plain_runs", type=int, default=5, help="plain-loop runs after the first (0: one run only)")
    args = parser.parse_args()
    dim, classes = 384, 9
    train, val = synthetic(args.n, dim, classes, seed=0), synthetic(args.val, dim, classes, seed=1)
    cfg = LinearProbeConfig(device="cpu")
    stats = StatsConfig()
    print(f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"data N={args.n:,} x D={dim}, {classes} classes, val {args.val:,}; load at start {load_average()}")
    rows: list[tuple[str, float, str]] = []

    probe, probe_s = timed(lambda: fit_linear_probe(train, val, classes, cfg, {"val": val}))
    rows.append(("5-run probe (`fit_linear_probe`)", probe_s, f"{probe.settings['steps_run']:,} steps, best epochs "
                 f"{probe.best_epochs}"))

    standard = grid_config("standard.yaml")
    ids = [str(i) for i in range(args.n)]
    _, grid_s = timed(lambda: label_efficiency(train, val, {"val": val}, classes, standard, cfg, stats, ids,
                                               log=lambda _: None))
    rows.append(("standard grid (`standard.yaml`), alone", grid_s, "75 draws, 4 heads"))

    train_files = glob.glob(str(DEMO_CACHE / "train-rows-*.h5"))
    if train_files:
        demo_train = read_embeddings(train_files[0])
        demo_val = read_embeddings(glob.glob(str(DEMO_CACHE / "val-rows-*.h5"))[0])
        dtrain, dval = (demo_train.embeddings, demo_train.labels), (demo_val.embeddings, demo_val.labels)
        demo_classes = len(demo_train.classes or []) or int(dtrain[1].max()) + 1

        def demo() -> None:
            demo_probe = fit_linear_probe(dtrain, dval, demo_classes, cfg, {"val": dval})
            label_efficiency(dtrain, dval, {"val": dval}, demo_classes, grid_config("demo.yaml"), cfg, stats,
                             demo_train.ids, log=lambda _: None, known=whole_set_fits(demo_probe, len(dtrain[1])))

        _, demo_s = timed(demo)
        rows.append(("demo grid (`demo.yaml`, crc_demo, ViT-S random) with its probe", demo_s, "25 train / 16 val"))
    else:
        print(f"(no demo cache under {DEMO_CACHE}: run `make demo` once to include the demo's grid)")

    plain_scores, plain_s = timed(lambda: plain_loop(train, val, classes, 1, cfg.max_steps, seed=0))
    rows.append(("plain loop, one seeded run", plain_s, f"val balanced accuracy {plain_scores[0]:.4f}"))
    if args.plain_runs > 1:
        more, more_s = timed(lambda: plain_loop(train, val, classes, args.plain_runs - 1, cfg.max_steps, seed=1))
        rows.append((f"plain loop, the protocol's {args.plain_runs} runs", plain_s + more_s, ""))

    print()
    print("| | wall time (s) | |")
    print("|---|---:|---|")
    for name, seconds, note in rows:
        print(f"| {name} | {seconds:.2f} | {note} |")
    print(f"\nload at the end {load_average()}")


if __name__ == "__main__":
    main()
