"""``evalkit models list``: the model adapters, then every preset with its width, patch size, parameter count,
pooling, upstream repository and where its weights are looked for; as a 120-column table, CSV or Markdown."""

from __future__ import annotations

import csv
import io
import re
import textwrap
from pathlib import Path

from evalkit.models.presets import PRESETS, RANDOM_SUFFIX
from evalkit.models.registry import MODELS
from evalkit.models.weights import weight_locations


def _wrap_paths(text: str, width: int, indent: str) -> list[str]:
    """``text`` on lines of at most ``width`` columns, broken after a ``/`` or ``, `` (never inside a name)."""
    lines, line = [], indent
    for piece in re.findall(r"[^/ ]+/?,? ?|/", text):
        if len(line) + len(piece.rstrip()) > width and line.strip():
            lines.append(line.rstrip())
            line = " " * len(indent)
        line += piece
    return lines + [line.rstrip()]


def _grouped(paths: list[str]) -> list[str]:
    """``paths`` with the files of one folder in braces (``DIR/{a,b}``) and the home folder as ``~``."""
    home = str(Path.home())
    folders: dict[str, list[str]] = {}
    for path in paths:
        folder, _, name = path.rpartition("/")
        folders.setdefault(folder, []).append(name)
    shown = [f"{folder}/{names[0]}" if len(names) == 1 else f"{folder}/{{{','.join(names)}}}"
             for folder, names in folders.items()]
    return ["~" + p[len(home):] if home != "/" and p.startswith(home + "/") else p for p in shown]


def models_listing(fmt: str) -> str:
    """The adapters, then every preset: in a 120-column table, or as CSV or Markdown."""
    adapters = [(name, f"evalkit.models.{cls.__name__}", " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split()))
                for name, cls in MODELS.items()]
    presets = [{"name": name, "dim": str(p.embed_dim), "patch": str(p.patch_size),
                "params": f"{p.num_params / 1e6:.1f}M", "pooling": p.pooling, "upstream": p.hf_repo or "-",
                "gated": "yes" if p.gated else "no", "weights": weight_locations(p)} for name, p in PRESETS.items()]
    for row in presets:  # where the table is read, not parsed: a folder once, its files in braces, ~ for home
        row["short"] = _grouped(row["weights"]) if fmt != "csv" else row["weights"]
    note = (f"Every preset also exists as <name>{RANDOM_SUFFIX}: the same architecture and preprocessing, randomly "
            "initialised (a control). Names match in any case and through aliases (eva's pathology/... names). "
            "weights: where evalkit looks when the model's weights (--model.weights FILE_OR_DIR) are not given; "
            "it never downloads.")
    columns = ["name", "dim", "patch", "params", "pooling", "upstream", "gated"]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["kind", *columns, "weights", "class_path", "description"])
        for name, path, doc in adapters:
            writer.writerow(["adapter", name, *[""] * (len(columns) - 1), "", path, doc])
        for row in presets:
            writer.writerow(["preset", *[row[c] for c in columns], "; ".join(row["weights"]), "", ""])
        return out.getvalue()
    if fmt == "markdown":
        lines = ["| adapter | class_path | description |", "|---|---|---|"]
        lines += [f"| `{name}` | `{path}` | {doc} |" for name, path, doc in adapters]
        lines += ["", "| preset | dim | patch | params | pooling | upstream | gated | weights looked for |",
                  "|---|---:|---:|---:|---|---|---|---|"]
        lines += [f"| `{r['name']}` | {r['dim']} | {r['patch']} | {r['params']} | {r['pooling']} | {r['upstream']} | "
                  f"{r['gated']} | {'<br>'.join(f'`{w}`' for w in r['short'])} |" for r in presets]
        return "\n".join(lines + ["", note]) + "\n"
    width = 120
    lines = ["Model adapters (class_path in a model config, or --model NAME):"]
    for name, path, doc in adapters:
        lines += textwrap.wrap(doc, width, initial_indent=f"  {name:12s} {path:36s} ", subsequent_indent=" " * 52)
    lines += ["", "Model presets (--model NAME, or model: NAME in a config):"]
    widths = {c: max(len(c), *(len(r[c]) for r in presets)) for c in columns}
    right = {"dim", "patch", "params"}
    for row in [dict(zip(columns, columns)), *presets]:
        cells = [row[c].rjust(widths[c]) if c in right else row[c].ljust(widths[c]) for c in columns]
        lines.append(("  " + "  ".join(cells)).rstrip())
        if "short" in row:
            lines += _wrap_paths(", ".join(row["short"]) or "only where --model.weights points (no published "
                                 "repository to look in)", width, "      weights: ")
    lines += ["", *textwrap.wrap(note, width)]
    return "\n".join(lines) + "\n"
