"""``evalkit regress``: did a model or code change make results worse than a baseline?

The baseline is an earlier evalkit run (results.json files or folders) or a CSV of
published numbers (columns model, task, split, metric, mean, std, protocol, source). Every
(model, task, split, metric) of the new results is compared with the baseline's:

- it **fails** when the new mean is below the baseline's by more than the allowed drop,
  ``max(tolerance, std_multiple * baseline std)``;
- where both sides kept per-sample predictions (two evalkit runs), a paired bootstrap must
  also call the drop significant, so that noise within the tolerance of an unlucky seed is
  not a regression;
- results fitted under another protocol than the baseline's are refused, not compared;
- a baseline entry without a new result is ``missing`` (a failure unless ``--allow_missing``);
  a published table is a reference, not a contract, so from a CSV only the (model, task)
  pairs that have new results are compared.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.predictions import read_predictions
from evalkit.report.tables import Run, load_results, to_markdown
from evalkit.stats.config import StatsConfig

CSV_COLUMNS = ("model", "task", "split", "metric", "mean", "std", "protocol", "source")


@dataclass
class Entry:
    """One number: a metric of a model on a task split, with where it came from."""

    model: str
    task: str
    split: str
    metric: str
    mean: float
    std: float
    protocol: str
    run: Run | None = None  # evalkit runs keep their predictions for the paired test


def entries_from_runs(runs: list[Run], metrics: list[str]) -> dict[tuple[str, str, str, str], Entry]:
    out = {}
    for run in runs:
        for split, values in run.data["metrics"].items():
            for metric in metrics:
                if metric in values:
                    out[(run.model, run.task, split, metric)] = Entry(
                        run.model, run.task, split, metric, float(values[metric]["mean"]),
                        float(values[metric].get("std", 0.0)), str(run.data.get("protocol", "")), run)
    return out


def entries_from_csv(path: Path, metrics: list[str]) -> dict[tuple[str, str, str, str], Entry]:
    entries = {}
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in CSV_COLUMNS[:6] if c not in (reader.fieldnames or [])]
            if missing:
                raise EvalkitError(f"{path} lacks the column(s) {', '.join(missing)}; a baseline CSV has "
                                   f"{', '.join(CSV_COLUMNS)}")
            for r in reader:
                if r["metric"] not in metrics:
                    continue
                try:
                    mean, std = float(r["mean"]), float(r["std"] or 0.0)
                except (TypeError, ValueError):
                    raise EvalkitError(f"{path} line {reader.line_num}: mean '{r['mean']}' and std '{r['std']}' "
                                       "must be numbers (std may be empty)") from None
                entries[(r["model"], r["task"], r["split"], r["metric"])] = Entry(
                    r["model"], r["task"], r["split"], r["metric"], mean, std, r.get("protocol") or "")
    except UnicodeDecodeError:
        raise EvalkitError(f"{path} is not a text CSV; a baseline is a CSV with {', '.join(CSV_COLUMNS)} "
                           "or a folder of results.json files") from None
    return entries


def is_published_table(path: str | Path) -> bool:
    """A CSV baseline is a published table; anything else is a folder or file of evalkit runs."""
    return Path(path).suffix == ".csv"


def load_baseline(path: str | Path, metrics: list[str]) -> dict[tuple[str, str, str, str], Entry]:
    path = Path(path)
    if not path.exists():
        raise EvalkitError(f"baseline not found: {path}")
    if is_published_table(path):
        return entries_from_csv(path, metrics)
    return entries_from_runs(load_results([path]), metrics)


def _paired_p(new: Entry, old: Entry, stats: StatsConfig) -> float | None:
    """p-value of the paired bootstrap of (baseline - new) when both runs kept their predictions."""
    if new.run is None or old.run is None:
        return None
    a = read_predictions(old.run.run_dir).get(old.split)
    b = read_predictions(new.run.run_dir).get(new.split)
    if a is None or b is None or sorted(a.ids) != sorted(b.ids):
        return None
    from evalkit.stats import paired_bootstrap

    result = paired_bootstrap(a.target, a.probs, b.aligned_to(a.ids).probs, a.probs.shape[-1], metric=new.metric,
                              n_resamples=stats.n_resamples, confidence=stats.confidence, seed=stats.seed)
    return float(result["p_value"])


def compare(new: dict, baseline: dict, tolerance: float, std_multiple: float, stats: StatsConfig,
            allow_missing: bool = False) -> list[dict[str, Any]]:
    """One row per baseline entry: status ``pass``, ``fail`` or ``missing``, with the numbers."""
    rows = []
    for key, old in sorted(baseline.items()):
        current = new.get(key)
        if current is None:
            rows.append({"key": key, "status": "ok-missing" if allow_missing else "missing", "baseline": old.mean})
            continue
        if old.protocol and current.protocol and old.protocol != current.protocol:
            option = "--seg.decoder" if current.protocol.startswith("segmentation_") else "--head.protocol"
            raise EvalkitError(f"{'/'.join(key)}: the baseline was fitted with protocol '{old.protocol}', the new "
                               f"result with '{current.protocol}'; compare runs of the same protocol ({option})")
        allowed = max(tolerance, std_multiple * old.std)
        drop = old.mean - current.mean
        p = _paired_p(current, old, stats) if drop > allowed else None
        failed = drop > allowed and (p is None or p < stats.alpha)
        rows.append({"key": key, "status": "fail" if failed else "pass", "baseline": old.mean, "new": current.mean,
                     "difference": current.mean - old.mean, "allowed_drop": allowed, "p_value": p})
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    table = []
    for row in rows:
        model, task, split, metric = row["key"]
        table.append([model, f"{task}/{split}", metric, f"{row['baseline']:.4f}",
                      f"{row['new']:.4f}" if "new" in row else "–",
                      f"{row['difference']:+.4f}" if "difference" in row else "–",
                      f"{row['allowed_drop']:.4f}" if "allowed_drop" in row else "–",
                      "–" if row.get("p_value") is None else f"{row['p_value']:.3f}", row["status"].upper()])
    return to_markdown(["model", "task/split", "metric", "baseline", "new", "difference", "allowed drop",
                        "p (paired)", "status"], table)


def regress(results: list[str], baseline: str, metrics: list[str], tolerance: float, std_multiple: float,
            stats: StatsConfig, allow_missing: bool = False) -> tuple[str, bool]:
    """The printed table and whether everything passed."""
    if tolerance < 0 or std_multiple < 0:
        raise EvalkitError("--tolerance and --std_multiple must be >= 0")
    new = entries_from_runs(load_results(results), metrics)
    reference = load_baseline(baseline, metrics)
    if not reference:
        raise EvalkitError(f"the baseline {baseline} holds none of the metrics {', '.join(metrics)}")
    not_run = 0
    if is_published_table(baseline):  # a reference, not a contract: compare only what was run
        run = {(key[0], key[1]) for key in new}
        compared = {key: entry for key, entry in reference.items() if (key[0], key[1]) in run}
        if not compared:
            raise EvalkitError(f"no (model, task) of {', '.join(results)} is in {baseline}; name the model and task "
                               "as the CSV does (its `model` and `task` columns)")
        not_run, reference = len(reference) - len(compared), compared
    rows = compare(new, reference, tolerance, std_multiple, stats, allow_missing)
    failed = [r for r in rows if r["status"] in ("fail", "missing")]
    summary = (f"\n{len(rows) - len(failed)} of {len(rows)} passed" +
               (f"; {len(failed)} regression(s) or missing result(s)" if failed else "") +
               (f"; {not_run} {'entry' if not_run == 1 else 'entries'} of the published table for other models or "
                "tasks not compared" if not_run else "") + "\n")
    return render(rows) + summary, not failed
