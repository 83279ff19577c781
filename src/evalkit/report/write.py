"""``evalkit report``: load the runs, compare them, and write the tables, plots and page.

The orchestration lives here, apart from the results model (:mod:`evalkit.report.runs`) and the
renderers, so that the modules it calls never need to import it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from evalkit.report.compare import compare_runs
from evalkit.report.html import render_html
from evalkit.report.plots import write_plots
from evalkit.report.runs import load_results, metric_spec
from evalkit.report.tables import caption, comparison_table, report_sections, to_csv, to_markdown
from evalkit.stats.config import StatsConfig


def write_report(paths: list[str | Path], output_dir: str | Path, metric: str | None = None,
                 stats: StatsConfig | None = None, plots: bool = True, html: bool = False,
                 log: Callable[[str], None] = lambda _: None) -> str:
    """Write report.md, report.csv, comparison.json (and the plots, and report.html) to ``output_dir``;
    returns the Markdown. ``metric`` defaults to the runs' primary metric (the first run's, when they differ)."""
    stats = stats or StatsConfig()
    runs = load_results(paths)
    metric = metric or runs[0].data["primary_metric"]
    comparison = compare_runs(runs, metric, stats)
    header, shown, numeric = comparison_table(runs, metric, comparison)
    sections = report_sections(runs, comparison, stats)
    title = caption(runs, metric_spec(runs, metric), stats)
    markdown = f"{title}\n\n" + to_markdown(header, shown) + "".join(section.markdown() for section in sections)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = ["report.md", "report.csv", "comparison.json"]
    plot_files: list[Path] = []
    if plots:
        plot_files = write_plots(runs, metric, comparison, out)
        comparison["plots"] = [str(p) for p in plot_files]
        markdown += "\nPlots: " + ", ".join(p.name for p in plot_files) + "\n"
        written.append(f"{len(plot_files)} plots")
    (out / "report.md").write_text(markdown)
    (out / "report.csv").write_text(to_csv(header, numeric))
    (out / "comparison.json").write_text(json.dumps(comparison, indent=2))
    if html:
        (out / "report.html").write_text(render_html(runs, metric, title, header, shown, sections, plot_files,
                                                     stats, inputs=[str(p) for p in paths]))
        written.append("report.html")
    log(f"wrote to {out}: " + ", ".join(written))
    return markdown
