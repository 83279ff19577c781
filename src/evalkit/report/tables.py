"""The report's tables from loaded runs: models x tasks, mean ± std over runs with the bootstrap CI.

The best model of each column (by the metric's recorded direction, see
:func:`evalkit.report.compare.compare_runs`) is in bold; a model whose difference from the best
is not significant (paired bootstrap over the same test samples) is marked ``≈``. A cell with a
NaN or ±inf number is shown as it is, marked ``(non-finite)``, and never bold; an undefined
representation metric (null in results.json) is ``n/a``. Markdown for people, CSV for
spreadsheets. Rendering only: the numbers come from :mod:`evalkit.report.runs` and the
comparison, and :mod:`evalkit.report.write` writes the files.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.metrics.spec import MetricSpec
from evalkit.report.runs import Run, columns, metric_spec, non_finite
from evalkit.stats.config import StatsConfig

NOT_SIGNIFICANT = "≈"
PREPROCESSING_DIFFERS = "⚠"
NON_FINITE = "(non-finite)"
UNDEFINED = "n/a"


def _cell(value: dict[str, Any], best: bool, not_significant: bool) -> str:
    """``mean ± std [CI]``, bold when best, ``≈`` when not significantly different from the best;
    a summary with a NaN or ±inf number is never bold and says so."""
    flagged = bool(non_finite(value))
    text = f"{value['mean']:.3f} ± {value['std']:.3f}"
    if best and not flagged:
        text = f"**{text}**"
    if "ci_low" in value:
        text += f" [{value['ci_low']:.3f}, {value['ci_high']:.3f}]"
    if flagged:
        return f"{text} {NON_FINITE}"
    return text + (f" {NOT_SIGNIFICANT}" if not_significant else "")


def comparison_table(runs: list[Run], metric: str, comparison: dict[str, Any]) -> tuple[list[str], list[list[str]], list[list[Any]]]:
    """Header, display rows and numeric rows (mean, std, CI, p vs best) of the models x tasks table; a model
    whose embeddings were normalised or resized otherwise than the rest of a task's models is marked ⚠."""
    cols = columns(runs, metric)
    if not cols:
        reported = sorted({name for run in runs for values in run.data["metrics"].values() for name in values})
        raise EvalkitError(f"no results report the metric '{metric}'; pass --metric with one they report: "
                           f"{', '.join(reported)}")
    models = sorted({run.label for run in runs})
    cell = {(run.label, run.task, s): m[metric] for run in runs for s, m in run.data["metrics"].items() if metric in m}
    header = ["model"] + [f"{task}/{split}" for task, split in cols]
    shown, numeric = [], []
    odd = {run.label for run in preprocessing_outliers(runs)}
    for model in models:
        row, nums = [model + (f" {PREPROCESSING_DIFFERS}" if model in odd else "")], [model]
        for task, split in cols:
            value = cell.get((model, task, split))
            column = comparison["columns"].get(f"{task}/{split}", {})
            versus = column.get("versus_best", {}).get(model, {})
            if value is None:
                row.append("–")
                nums += [""] * 5
                continue
            row.append(_cell(value, model == column.get("best"), versus.get("significant") is False))
            nums += [value["mean"], value["std"], value.get("ci_low", ""), value.get("ci_high", ""),
                     versus.get("p_value", "")]
        shown.append(row)
        numeric.append(nums)
    return header, shown, numeric


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(header: list[str], numeric: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["model"] + [f"{c}_{stat}" for c in header[1:]
                                 for stat in ("mean", "std", "ci_low", "ci_high", "p_vs_best")])
    writer.writerows(numeric)
    return out.getvalue()


def _fmt(value: float | None, digits: int) -> str:
    """A representation metric: ``n/a`` where undefined (null), the value and ``(non-finite)`` for NaN/±inf."""
    if value is None:
        return UNDEFINED
    return f"{value:.{digits}f}" if math.isfinite(value) else f"{value} {NON_FINITE}"


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


