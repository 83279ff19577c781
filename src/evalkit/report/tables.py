"""Tables from results.json files: models x tasks, mean ± std, as Markdown and CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError


def load_results(paths: list[str | Path]) -> list[dict[str, Any]]:
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
    latest: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for file in files:
        try:
            result = json.loads(file.read_text())
            key = (result["task"], result["model"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise EvalkitError(f"{file} is not an evalkit results.json") from None
        stamp = result.get("provenance", {}).get("created", "") + file.parent.name
        if key not in latest or stamp > latest[key][0]:
            latest[key] = (stamp, result)
    return [r for _, r in sorted(latest.values(), key=lambda item: (item[1]["task"], item[1]["model"]))]


def _columns(results: list[dict[str, Any]], metric: str) -> list[tuple[str, str]]:
    columns = []
    for r in results:
        for split, metrics in r["metrics"].items():
            if metric in metrics and (r["task"], split) not in columns:
                columns.append((r["task"], split))
    return columns


def comparison_table(results: list[dict[str, Any]], metric: str = "balanced_accuracy") -> tuple[list[str], list[list[str]], list[list[Any]]]:
    """Header, display rows (``mean ± std``) and numeric rows (mean, std pairs) of the models x tasks table."""
    columns = _columns(results, metric)
    if not columns:
        raise EvalkitError(f"no results report the metric '{metric}'")
    models = sorted({r["model"] for r in results})
    cell = {(r["model"], r["task"], s): m[metric] for r in results for s, m in r["metrics"].items() if metric in m}
    header = ["model"] + [f"{task}/{split}" for task, split in columns]
    shown, numeric = [], []
    for model in models:
        row, nums = [model], [model]
        for task, split in columns:
            value = cell.get((model, task, split))
            row.append(f"{value['mean']:.3f} ± {value['std']:.3f}" if value else "–")
            nums += [value["mean"], value["std"]] if value else ["", ""]
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
    writer.writerow(["model"] + [f"{c}_{stat}" for c in header[1:] for stat in ("mean", "std")])
    writer.writerows(numeric)
    return out.getvalue()


def write_report(paths: list[str | Path], output_dir: str | Path, metric: str = "balanced_accuracy") -> str:
    """Write ``report.md`` and ``report.csv`` to ``output_dir``; returns the Markdown table."""
    header, shown, numeric = comparison_table(load_results(paths), metric)
    markdown = f"{metric} (mean ± std over runs)\n\n" + to_markdown(header, shown)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown)
    (out / "report.csv").write_text(to_csv(header, numeric))
    return markdown
