"""``report.html``: the report as one self-contained page that opens anywhere, offline.

Everything is inline: the style sheet, the plots (PNG as base64 data URIs), no scripts and no
external fonts, so the file can be attached to a CI run or mailed and still show everything.
Every number links to the provenance of the run it comes from (the results.json it was read
from, when and with which code, configuration, caches and packages it was made), and each
cell of the main table carries the per-seed values in its tooltip.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
from html import escape
from pathlib import Path
from typing import Any

from evalkit import __version__
from evalkit.report.plots import plot_caption
from evalkit.report.runs import Run
from evalkit.report.tables import Section
from evalkit.stats.config import StatsConfig

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 2rem auto; max-width: 1200px; padding: 0 1.5rem; color: #1d2327; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem;
     border-bottom: 1px solid #d0d7de; padding-bottom: 0.3rem; } h3 { font-size: 1rem; margin-bottom: 0.3rem; }
.meta { color: #57606a; font-size: 0.9rem; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f5f7; } td.num { text-align: right; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
td.best { background: #e6f4ea; } .ci { color: #57606a; font-size: 0.8rem; } .ns { color: #9a6700; }
a { color: #0969da; text-decoration: none; } a:hover { text-decoration: underline; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: 0.85rem; margin-top: 0.3rem; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.15rem 1rem; font-size: 0.85rem; margin: 0; }
dt { color: #57606a; } dd { margin: 0; word-break: break-all; }
section.run { border: 1px solid #d0d7de; border-radius: 6px; padding: 0.6rem 1rem; margin: 0.8rem 0; }
section.run:target { border-color: #0969da; box-shadow: 0 0 0 2px #b6d5fb; }
details pre { font-size: 0.75rem; background: #f6f8fa; padding: 0.6rem; overflow-x: auto; }
"""


