"""The results model that ``report``, ``regress`` and the comparison read: one :class:`Run` per results.json.

Only schema 2 is read. A run is identified by (task, evaluation, protocol, model fingerprint),
never by its display name: two checkpoints published under one name are two models, and one
model fitted under two protocols gives two results. Of several runs with one identity the newest
is kept and the older ones are recorded on it, so that a report can say what it left out.
A metric's direction comes from the run's ``metric_info`` (what ``fit`` recorded beside the
number), else from :data:`evalkit.metrics.spec.METRICS`; no reader guesses it from a name.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.metrics.spec import METRICS, MetricSpec

SCHEMA_VERSION = 2
_REQUIRED = ("task", "evaluation", "protocol", "model", "model_fingerprint", "primary_metric", "metrics")


@dataclass(eq=False)
class Run:
    """One results.json and the folder it lives in (where predictions.h5 and config.yaml are).

    ``label`` is the run's row in tables: its display name, with the fingerprint or the protocol
    added by :func:`load_results` where the name alone would be ambiguous. ``superseded`` are the
    older results.json files of the same identity that this run replaced.
    """

    data: dict[str, Any]
    run_dir: Path
    label: str = ""
    superseded: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.label = self.label or self.model

    @property
    def task(self) -> str:
        return self.data["task"]

    @property
    def model(self) -> str:
        """The display name: for people, not an identity."""
        return self.data["model"]

    @property
    def evaluation(self) -> str:
        return self.data["evaluation"]

    @property
    def protocol(self) -> str:
        return self.data["protocol"]

    @property
    def fingerprint(self) -> str | None:
        return self.data["model_fingerprint"]

    @property
    def identity(self) -> str:
        """The model's identity: its fingerprint; bring-your-own embeddings have none, so their name stands in."""
        return self.fingerprint or f"name:{self.model}"

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.task, self.evaluation, self.protocol, self.identity

    def metric(self, split: str, name: str) -> dict[str, Any] | None:
        """``{"mean", "std", "runs", ...}`` of ``name`` on ``split``, or ``None`` when not reported."""
        return self.data["metrics"].get(split, {}).get(name)

    def reports(self, metric: str) -> bool:
        """Whether any split has ``metric`` among its metrics or representation metrics."""
        sections = [*self.data["metrics"].values(), *(self.data.get("representation") or {}).values()]
        return any(metric in values for values in sections)

    def spec(self, metric: str) -> MetricSpec:
        """What the run recorded about ``metric``, else the registry's entry, else a metric with no direction."""
        info = (self.data.get("metric_info") or {}).get(metric)
        if info is not None:
            return MetricSpec(metric, info.get("higher_is_better"), info.get("lower"), info.get("upper"),
                              info.get("computed_by", ""), info.get("description", ""))
        if metric in METRICS:
            return METRICS.get(metric)
        return MetricSpec(metric, None, None, None, "", "no metric_info recorded")


def short_fingerprint(run: Run, digits: int) -> str:
    return run.fingerprint[:digits] if run.fingerprint else "no fingerprint"


def metric_spec(runs: list[Run], metric: str) -> MetricSpec:
    """The one spec of ``metric`` that the runs reporting it agree on: a column is ranked one way only."""
    specs = {run.run_dir: run.spec(metric) for run in runs if run.reports(metric)}
    if len({spec.higher_is_better for spec in specs.values()}) > 1:
        which = ", ".join(f"{path} {spec.higher_is_better}" for path, spec in specs.items())
        raise EvalkitError(f"the runs disagree on whether higher {metric} is better ({which}); regenerate the "
                           "older ones with `evalkit fit`")
    return next(iter(specs.values()), MetricSpec(metric, None, None, None, "", "reported by no run"))


def columns(runs: list[Run], metric: str) -> list[tuple[str, str]]:
    """The (task, split) pairs that report ``metric``, in first-seen order."""
    found: list[tuple[str, str]] = []
    for run in runs:
        for split, metrics in run.data["metrics"].items():
            if metric in metrics and (run.task, split) not in found:
                found.append((run.task, split))
    return found


def _read(file: Path) -> dict[str, Any]:
    """A schema-2 results.json, or one line that says how to get one."""
    try:
        result = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EvalkitError(f"{file} is not an evalkit results.json (not JSON)") from None
    if not isinstance(result, dict):
        raise EvalkitError(f"{file} is not an evalkit results.json (not a JSON object)")
    version = result.get("schema_version", 1)  # schema 1 had no version field
    if version != SCHEMA_VERSION:
        raise EvalkitError(f"{file} is results.json schema {version}; this evalkit reads schema {SCHEMA_VERSION}: "
                           "regenerate it with `evalkit fit` (same task and model configs)")
    missing = [key for key in _REQUIRED if key not in result]
    if missing:
        raise EvalkitError(f"{file} is not an evalkit results.json: it lacks {', '.join(missing)}; regenerate it "
                           "with `evalkit fit`")
    return result


def _files(paths: list[str | Path]) -> list[Path]:
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
    return files


def _assign_labels(runs: list[Run]) -> None:
    """Display names, made unambiguous: ``name [fingerprint]`` where two models share a name, and
    ``name (protocol)`` on every row when some task was evaluated under several protocols."""
    identities: dict[str, set[str]] = defaultdict(set)
    setups: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for run in runs:
        identities[run.model].add(run.identity)
        setups[run.task].add((run.evaluation, run.protocol))
    several = any(len(found) > 1 for found in setups.values())
    every = set().union(*setups.values())
    protocol_says_all = len({protocol for _, protocol in every}) == len(every)
    for run in runs:
        run.label = run.model
        if len(identities[run.model]) > 1:
            run.label += f" [{short_fingerprint(run, 8)}]"
        if several:
            run.label += f" ({run.protocol})" if protocol_says_all else f" ({run.evaluation} {run.protocol})"


def load_results(paths: list[str | Path]) -> list[Run]:
    """Every results.json under ``paths`` (files or folders), the newest per (task, evaluation, protocol,
    model fingerprint), sorted by task and label."""
    by_key: dict[tuple[str, str, str, str], list[tuple[str, Run]]] = defaultdict(list)
    for file in _files(paths):
        run = Run(_read(file), file.parent)
        stamp = str((run.data.get("provenance") or {}).get("created", "")) + file.parent.name
        by_key[run.key].append((stamp, run))
    runs = []
    for found in by_key.values():
        found.sort(key=lambda item: item[0], reverse=True)
        newest = found[0][1]
        newest.superseded = [run.run_dir / "results.json" for _, run in found[1:]]
        runs.append(newest)
    _assign_labels(runs)
    return sorted(runs, key=lambda run: (run.task, run.label))