@dataclass
class Section:
    """A block of the report after the main table: a sentence and, mostly, a table whose rows
    name the runs their numbers come from (the HTML report links them to their provenance)."""

    intro: str
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    sources: list[list[Run]] = field(default_factory=list)

    def markdown(self) -> str:
        if not self.header:
            return f"\n{self.intro}\n"
        return f"\n{self.intro}:\n\n" + to_markdown(self.header, self.rows)


def _pairwise_section(runs: list[Run], comparison: dict[str, Any], stats: StatsConfig) -> Section | None:
    by_key = {(run.task, run.label): run for run in runs}
    rows, sources = [], []
    for name, column in comparison["columns"].items():
        task = name.rsplit("/", 1)[0]
        for model, versus in column.get("versus_best", {}).items():
            sources.append([by_key[(task, column["best"])], by_key[(task, model)]])
            if "diff" not in versus:
                rows.append([name, f"{column['best']} vs {model}", "–", "–", "–", "–", versus.get("note", "")])
                continue
            rows.append([name, f"{column['best']} vs {model}", f"{versus['diff']:+.3f}",
                         f"[{versus['ci_low']:+.3f}, {versus['ci_high']:+.3f}]", _fmt_p(versus["p_value"]),
                         _fmt_p(versus.get("mcnemar_p")), "yes" if versus["significant"] else "no"])
    if not rows:
        return None
    header = ["task/split", "best vs model", "difference", f"{stats.confidence:.0%} CI", "p (paired bootstrap)",
              "p (McNemar)", f"significant at {stats.alpha}"]
    return Section("Paired comparisons with the best model of each column, on the same test samples", header, rows,
                   sources)


def _friedman_section(comparison: dict[str, Any]) -> Section | None:
    friedman = comparison.get("friedman")
    if not friedman:
        return None
    left_out = " Columns with a non-finite value are left out of it." if comparison.get("non_finite") else ""
    if "note" in friedman:
        return Section(f"Friedman test: {friedman['note']}" + (f".{left_out}" if left_out else ""))
    ranks = ", ".join(f"{m} {r:.2f}" for m, r in sorted(friedman["average_ranks"].items(), key=lambda kv: kv[1]))
    return Section(f"Friedman test over {friedman['n_blocks']} task/split columns and {friedman['k']} models: "
                   f"chi² = {friedman['statistic']:.3f}, p = {_fmt_p(friedman['p_value'])}; average ranks (1 = best): "
                   f"{ranks}; Nemenyi critical difference {friedman['critical_difference']:.3f} at alpha "
                   f"{friedman['alpha']}.{left_out}")


def _non_finite_section(comparison: dict[str, Any]) -> Section | None:
    """Which cells hold NaN or ±inf: shown in the table, but never the best nor tested nor ranked."""
    cells = comparison.get("non_finite") or []
    if not cells:
        return None
    which = "; ".join(f"{cell['model']} on {cell['column']} ({', '.join(cell['fields'])})" for cell in cells)
    return Section(f"{len(cells)} non-finite {comparison['metric']} value(s) (NaN or ±inf), marked {NON_FINITE} in "
                   f"the table and left out of the best, the paired comparisons and the Friedman test: {which}; "
                   "check the runs that produced them.")


_REPRESENTATION = (("rankme", "RankMe", 1), ("odcorr", "ODCorr", 3), ("alpha_req", "α-ReQ", 3))
_ARROW = {True: " ↑", False: " ↓", None: ""}


def _representation_section(runs: list[Run]) -> Section | None:
    rows, sources = [], []
    for run in runs:
        for split, values in (run.data.get("representation") or {}).items():
            rows.append([run.label, f"{run.task}/{split}",
                         *(_fmt(values.get(key), digits) for key, _, digits in _REPRESENTATION)])
            sources.append([run])
    if not rows:
        return None
    names = [name + _ARROW[metric_spec(runs, key).higher_is_better] for key, name, _ in _REPRESENTATION]
    return Section("Representation metrics of the cached embeddings (label-free; ↑/↓: higher/lower is better)",
                   ["model", "task/split", *names], rows, sources)


