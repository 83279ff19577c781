"""``evalkit regress``: did a code change make results worse than a baseline?

The baseline is an earlier evalkit run (results.json files or folders) or a CSV of
published numbers (columns model, task, split, metric, mean, std, protocol, source).

- An evalkit baseline is matched by (task, evaluation, split, metric), and the model by its
  fingerprint: a baseline of other weights or another transform is refused unless
  ``allow_other_model`` (then a result is paired with the baseline of its display name, or with
  the only model of its task on each side). A published CSV has no fingerprints: it is matched
  by (model name, task, split, metric), a name being any of a model preset's aliases
  (``mahmood_uni2_h`` in a CSV matches a run of the preset ``uni2-h``).
- Results fitted under another protocol than the baseline's are refused, not compared; so are
  results embedded in another precision than an evalkit baseline's (``fp32``, ``bf16``, ``fp16``).
- "Worse" follows the metric's recorded direction (``metric_info``); a metric with no better
  end cannot be judged and is refused.
- A result **fails** when it is worse than the baseline by more than the allowed worsening,
  ``max(tolerance, std_multiple * baseline std)``, and, where both sides kept per-sample
  predictions (two evalkit runs, a classification metric), a paired bootstrap also calls the
  difference significant, so that noise within the tolerance of an unlucky seed is not a regression.
- A compared pair with a NaN or ±inf mean or std, on either side, is ``nonfinite``: a failure,
  since NaN compares false with every bound and would otherwise pass.
- A baseline entry without a new result is ``missing`` (a failure unless ``allow_missing``);
  a published table is a reference, not a contract, so from a CSV only the (model, task)
  pairs that have new results are compared.
"""

from __future__ import annotations

import csv
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from evalkit.errors import EvalkitError
from evalkit.models.presets import find_preset
from evalkit.predictions import read_predictions
from evalkit.report.compare import has_paired_test
from evalkit.report.runs import Run, load_results, metric_spec, short_fingerprint
from evalkit.report.tables import to_markdown
from evalkit.stats import paired_bootstrap
from evalkit.stats.config import StatsConfig

CSV_COLUMNS = ("model", "task", "split", "metric", "mean", "std", "protocol", "source")
FAILING = ("fail", "missing", "nonfinite")  # the statuses that make regress exit 1


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
    run: Run | None = None  # evalkit runs: identity, evaluation, direction and predictions; None from a CSV

    @property
    def where(self) -> str:
        return f"{self.model} on {self.task}/{self.split} {self.metric}"

    def non_finite(self, side: str) -> list[str]:
        """``"<side> mean"`` / ``"<side> std"`` for each of the two that is NaN or ±inf."""
        return [f"{side} {name}" for name in ("mean", "std") if not math.isfinite(getattr(self, name))]


def entries_from_runs(runs: list[Run], metrics: list[str]) -> list[Entry]:
    return [Entry(run.model, run.task, split, metric, float(values[metric]["mean"]),
                  float(values[metric].get("std", 0.0)), run.protocol, run)
            for run in runs for split, values in run.data["metrics"].items() for metric in metrics if metric in values]


def entries_from_csv(path: Path, metrics: list[str]) -> list[Entry]:
    entries = []
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
                mean = _csv_number(path, reader.line_num, "mean", r["mean"])
                std = _csv_number(path, reader.line_num, "std", r["std"] or "0")
                entries.append(Entry(r["model"], r["task"], r["split"], r["metric"], mean, std,
                                     r.get("protocol") or ""))
    except UnicodeDecodeError:
        raise EvalkitError(f"{path} is not a text CSV; a baseline is a CSV with {', '.join(CSV_COLUMNS)} "
                           "or a folder of results.json files") from None
    return entries


def _csv_number(path: Path, line: int, column: str, text: str | None) -> float:
    """A numeric cell of a baseline CSV; ``nan``/``inf`` parse (and are judged ``nonfinite``), other text is refused."""
    try:
        return float(text)  # type: ignore[arg-type]  # None: a row shorter than the header
    except (TypeError, ValueError):
        found = f"'{text}'" if text else "an empty cell"
        raise EvalkitError(f"{path} line {line}, column {column}: expected a number, found {found}; write a decimal "
                           "number there (std may be left empty)") from None


def is_published_table(path: str | Path) -> bool:
    """A CSV baseline is a published table; anything else is a folder or file of evalkit runs."""
    return Path(path).suffix == ".csv"


def load_baseline(path: str | Path, metrics: list[str]) -> list[Entry]:
    path = Path(path)
    if not path.exists():
        raise EvalkitError(f"baseline not found: {path}")
    if is_published_table(path):
        return entries_from_csv(path, metrics)
    return entries_from_runs(load_results([path]), metrics)


def model_key(name: str) -> str:
    """The name a published row and a result are matched by: a model preset's own name for any of its
    aliases (eva's registry name, a paper's), else the name as written."""
    preset = find_preset(name)
    return preset.name if preset is not None else name