def _path(path: Path) -> str:
    """A path relative to the working directory when it is below it (as the user typed it)."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _anchor(runs: list[Run], run: Run) -> str:
    return f"run-{runs.index(run) + 1}"


def _source_links(runs: list[Run], sources: list[Run]) -> str:
    return ", ".join(f'<a href="#{_anchor(runs, run)}">run {runs.index(run) + 1}</a>' for run in sources)


_NUMBER = re.compile(r"^([-+<–]?\s*[\d.]|[-+]?(nan|inf)\b|n/a$)")  # n/a, nan, inf: a number's place


def _td(text: str) -> str:
    """A body cell of a section table; numbers are right-aligned."""
    return f'<td class="num">{escape(text)}</td>' if _NUMBER.match(text) else f"<td>{escape(text)}</td>"


def _table(header: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _main_cell(text: str) -> str:
    """A Markdown cell of the main table (``**mean ± std** [low, high] ≈``) as HTML."""
    body = escape(text)
    body = re.sub(r"\[(.+?)\]", r'<span class="ci">[\1]</span>', body)
    body = body.replace(" ≈", ' <span class="ns" title="not significantly different from the best">≈</span>')
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", body)


def _main_table(runs: list[Run], metric: str, header: list[str], shown: list[list[str]]) -> str:
    by_key = {(run.label, run.task): run for run in runs}
    rows = []
    for row in shown:
        model, cells = row[0], [f"<td>{escape(row[0])}</td>"]
        for column, text in zip(header[1:], row[1:]):
            task, split = column.rsplit("/", 1)
            run = by_key.get((model, task))
            if run is None or text == "–":
                cells.append('<td class="num">–</td>')
                continue
            value = run.data["metrics"][split][metric]
            seeds = ", ".join(f"{v:.4f}" for v in value.get("runs", []))
            tooltip = (f"{len(value.get('runs', []))} runs: {seeds}; protocol {run.data.get('protocol', '?')}; "
                       f"{_path(run.run_dir / 'results.json')}")
            best = "num best" if "**" in text else "num"
            cells.append(f'<td class="{best}" title="{escape(tooltip)}">{_main_cell(text)} '
                         f'<a href="#{_anchor(runs, run)}" title="provenance">↗</a></td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return _table(header, rows)


def _section(runs: list[Run], section: Section) -> str:
    if not section.header:
        return f"<p>{escape(section.intro)}</p>"
    rows = []
    for row, sources in zip(section.rows, section.sources or [[]] * len(section.rows)):
        cells = "".join(map(_td, row))
        rows.append(f"<tr>{cells}<td>{_source_links(runs, sources)}</td></tr>")
    return f"<p>{escape(section.intro)}:</p>" + _table(section.header + ["from"], rows)


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = escape(caption)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption} <code>{escape(path.name)}</code></figcaption></figure>")


def _metric_rows(run: Run) -> list[str]:
    rows = []
    for split, metrics in run.data["metrics"].items():
        for name, value in metrics.items():
            if not isinstance(value, dict) or "mean" not in value:
                continue
            ci = (f"[{value['ci_low']:.4f}, {value['ci_high']:.4f}]" if "ci_low" in value else "–")
            seeds = ", ".join(f"{v:.4f}" for v in value.get("runs", []))
            better = {True: "higher", False: "lower", None: "–"}[run.spec(name).higher_is_better]
            rows.append(f"<tr><td>{escape(split)}</td><td>{escape(name)}</td><td>{better}</td>"
                        + "".join(map(_td, (f"{value['mean']:.4f}", f"{value.get('std', 0.0):.4f}", ci, seeds)))
                        + "</tr>")
    return rows


def _provenance(runs: list[Run], run: Run) -> str:
    prov: dict[str, Any] = run.data.get("provenance") or {}
    facts = {
        "results.json": _path(run.run_dir / "results.json"),
        "evaluation": f"{run.evaluation}, protocol {run.protocol}",
        "runs (seeds)": run.data.get("n_runs", "–"),
        "created": prov.get("created", "–"),
        "evalkit": f"{prov.get('evalkit_version', '–')} (git {prov.get('git_commit', 'unknown')})",
        "model fingerprint": (f"{run.fingerprint} (from the {prov.get('fingerprint_source', '?')})" if run.fingerprint
                              else "none (bring-your-own embeddings)"),
        "embedding caches": ", ".join(f"{split}: {path}" for split, path in (prov.get("cache_files") or {}).items())
        or ", ".join(prov.get("cache_keys", [])) or "–",
        "settings": json.dumps(run.data.get("settings") or {}, sort_keys=True),
        "packages": ", ".join(f"{k} {v}" for k, v in (prov.get("packages") or {}).items()) or "–",
        "timing (s)": ", ".join(f"{k} {v:.1f}" for k, v in (run.data.get("timing") or {}).items()
                                if isinstance(v, (int, float))) or "–",
        "older runs left out": ", ".join(_path(path) for path in run.superseded) or "none",
    }
    facts_html = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in facts.items())
    config_file = run.run_dir / "config.yaml"
    config = config_file.read_text() if config_file.is_file() else "no config.yaml beside results.json"
    # figures the run wrote beside its results.json (segmentation overlays, training curves)
    figures = "".join(_figure(path, f"{run.label} on {run.task}: {path.stem.replace('_', ' ')}")
                      for path in sorted(run.run_dir.glob("*.png")))
    return (f'<section class="run" id="{_anchor(runs, run)}"><h3>run {runs.index(run) + 1}: '
            f"{escape(run.label)} on {escape(run.task)}</h3><dl>{facts_html}</dl>"
            + _table(["split", "metric", "better", "mean", "std", "CI", "per run"], _metric_rows(run)) + figures
            + f"<details><summary>full configuration (config.yaml)</summary><pre>{escape(config)}</pre></details>"
            "</section>")


def render_html(runs: list[Run], metric: str, caption: str, header: list[str], shown: list[list[str]],
                sections: list[Section], plots: list[Path], stats: StatsConfig, inputs: list[str]) -> str:
    """The whole page; ``header``/``shown`` are the main table of :func:`~evalkit.report.tables.comparison_table`."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    tasks = sorted({run.task for run in runs})
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>evalkit report: {escape(metric)} on {escape(', '.join(tasks))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>evalkit report: {escape(metric.replace('_', ' '))}</h1>",
        f'<p class="meta">{len({r.label for r in runs})} models × {len(header) - 1} task/split columns from '
        f"{len(runs)} runs · generated {now} by evalkit {escape(__version__)} from "
        f"{escape(', '.join(inputs))} · resampling: {stats.n_resamples} bootstrap resamples, seed {stats.seed}</p>",
        "<h2>Comparison</h2>",
        f"<p>{escape(caption)}. Hover a cell for its per-seed values; ↗ leads to the run it comes from.</p>",
        _main_table(runs, metric, header, shown),
        *(_section(runs, section) for section in sections),
    ]
    if plots:
        parts += ["<h2>Plots</h2>", *(_figure(path, plot_caption(path, metric)) for path in plots)]
    parts += ["<h2>Provenance</h2>",
              "<p>Where every number above comes from: one entry per results.json.</p>",
              *(_provenance(runs, run) for run in runs), "</body></html>"]
    return "\n".join(parts) + "\n"