def _capped_budgets(section: dict[str, Any]) -> str:
    """The k-shot budgets some class could not fill, with what those classes gave: ``2, 3 (1 in class 1)``.

    Read from the curve points' ``short_classes`` and ``per_class`` (results.json files written
    before they existed have neither: nothing is listed).
    """
    budgets: set[float] = set()
    given: dict[str, str] = {}  # class id -> samples it gave
    for per_split in section["curves"].values():
        for by_kind in per_split.values():
            for point in by_kind.get("shots") or []:
                short, per_class = point.get("short_classes"), point.get("per_class")
                if isinstance(short, list) and short:
                    budgets.add(point["value"])
                    used = per_class if isinstance(per_class, dict) else {}
                    given.update({str(c): str(used.get(str(c), "?")) for c in short})
    if not budgets:
        return ""
    by_count: dict[str, list[str]] = defaultdict(list)
    for c, n in sorted(given.items(), key=lambda item: (len(item[0]), item[0])):
        by_count[n].append(c)
    counts = "; ".join(f"{n} in class{'es' if len(cs) > 1 else ''} {', '.join(cs)}" for n, cs in by_count.items())
    return ", ".join(f"{k:g}" for k in sorted(budgets)) + f" ({counts})"


def _label_efficiency_section(runs: list[Run]) -> Section | None:
    rows, sources = [], []
    for run in runs:
        section = (run.data.get("curves") or {}).get("label_efficiency")
        if not section:
            continue
        capped = _capped_budgets(section)
        for head, per_split in section["auc"].items():
            for split, by_kind in per_split.items():
                rows.append([run.label, f"{run.task}/{split}", head,
                             *(f"{by_kind[kind]:.3f}" if kind in by_kind else "–" for kind in ("shots", "fraction")),
                             capped])
                sources.append([run])
    if not rows:
        return None
    header = ["model", "task/split", "head", "k-shot", "fraction", "k-shot budgets above a class's size (its samples)"]
    if not any(row[-1] for row in rows):
        header, rows = header[:-1], [row[:-1] for row in rows]
    return Section("Label efficiency: normalised area under balanced accuracy vs log(labels) (the curve's mean level)",
                   header, rows, sources)


