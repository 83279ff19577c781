"""Tables from results.json files: models x tasks, mean ± std over runs with the bootstrap CI.

The best model of each column is in bold; a model whose difference from the best is not
significant (paired bootstrap over the same test samples, see :mod:`evalkit.report.compare`)
is marked ``≈``. Markdown for people, CSV for spreadsheets, comparison.json for programs.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from evalkit.errors import EvalkitError
from evalkit.stats.config import StatsConfig

NOT_SIGNIFICANT = "≈"


@dataclass
class Run:
    """One results.json and the folder it lives in (where predictions.h5 is)."""

    data: dict[str, Any]
    run_dir: Path

    @property
    def task(self) -> str:
        return self.data["task"]

    @property
    def model(self) -> str:
        return self.data["model"]


def load_results(paths: list[str | Path]) -> list[Run]:
    """Every results.json under ``paths`` (files or folders); the newest run per (task, model) wins."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(sorted(p.rglob("results.json")))
        else:
            raise EvalkitError(f"results path not found: {p}")
    if not files:
        raise EvalkitError(f"no results.json under {', '.join(map(str, paths))}; run `evalkit fit` first")
    latest: dict[tuple[str, str], tuple[str, Run]] = {}
    for file in files:
        try:
            result = json.loads(file.read_text())
            key = (result["task"], result["model"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise EvalkitError(f"{file} is not an evalkit results.json") from None
        stamp = result.get("provenance", {}).get("created", "") + file.parent.name
        if key not in latest or stamp > latest[key][0]:
            latest[key] = (stamp, Run(result, file.parent))
    return [run for _, run in sorted(latest.values(), key=lambda item: (item[1].task, item[1].model))]


def columns(runs: list[Run], metric: str) -> list[tuple[str, str]]:
    """The (task, split) pairs that report ``metric``, in first-seen order."""
    found: list[tuple[str, str]] = []
    for run in runs:
        for split, metrics in run.data["metrics"].items():
            if metric in metrics and (run.task, split) not in found:
                found.append((run.task, split))
    return found


def _cell(value: dict[str, Any], best: bool, not_significant: bool) -> str:
    text = f"{value['mean']:.3f} ± {value['std']:.3f}"
    if best:
        text = f"**{text}**"
    if "ci_low" in value:
        text += f" [{value['ci_low']:.3f}, {value['ci_high']:.3f}]"
    return text + (f" {NOT_SIGNIFICANT}" if not_significant else "")


def comparison_table(runs: list[Run], metric: str, comparison: dict[str, Any]) -> tuple[list[str], list[list[str]], list[list[Any]]]:
    """Header, display rows and numeric rows (mean, std, CI, p vs best) of the models x tasks table."""
    cols = columns(runs, metric)
    if not cols:
        reported = sorted({name for run in runs for values in run.data["metrics"].values() for name in values})
        raise EvalkitError(f"no results report the metric '{metric}'; pass --metric with one they report: "
                           f"{', '.join(reported)}")
    models = sorted({run.model for run in runs})
    cell = {(run.model, run.task, s): m[metric] for run in runs for s, m in run.data["metrics"].items() if metric in m}
    header = ["model"] + [f"{task}/{split}" for task, split in cols]
    shown, numeric = [], []
    for model in models:
        row, nums = [model], [model]
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
    return "–" if value is None else f"{value:.{digits}f}"


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
    by_key = {(run.task, run.model): run for run in runs}
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
    if "note" in friedman:
        return Section(f"Friedman test: {friedman['note']}")
    ranks = ", ".join(f"{m} {r:.2f}" for m, r in sorted(friedman["average_ranks"].items(), key=lambda kv: kv[1]))
    return Section(f"Friedman test over {friedman['n_blocks']} task/split columns and {friedman['k']} models: "
                   f"chi² = {friedman['statistic']:.3f}, p = {_fmt_p(friedman['p_value'])}; average ranks (1 = best): "
                   f"{ranks}; Nemenyi critical difference {friedman['critical_difference']:.3f} at alpha "
                   f"{friedman['alpha']}.")


def _representation_section(runs: list[Run]) -> Section | None:
    rows, sources = [], []
    for run in runs:
        for split, values in (run.data.get("representation") or {}).items():
            rows.append([run.model, f"{run.task}/{split}", *(_fmt(values.get(key), digits)
                                                              for key, digits in (("rankme", 1), ("odcorr", 3),
                                                                                  ("alpha_req", 3)))])
            sources.append([run])
    if not rows:
        return None
    return Section("Representation metrics of the cached embeddings (label-free)",
                   ["model", "task/split", "RankMe", "ODCorr", "α-ReQ"], rows, sources)


def _label_efficiency_section(runs: list[Run]) -> Section | None:
    rows, sources = [], []
    for run in runs:
        section = run.data.get("label_efficiency")
        if not section:
            continue
        for head, per_split in section["auc"].items():
            for split, by_kind in per_split.items():
                rows.append([run.model, f"{run.task}/{split}", head,
                             *(f"{by_kind[kind]:.3f}" if kind in by_kind else "–" for kind in ("shots", "fraction"))])
                sources.append([run])
    if not rows:
        return None
    return Section("Label efficiency: normalised area under balanced accuracy vs log(labels) (the curve's mean level)",
                   ["model", "task/split", "head", "k-shot", "fraction"], rows, sources)


def report_sections(runs: list[Run], comparison: dict[str, Any], stats: StatsConfig) -> list[Section]:
    """Everything after the main table, in the order the report shows it."""
    sections = (_pairwise_section(runs, comparison, stats), _friedman_section(comparison),
                _representation_section(runs), _label_efficiency_section(runs))
    return [section for section in sections if section is not None]


def write_report(paths: list[str | Path], output_dir: str | Path, metric: str = "balanced_accuracy",
                 stats: StatsConfig | None = None, plots: bool = True, html: bool = False,
                 log: Callable[[str], None] = lambda _: None) -> str:
    """Write report.md, report.csv, comparison.json (and the plots, and report.html) to ``output_dir``;
    returns the Markdown."""
    from evalkit.report.compare import compare_runs

    stats = stats or StatsConfig()
    runs = load_results(paths)
    comparison = compare_runs(runs, metric, stats)
    header, shown, numeric = comparison_table(runs, metric, comparison)
    sections = report_sections(runs, comparison, stats)
    caption = (f"{metric}: mean ± std over runs [{stats.confidence:.0%} bootstrap CI]; best in bold; "
               f"{NOT_SIGNIFICANT} = not significantly different from the best (paired bootstrap, alpha "
               f"{stats.alpha})")
    markdown = f"{caption}\n\n" + to_markdown(header, shown) + "".join(section.markdown() for section in sections)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = ["report.md", "report.csv", "comparison.json"]
    plot_files: list[Path] = []
    if plots:
        from evalkit.report.plots import write_plots

        plot_files = write_plots(runs, metric, comparison, out)
        comparison["plots"] = [str(p) for p in plot_files]
        markdown += "\nPlots: " + ", ".join(p.name for p in plot_files) + "\n"
        written.append(f"{len(plot_files)} plots")
    (out / "report.md").write_text(markdown)
    (out / "report.csv").write_text(to_csv(header, numeric))
    (out / "comparison.json").write_text(json.dumps(comparison, indent=2))
    if html:
        from evalkit.report.html import render_html

        (out / "report.html").write_text(render_html(runs, metric, caption, header, shown, sections, plot_files,
                                                     stats, inputs=[str(p) for p in paths]))
        written.append("report.html")
    log(f"wrote to {out}: " + ", ".join(written))
    return markdown