def _published_slot(entry: Entry) -> tuple[str, ...]:
    """A published number knows its model by name only."""
    return "published", model_key(entry.model), entry.task, entry.split, entry.metric


def _slot(entry: Entry) -> tuple[str, ...]:
    """What a baseline entry and a result must share to be compared (besides the model)."""
    if entry.run is None:
        return _published_slot(entry)
    return "run", entry.task, entry.run.evaluation, entry.split, entry.metric


def _leaves(config: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(config, dict):
        for key, value in config.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), config


def _protocol_option(run: Run, baseline: str) -> str:
    """`` (--head.protocol <baseline>)``: the option whose value in the run's config.yaml is its protocol, if
    exactly one is; ``""`` otherwise, since a guessed option name would send the user the wrong way."""
    path = run.run_dir / "config.yaml"
    if not path.is_file():
        return ""
    try:
        found = [key for key, value in _leaves(yaml.safe_load(path.read_text())) if value == run.protocol]
    except yaml.YAMLError:  # only a hint: a damaged config.yaml must not hide the real message
        return ""
    return f" (--{found[0]} {baseline})" if len(found) == 1 else ""


def _counterpart(old: Entry, candidates: list[Entry], baseline_models: set[str], allow_other_model: bool
                 ) -> Entry | None:
    """The result to compare with ``old`` among those of its slot, or ``None`` (missing); refuses other
    protocols, and other models unless allowed.

    A result of a model that the baseline does not hold stands in for a baseline model of its
    display name, or for the baseline's only model when it is the only such result.
    """
    if old.run is None:
        same_model = candidates
    else:
        others = [c for c in candidates if c.run.identity not in baseline_models]
        same_model = ([c for c in candidates if c.run.identity == old.run.identity]
                      or [c for c in others if c.model == old.model]
                      or (others if len(baseline_models) == 1 and len({c.run.identity for c in others}) == 1 else []))
    if not same_model:
        return None
    matches = [c for c in same_model if c.protocol == old.protocol or not (c.protocol and old.protocol)]
    if not matches:
        other = same_model[0]
        option = _protocol_option(other.run, old.protocol)
        raise EvalkitError(f"{old.where}: the baseline was fitted with protocol '{old.protocol}', the new result "
                           f"with '{other.protocol}'; fit with the baseline's protocol{option}")
    if old.run is not None:  # a published table says nothing of precision; nor does an old record (None)
        same_precision = [c for c in matches if c.run.precision == old.run.precision
                          or not (c.run.precision and old.run.precision)]
        if not same_precision:
            raise EvalkitError(f"{old.where}: the baseline was embedded in {old.run.precision}, the new result in "
                               f"{matches[0].run.precision}; embed with --embed.precision {old.run.precision}")
        matches = same_precision
    if len(matches) > 1:
        raise EvalkitError(f"{old.where}: {len(matches)} results of models named {old.model} could stand for this "
                           "baseline entry; regress them one at a time")
    match = matches[0]
    if old.run is not None and match.run.identity != old.run.identity and not allow_other_model:
        raise EvalkitError(f"{match.task}/{match.split} {match.metric}: the baseline is {old.model} (fingerprint "
                           f"{short_fingerprint(old.run, 12)}), the result {match.model} (fingerprint "
                           f"{short_fingerprint(match.run, 12)}), other weights or transform; pass --allow_other_model "
                           "to compare them anyway")
    return match


def _paired_p(new: Entry, old: Entry, stats: StatsConfig) -> float | None:
    """p-value of the paired bootstrap of (baseline - new) when both runs kept their predictions."""
    if new.run is None or old.run is None or not has_paired_test(new.metric):
        return None
    a = read_predictions(old.run.run_dir).get(old.split)
    b = read_predictions(new.run.run_dir).get(new.split)
    if a is None or b is None or sorted(a.ids) != sorted(b.ids):
        return None
    result = paired_bootstrap(a.target, a.probs, b.aligned_to(a.ids).probs, a.probs.shape[-1], metric=new.metric,
                              n_resamples=stats.n_resamples, confidence=stats.confidence, seed=stats.seed)
    return float(result["p_value"])


def _judge(current: Entry, old: Entry, tolerance: float, std_multiple: float, stats: StatsConfig) -> dict[str, Any]:
    """A pass/fail row: worse by more than allowed and, where testable, significantly so."""
    spec = metric_spec([entry.run for entry in (current, old) if entry.run is not None], current.metric)
    if spec.higher_is_better is None:
        raise EvalkitError(f"{current.metric} has no better end (higher_is_better is null in its metric_info), so "
                           "regress cannot judge it; leave it out of --metrics")
    model = current.model if current.model == old.model else f"{old.model} → {current.model}"
    key = (model, current.task, current.split, current.metric)
    unusable = current.non_finite("new") + old.non_finite("baseline")
    if unusable:  # NaN compares false with any bound: judged, it would pass
        return {"key": key, "status": "nonfinite", "baseline": old.mean, "new": current.mean, "non_finite": unusable}
    allowed = max(tolerance, std_multiple * old.std)
    worse = spec.worse_by(old.mean, current.mean) > allowed
    p = _paired_p(current, old, stats) if worse else None
    return {"key": key, "status": "fail" if worse and (p is None or p < stats.alpha) else "pass", "baseline": old.mean,
            "new": current.mean, "difference": current.mean - old.mean, "allowed": allowed, "p_value": p}


