"""The checkpoint sweep: every saved epoch of a pretraining run through ``predict_fit``, in one table.

    evalkit sweep runs/pretrain/lejepa_resnet18_cpu --task configs/tasks/crc_demo.yaml --input_size 112 \\
        [--n_runs 5] [--results_root DIR] [--embeddings_root DIR]

For ``init.ckpt`` (the random init, epoch 0) and each ``epoch=NNN.ckpt`` it runs ``evalkit
predict_fit`` with the LeJEPA model adapter and collects, per checkpoint, the pretraining loss
(metrics.csv), RankMe and ODCorr of the first evaluated split's embeddings and the linear-probe
balanced accuracy on every evaluated split (results.json). Writes ``sweep.md``,
``sweep.csv`` and ``loss_curve.png`` into the run folder and prints the table.
"""

from __future__ import annotations

import csv
import json
import re
import tempfile
from pathlib import Path
from typing import Callable

import yaml
from jsonargparse import ArgumentParser, Namespace

from evalkit.cli import main as evalkit_main
from evalkit.errors import EvalkitError
from evalkit.plotting import pyplot
from evalkit.pretrain.run import INITIAL_CHECKPOINT


def _epoch_losses(run: Path) -> dict[int, float]:
    path = run / "metrics.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        return {int(row["epoch"]): float(row["train/loss_epoch"]) for row in csv.DictReader(fh)
                if row.get("train/loss_epoch")}


def write_loss_curve(run: Path) -> Path | None:
    """``loss_curve.png``: the epoch means of the total loss and of each part the objective logs."""
    path = run / "metrics.csv"
    if not path.is_file():
        return None
    plt = pyplot()
    with path.open(newline="") as fh:
        rows = [row for row in csv.DictReader(fh) if row.get("train/loss_epoch")]
    if not rows:
        return None
    keys = ["loss"] + sorted(k[len("train/"):-len("_epoch")] for k in rows[0]
                             if k.startswith("train/") and k.endswith("_epoch") and k != "train/loss_epoch")
    epochs = [int(row["epoch"]) for row in rows]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.7 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.plot(epochs, [float(row[f"train/{key}_epoch"]) for row in rows], marker="o", ms=2)
        ax.set(xlabel="epoch", title="total loss" if key == "loss" else key)
    fig.suptitle(f"pretraining: {run.name}", fontsize=10)
    fig.tight_layout()
    out = run / "loss_curve.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(epochs trained, checkpoint), oldest first: ``init.ckpt`` (0, the random init), then ``epoch=NNN.ckpt``
    (NNN + 1: Lightning counts epochs from 0 and saves after the epoch)."""
    folder = run / "checkpoints"
    found = [(int(re.search(r"epoch=(\d+)", p.name).group(1)) + 1, p) for p in folder.glob("epoch=*.ckpt")]
    if (folder / INITIAL_CHECKPOINT).is_file():
        found.append((0, folder / INITIAL_CHECKPOINT))
    if not found:
        raise EvalkitError(f"no epoch=NNN.ckpt under {folder}; run `evalkit pretrain` first")
    return sorted(found)


def sweep(run: Path, task: Path, input_size: int, n_runs: int, results_root: Path, embeddings_root: Path) -> list[dict]:
    """One row per kept checkpoint, random init first: its epoch's loss, RankMe and ODCorr (of the first
    evaluated split) and the probe's balanced accuracy on every evaluated split."""
    losses, rows = _epoch_losses(run), []
    for epochs, checkpoint in _checkpoints(run):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
            yaml.safe_dump({"model": {"class_path": "evalkit.models.LeJEPAModel", "init_args": {
                "checkpoint_path": str(checkpoint), "preprocessing": {"input_size": input_size}}}}, fh)
        before = set(results_root.rglob("results.json"))
        code = evalkit_main(["predict_fit", "--config", str(task), "--config", fh.name, "--head.n_runs", str(n_runs),
                             "--results_root", str(results_root), "--embeddings_root", str(embeddings_root)])
        Path(fh.name).unlink()
        if code != 0:
            raise EvalkitError(f"predict_fit failed on {checkpoint}")
        [path] = set(results_root.rglob("results.json")) - before
        result = json.loads(path.read_text())
        first = next(iter(result["metrics"]))
        representation = result["representation"][first]
        row = {"epochs": epochs, "loss": losses.get(epochs - 1), "rankme": representation["rankme"],
               "odcorr": representation["odcorr"]}
        for split, metrics in result["metrics"].items():
            accuracy = metrics["balanced_accuracy"]
            row.update({f"{split}_balanced_accuracy": accuracy["mean"], f"{split}_std": accuracy["std"]})
        rows.append({**row, "checkpoint": checkpoint.name})
    return rows


def _markdown(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---:|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else "–" if v is None else str(v)
                                       for v in row.values()) + " |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: ArgumentParser) -> None:
    """The options of ``evalkit sweep``: the run folder and how each checkpoint is evaluated."""
    parser.add_argument("run", type=str, help="the pretraining run: its trainer.output_dir (checkpoints/epoch=NNN.ckpt)")
    parser.add_argument("--task", type=str, required=True, help="task config, e.g. configs/tasks/crc_demo.yaml")
    parser.add_argument("--input_size", type=int, default=224,
                        help="evaluation input size in px (the training global view size)")
    parser.add_argument("--n_runs", type=int, default=5, help="linear-probe runs per checkpoint")
    parser.add_argument("--results_root", type=str | None, default=None, help="default: RUN/sweep/results")
    parser.add_argument("--embeddings_root", type=str | None, default=None, help="default: RUN/sweep/embeddings")


def run(cfg: Namespace, log: Callable[[str], None]) -> None:
    """Sweep, write sweep.md, sweep.csv and loss_curve.png into the run folder, print the table."""
    folder = Path(cfg.run)
    rows = sweep(folder, Path(cfg.task), cfg.input_size, cfg.n_runs,
                 Path(cfg.results_root) if cfg.results_root else folder / "sweep" / "results",
                 Path(cfg.embeddings_root) if cfg.embeddings_root else folder / "sweep" / "embeddings")
    table = _markdown(rows)
    (folder / "sweep.md").write_text(table)
    with (folder / "sweep.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(table, end="")
    curve = write_loss_curve(folder)
    log(f"wrote {folder / 'sweep.md'}, sweep.csv" + (f" and {curve.name}" if curve else ""))