def _transform_key(preprocessing: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two transforms give other pixels to the same model: normalisation and interpolation."""
    return (tuple(preprocessing.get("mean") or ()), tuple(preprocessing.get("std") or ()),
            preprocessing.get("interpolation"))


def preprocessing_outliers(runs: list[Run]) -> list[Run]:
    """The runs whose normalisation or interpolation differs from the most common one among their task's
    runs (all of them when no one is most common); runs that recorded no transform are not judged."""
    by_task: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        if run.preprocessing:
            by_task[run.task].append(run)
    outliers = []
    for task_runs in by_task.values():
        counts: dict[tuple[Any, ...], int] = defaultdict(int)
        for run in task_runs:
            counts[_transform_key(run.preprocessing)] += 1
        if len(counts) < 2:
            continue
        top = max(counts.values())
        common = [key for key, n in counts.items() if n == top]
        outliers += [run for run in task_runs if len(common) > 1 or _transform_key(run.preprocessing) != common[0]]
    return outliers


def describe_transform(preprocessing: dict[str, Any] | None) -> str:
    """``224 px (resize 256), bicubic, mean 0.485/0.456/0.406, std 0.229/0.224/0.225``; ``–`` when not recorded."""
    if not preprocessing:
        return "–"
    resize = preprocessing.get("resize_size")
    numbers = {key: "/".join(f"{v:g}" for v in preprocessing.get(key) or ()) for key in ("mean", "std")}
    return (f"{preprocessing.get('input_size')} px{f' (resize {resize})' if resize else ''}, "
            f"{preprocessing.get('interpolation')}, mean {numbers['mean']}, std {numbers['std']}")


def _bytes(n: float | None) -> str:
    return "–" if n is None else f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _embedding_cost(run: Run) -> list[str]:
    """Device, precision, images/s, peak memory and embedding seconds over the run's splits, as recorded when
    its caches were written (marked ``reused`` when this run's predict found them complete)."""
    embedding = run.data.get("embedding") or {}
    costs = [c for c in (embedding.get("cost") or {}).values() if isinstance(c, dict)]
    seconds = sum(float(c.get("seconds") or 0.0) for c in costs)
    images = sum(int(c.get("images") or 0) for c in costs)
    peaks = [float(c["peak_memory_bytes"]) for c in costs if c.get("peak_memory_bytes") is not None]
    devices = sorted({str(c.get("device")) for c in costs if c.get("device")})
    rate = f"{images / seconds:.1f}" if seconds > 0 else "–"
    return [", ".join(devices) or "–", run.precision or "–", rate + (" (reused)" if embedding.get("reused") else ""),
            _bytes(max(peaks) if peaks else None), f"{seconds:.1f}" if costs else "–"]


def _cost_section(runs: list[Run]) -> Section | None:
    """What each number cost and which transform made its embeddings."""
    rows, sources = [], []
    odd = {id(run) for run in preprocessing_outliers(runs)}
    for run in runs:
        per_head = (run.data.get("timing") or {}).get("seconds_per_head_fit")
        rows.append([run.label, run.task, *_embedding_cost(run), "–" if per_head is None else f"{per_head:.2f}",
                     describe_transform(run.preprocessing) + (f" {PREPROCESSING_DIFFERS}" if id(run) in odd else "")])
        sources.append([run])
    if not any(any(cell != "–" for cell in row[2:]) for row in rows):
        return None
    intro = ("Cost and preprocessing of each run: the embedding stage as recorded when its cache was written "
             "(reused: this run found the cache complete), seconds per seeded head fit, and the transform applied")
    if odd:
        intro += (f"; {PREPROCESSING_DIFFERS} marks a model whose normalisation or interpolation differs from the "
                  "other models of its task, so its numbers are not comparable with theirs as they stand")
    return Section(intro, ["model", "task", "device", "precision", "images/s", "peak memory", "embedding (s)",
                           "s per head fit", "preprocessing"], rows, sources)


def _left_out_section(runs: list[Run]) -> Section | None:
    """Which results.json files the table does not show, so that no run disappears silently."""
    left_out = [path for run in runs for path in run.superseded]
    if not left_out:
        return None
    runs_word = "run" if len(left_out) == 1 else "runs"
    return Section(f"{len(left_out)} older {runs_word} of the same (task, evaluation, protocol, model) left out, the "
                   f"newest of each shown: {', '.join(map(str, left_out))}")


def report_sections(runs: list[Run], comparison: dict[str, Any], stats: StatsConfig) -> list[Section]:
    """Everything after the main table, in the order the report shows it."""
    sections = (_left_out_section(runs), _non_finite_section(comparison), _pairwise_section(runs, comparison, stats),
                _friedman_section(comparison), _representation_section(runs), _label_efficiency_section(runs),
                _cost_section(runs))
    return [section for section in sections if section is not None]


def _protocols(runs: list[Run], metric: str) -> str:
    """Which protocol(s) the table shows: one for all, or per task."""
    per_task: dict[str, set[str]] = defaultdict(set)
    for run in runs:
        if any(metric in values for values in run.data["metrics"].values()):
            per_task[run.task].add(run.protocol)
    every = set().union(*per_task.values())
    if len(every) == 1:
        return f"protocol {every.pop()}"
    return "protocols: " + "; ".join(f"{task} {', '.join(sorted(found))}" for task, found in sorted(per_task.items()))


def caption(runs: list[Run], spec: MetricSpec, stats: StatsConfig) -> str:
    """What the main table shows, including which way is better and under which protocol(s)."""
    direction = {True: "higher is better, best in bold", False: "lower is better, best in bold",
                 None: "no better end recorded, so no best"}[spec.higher_is_better]
    return (f"{spec.name}: mean ± std over runs [{stats.confidence:.0%} bootstrap CI]; {direction}; "
            f"{NOT_SIGNIFICANT} = not significantly different from the best (paired bootstrap, alpha {stats.alpha}); "
            f"{_protocols(runs, spec.name)}"
            + (f"; {PREPROCESSING_DIFFERS} = embedded with another normalisation or interpolation than the task's other "
               "models (see the preprocessing table)" if preprocessing_outliers(runs) else ""))