def compare(new: list[Entry], baseline: list[Entry], tolerance: float, std_multiple: float, stats: StatsConfig,
            allow_missing: bool = False, allow_other_model: bool = False) -> list[dict[str, Any]]:
    """One row per baseline entry: status ``pass``, ``fail``, ``nonfinite`` or ``missing``, with the numbers."""
    results: dict[tuple[str, ...], list[Entry]] = defaultdict(list)
    baseline_models: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for entry in new:
        results[_slot(entry)].append(entry)
        results[_published_slot(entry)].append(entry)
    for entry in baseline:
        baseline_models[_slot(entry)].add(entry.run.identity if entry.run else entry.model)
    rows = []
    for old in sorted(baseline, key=lambda entry: (entry.model, entry.task, entry.split, entry.metric)):
        current = _counterpart(old, results[_slot(old)], baseline_models[_slot(old)], allow_other_model)
        if current is None:
            rows.append({"key": (old.model, old.task, old.split, old.metric),
                         "status": "ok-missing" if allow_missing else "missing", "baseline": old.mean})
        else:
            rows.append(_judge(current, old, tolerance, std_multiple, stats))
    return rows


def _status(row: dict[str, Any]) -> str:
    """``PASS``, ``FAIL``, ``MISSING``, ``OK-MISSING``, or ``NONFINITE (baseline mean, ...)`` naming the culprits."""
    status = row["status"].upper()
    return f"{status} ({', '.join(row['non_finite'])})" if "non_finite" in row else status


def _summary(rows: list[dict[str, Any]], not_run: int) -> str:
    """``k of n passed``, then what failed and what was not compared."""
    counts = Counter(row["status"] for row in rows)
    failed = sum(counts[status] for status in FAILING)
    regressed = counts["fail"] + counts["missing"]
    return (f"\n{len(rows) - failed} of {len(rows)} passed"
            + (f"; {regressed} regression(s) or missing result(s)" if regressed else "")
            + (f"; {counts['nonfinite']} not judged, a mean or std being NaN or inf (NONFINITE): fix the run or "
               "baseline that produced it" if counts["nonfinite"] else "")
            + (f"; {not_run} {'entry' if not_run == 1 else 'entries'} of the published table for other models or "
               "tasks not compared" if not_run else "") + "\n")


def render(rows: list[dict[str, Any]]) -> str:
    table = []
    for row in rows:
        model, task, split, metric = row["key"]
        table.append([model, f"{task}/{split}", metric, f"{row['baseline']:.4f}",
                      f"{row['new']:.4f}" if "new" in row else "–",
                      f"{row['difference']:+.4f}" if "difference" in row else "–",
                      f"{row['allowed']:.4f}" if "allowed" in row else "–",
                      "–" if row.get("p_value") is None else f"{row['p_value']:.3f}", _status(row)])
    return to_markdown(["model", "task/split", "metric", "baseline", "new", "difference", "allowed worsening",
                        "p (paired)", "status"], table)


def regress(results: list[str], baseline: str, metrics: list[str], tolerance: float, std_multiple: float,
            stats: StatsConfig, allow_missing: bool = False, allow_other_model: bool = False) -> tuple[str, bool]:
    """The printed table and whether everything passed."""
    if tolerance < 0 or std_multiple < 0:
        raise EvalkitError("--tolerance and --std_multiple must be >= 0")
    new = entries_from_runs(load_results(results), metrics)
    reference = load_baseline(baseline, metrics)
    if not reference:
        raise EvalkitError(f"the baseline {baseline} holds none of the metrics {', '.join(metrics)}")
    not_run = 0
    if is_published_table(baseline):  # a reference, not a contract: compare only what was run
        run = {(model_key(entry.model), entry.task) for entry in new}
        compared = [entry for entry in reference if (model_key(entry.model), entry.task) in run]
        if not compared:
            raise EvalkitError(f"no (model, task) of {', '.join(results)} is in {baseline}; name the model and task "
                               "as the CSV does (its `model` and `task` columns)")
        not_run, reference = len(reference) - len(compared), compared
    rows = compare(new, reference, tolerance, std_multiple, stats, allow_missing, allow_other_model)
    return render(rows) + _summary(rows, not_run), not any(row["status"] in FAILING for row in rows)
