"""The comparison plots (PNG): bars with CIs, label-efficiency curves, accuracy vs representation
metrics, and the critical-difference diagram. matplotlib's Agg backend: no display needed.

A NaN or ±inf value has no place on an axis: it is left out of the plots (the tables show it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from evalkit.plotting import pyplot
from evalkit.report.runs import Run, columns, metric_spec, non_finite

_DPI = 150


def _pyplot():
    """pyplot with the report's style: small type, no top and right frame lines."""
    plt = pyplot()
    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _colours(models: list[str]) -> dict[str, Any]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    return {model: cmap(i % 10) for i, model in enumerate(models)}


def bar_chart(runs: list[Run], metric: str, comparison: dict[str, Any], path: Path) -> Path:
    """Grouped bars: one group per task/split, one bar per model, whiskers = bootstrap CI."""
    plt = _pyplot()
    cols = columns(runs, metric)
    models = sorted({run.label for run in runs})
    colour = _colours(models)
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.5 + 1.8 * len(cols)), 4.2))
    for i, model in enumerate(models):
        xs, means, low, high = [], [], [], []
        for j, (task, split) in enumerate(cols):
            run = next((r for r in runs if r.label == model and r.task == task), None)
            value = run.data["metrics"].get(split, {}).get(metric) if run else None
            if value is None or non_finite(value):
                continue
            xs.append(j + (i - (len(models) - 1) / 2) * width)
            means.append(value["mean"])
            low.append(value["mean"] - value.get("ci_low", value["mean"]))
            high.append(value.get("ci_high", value["mean"]) - value["mean"])
        ax.bar(xs, means, width * 0.9, yerr=[low, high], capsize=3, color=colour[model], label=model)
        for x, mean in zip(xs, means):
            ax.text(x, 0.01, f"{mean:.3f}", ha="center", va="bottom", rotation=90, fontsize=7, color="white")
    ax.set_xticks(range(len(cols)), [f"{t}\n{s}" for t, s in cols])
    ax.set_ylabel(metric.replace("_", " "))
    spec = metric_spec(runs, metric)
    if spec.lower is not None and spec.upper is not None:  # a bounded metric on its whole range, else matplotlib's
        ax.set_ylim(spec.lower, spec.upper + 0.05 * (spec.upper - spec.lower))
    with_ci = any("ci_low" in m.get(metric, {}) for run in runs for m in run.data["metrics"].values())
    ax.set_title(f"mean over runs; whiskers: {comparison['confidence']:.0%} bootstrap CI" if with_ci
                 else "mean over runs", fontsize=9)
    ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=min(3, len(models)))
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def label_efficiency_plot(runs: list[Run], task: str, path: Path) -> Path | None:
    """Per head and budget kind: metric vs labels (log x), one line per model, band = bootstrap CI."""
    curves = {run: run.data["curves"]["label_efficiency"] for run in runs
              if run.task == task and (run.data.get("curves") or {}).get("label_efficiency")}
    if not curves:
        return None
    plt = _pyplot()
    colour = _colours(sorted({run.label for run in runs}))
    heads = list(dict.fromkeys(h for section in curves.values() for h in section["heads"]))
    kinds = [k for k in ("shots", "fraction")
             if any(points.get(k) for section in curves.values() for per_split in section["curves"].values()
                    for points in per_split.values())]
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ticks: dict[str, set[float]] = {kind: set() for kind in kinds}
    for section in curves.values():
        for per_split in section["curves"].values():
            for by_kind in per_split.values():
                for kind in kinds:
                    ticks[kind].update(p["value"] * (100 if kind == "fraction" else 1) for p in by_kind.get(kind) or [])
    fig, axes = plt.subplots(len(kinds), len(heads), figsize=(3.0 * len(heads), 2.7 * len(kinds)), squeeze=False,
                             sharey=True)
    for row, kind in enumerate(kinds):
        for col, head in enumerate(heads):
            ax = axes[row][col]
            for run, section in curves.items():
                for split, by_kind in section["curves"].get(head, {}).items():
                    points = by_kind.get(kind) or []
                    if not points:
                        continue
                    x = [p["value"] * (100 if kind == "fraction" else 1) for p in points]
                    ax.plot(x, [p["mean"] for p in points], marker="o", ms=3, color=colour[run.label],
                            label=f"{run.label} ({split})")
                    ax.fill_between(x, [p["ci_low"] for p in points], [p["ci_high"] for p in points],
                                    color=colour[run.label], alpha=0.2, lw=0)
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(FixedLocator(sorted(ticks[kind])))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_title(f"{head}", fontsize=9)
            ax.set_xlabel("labels per class" if kind == "shots" else "% of labels")
            if col == 0:
                ax.set_ylabel(next(iter(curves.values()))["metric"].replace("_", " "))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, frameon=False, fontsize=8, loc="lower center", ncol=min(4, max(1, len(labels))))
    fig.suptitle(f"{task}: label efficiency (mean over draws, band = bootstrap CI)", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def representation_scatter(runs: list[Run], metric: str, path: Path) -> Path | None:
    """Metric vs RankMe and vs ODCorr, one point per model and task/split, Spearman's rho in the title."""
    from scipy.stats import spearmanr

    points = [(run.label, f"{run.task}/{split}", run.data["metrics"][split][metric]["mean"], rep)
              for run in runs for split, rep in (run.data.get("representation") or {}).items()
              if metric in run.data["metrics"].get(split, {}) and not non_finite(run.data["metrics"][split][metric])
              and all(rep.get(key) is not None and math.isfinite(rep[key]) for key in ("rankme", "odcorr"))]
    if not points:
        return None
    plt = _pyplot()
    colour = _colours(sorted({run.label for run in runs}))
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.4))
    for ax, key, label in ((axes[0], "rankme", "RankMe"), (axes[1], "odcorr", "ODCorr")):
        xs = [p[3][key] for p in points]
        ys = [p[2] for p in points]
        for (model, column, y, rep), x in zip(points, xs):
            ax.scatter(x, y, color=colour[model], s=25)
            ax.annotate(column, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if len(points) >= 3:
            rho, p = spearmanr(xs, ys)
            title = f"{label}: Spearman rho = {rho:.2f} (p = {p:.2g}, n = {len(points)})"
        else:
            title = f"{label}: rank correlation needs 3+ points (n = {len(points)})"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(label)
        ax.set_ylabel(metric.replace("_", " "))
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=m) for m, c in colour.items()]
    fig.legend(handles=handles, frameon=False, fontsize=8, loc="lower center", ncol=min(4, len(handles)))
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def critical_difference_diagram(friedman: dict[str, Any], path: Path) -> Path | None:
    """Demšar's diagram: models on the average-rank axis; a bar joins models within the critical difference."""
    if not friedman or "average_ranks" not in friedman:
        return None
    plt = _pyplot()
    ranks = sorted(friedman["average_ranks"].items(), key=lambda kv: kv[1])
    k, cd = friedman["k"], friedman["critical_difference"]
    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.3 * k))
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-(k + 1.5), 1.5)
    ax.hlines(0, 1, k, color="black", lw=1)
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.15, color="black", lw=1)
        ax.text(r, 0.35, str(r), ha="center", fontsize=8)
    for i, (model, rank) in enumerate(ranks):
        y = -(i + 1)
        ax.plot([rank, rank], [0, y], color="black", lw=0.8)
        left = rank <= (k + 1) / 2
        ax.plot([rank, 0.6 if left else k + 0.4], [y, y], color="black", lw=0.8)
        ax.text(0.55 if left else k + 0.45, y, f"{model} ({rank:.2f})", ha="right" if left else "left",
                va="center", fontsize=8)
    for j, group in enumerate(friedman["cliques"]):
        lo = min(friedman["average_ranks"][m] for m in group)
        hi = max(friedman["average_ranks"][m] for m in group)
        ax.hlines(-0.35 - 0.2 * j, lo - 0.03, hi + 0.03, color="tab:red", lw=3)
    ax.hlines(1.1, 1, 1 + cd, color="black", lw=1.5)
    ax.text(1 + cd / 2, 1.25, f"CD = {cd:.2f}", ha="center", fontsize=8)
    ax.set_title(f"average rank over {friedman['n_blocks']} columns (Friedman p = {friedman['p_value']:.2g})",
                 fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def write_plots(runs: list[Run], metric: str, comparison: dict[str, Any], out: Path) -> list[Path]:
    """Every plot that the results support; returns the files written."""
    written = [bar_chart(runs, metric, comparison, out / f"bars_{metric}.png"),
               representation_scatter(runs, metric, out / f"{metric}_vs_representation.png"),
               critical_difference_diagram(comparison.get("friedman") or {}, out / "critical_difference.png")]
    for task in sorted({run.task for run in runs}):
        written.append(label_efficiency_plot(runs, task, out / f"label_efficiency_{task}.png"))
    return [p for p in written if p is not None]


def plot_caption(path: Path, metric: str) -> str:
    """What a plot written by :func:`write_plots` shows, for the HTML report's figure captions."""
    name, label = path.stem, metric.replace("_", " ")
    if name == f"bars_{metric}":
        return f"{label} per task/split and model: mean over runs, whiskers (where computed) its bootstrap CI."
    if name == f"{metric}_vs_representation":
        return f"{label} against the label-free representation metrics (RankMe, ODCorr) of the same embeddings."
    if name == "critical_difference":
        return ("Critical-difference diagram: average rank over the task/split columns; models joined by a red bar "
                "are within the Nemenyi critical difference.")
    if name.startswith("label_efficiency_"):
        return (f"Label efficiency on {name.removeprefix('label_efficiency_')}: {label} against the number of "
                "training labels per head, band the bootstrap CI over draws.")
    return name.replace("_", " ")
