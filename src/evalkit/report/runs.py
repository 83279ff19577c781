"""The results model that ``report``, ``regress`` and the comparison read: one :class:`Run` per results.json.

Only schema 2 is read. A run is identified by (task, evaluation, protocol, model fingerprint,
embedding precision), never by its display name: two checkpoints published under one name are two
models, and one model fitted under two protocols, or embedded in fp32 and in bf16, gives two results. Of several runs with one identity the newest
is kept and the older ones are recorded on it, so that a report can say what it left out.
A metric's direction comes from the run's ``metric_info`` (what ``fit`` recorded beside the
number), else from :data:`evalkit.metrics.spec.METRICS`; no reader guesses it from a name.
Each file is checked once at load (:func:`check_record`): a field of the wrong JSON type is refused
in one line there, so that the readers never meet it; a NaN or ±inf number is a result, and the
readers show it and leave it out of rankings and judgements (:func:`non_finite`).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from evalkit.errors import EvalkitError
from evalkit.metrics.spec import METRICS, MetricSpec

SCHEMA_VERSION = 2
SUMMARY_NUMBERS = ("mean", "std", "ci_low", "ci_high")  # the numbers of one metric's summary
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
    def precision(self) -> str | None:
        """The embedding precision (``fp32``, ``bf16``, ``fp16``); None where the cache did not record it."""
        return (self.data.get("embedding") or {}).get("precision")

    @property
    def preprocessing(self) -> dict[str, Any] | None:
        """The transform the embeddings were made with, as their cache recorded it (None when not recorded)."""
        return (self.data.get("embedding") or {}).get("preprocessing")

    @property
    def key(self) -> tuple[str, str, str, str, str | None]:
        return self.task, self.evaluation, self.protocol, self.identity, self.precision

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


def non_finite(value: dict[str, Any]) -> list[str]:
    """Which numbers of a metric summary (``mean``, ``std``, ``ci_low``, ``ci_high``) are NaN or ±inf.

    A summary with any of them is shown as it is, marked non-finite, and never ranked, tested or
    judged: a NaN compares false with everything, so it would otherwise pass or win silently.
    """
    return [key for key in SUMMARY_NUMBERS if key in value and not math.isfinite(value[key])]


# The shape of a schema-2 record: every field a reader of this package uses, with its JSON type.
# Checked once at load, so that a malformed file is refused in one line naming the bad field
# instead of failing as a traceback deep inside a renderer. Keys not listed are not read.


@dataclass(frozen=True)
class _Shape:
    """What a reader expects at one place of a results.json.

    ``fields`` are the known keys of an object (checked where present), ``required`` those it must
    have, ``together`` pairs of keys of which neither may come alone, and ``each`` the shape of every
    value of an object of named entries (splits, metrics) or of every item of a list.
    """

    expected: str
    test: Callable[[Any], bool]
    nullable: bool = False
    fields: dict[str, _Shape] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    together: tuple[tuple[str, str], ...] = ()
    each: _Shape | None = None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_NUMBER = _Shape("a number", _is_number)
_TEXT = _Shape("a string", lambda value: isinstance(value, str))
_BOOL = _Shape("a boolean", lambda value: isinstance(value, bool))


def _nullable(shape: _Shape) -> _Shape:
    return _Shape(f"{shape.expected} or null", shape.test, True, shape.fields, shape.required, shape.together,
                  shape.each)


def _object(fields: dict[str, _Shape], required: tuple[str, ...] = (), expected: str = "an object",
            together: tuple[tuple[str, str], ...] = ()) -> _Shape:
    return _Shape(expected, lambda value: isinstance(value, dict), fields=fields, required=required,
                  together=together)


def _entries(each: _Shape, of: str) -> _Shape:
    """An object whose every value has the shape ``each`` (splits, metrics, heads)."""
    return _Shape(f"an object of {of}", lambda value: isinstance(value, dict), each=each)


def _list(each: _Shape, of: str) -> _Shape:
    return _Shape(f"a list of {of}", lambda value: isinstance(value, list), each=each)


_SUMMARY = _object({**{key: _NUMBER for key in SUMMARY_NUMBERS}, "runs": _list(_NUMBER, "numbers")},
                   required=("mean", "std"), expected="an object with mean and std",
                   together=(("ci_low", "ci_high"),))
_METRIC_INFO = _object({"higher_is_better": _nullable(_BOOL), "lower": _nullable(_NUMBER),
                        "upper": _nullable(_NUMBER), "computed_by": _TEXT, "description": _TEXT})
_CURVE_POINT = _object({key: _NUMBER for key in ("value", "mean", "ci_low", "ci_high")},
                       required=("value", "mean", "ci_low", "ci_high"))
_LABEL_EFFICIENCY = _object(
    {"metric": _TEXT, "heads": _list(_TEXT, "strings"),
     "curves": _entries(_entries(_entries(_list(_CURVE_POINT, "points"), "budget kinds"), "splits"), "heads"),
     "auc": _entries(_entries(_entries(_NUMBER, "budget kinds"), "splits"), "heads")},
    required=("metric", "heads", "curves", "auc"))
_RECORD = _object({
    "task": _TEXT, "evaluation": _TEXT, "protocol": _TEXT, "model": _TEXT, "model_fingerprint": _nullable(_TEXT),
    "primary_metric": _TEXT,
    "metrics": _entries(_entries(_SUMMARY, "metrics"), "splits"),
    "metric_info": _nullable(_entries(_METRIC_INFO, "metrics")),
    # null is an undefined value (RankMe of a rank-1 matrix): shown as n/a, never a failure
    "representation": _nullable(_entries(_entries(_nullable(_NUMBER), "metrics"), "splits")),
    "curves": _nullable(_object({"label_efficiency": _nullable(_LABEL_EFFICIENCY)})),
    "timing": _nullable(_object({})),
    "embedding": _nullable(_object({"precision": _nullable(_TEXT), "preprocessing": _nullable(_object({})),
                                    "reused": _nullable(_BOOL), "cost": _nullable(_entries(_object({}), "splits"))})),
    "provenance": _nullable(_object({"cache_files": _nullable(_entries(_TEXT, "paths")),
                                     "cache_keys": _nullable(_list(_TEXT, "strings")),
                                     "packages": _nullable(_entries(_TEXT, "versions"))})),
}, required=_REQUIRED, expected="a JSON object")


def _found(value: Any) -> str:
    """``value`` in a few words, for a message."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, str):
        text = json.dumps(value if len(value) <= 40 else value[:37] + "...")
        return f"the string {text}"
    if _is_number(value):
        return f"the number {value}"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    name = key if re.fullmatch(r"[\w-]+", key) else json.dumps(key)
    return f"{path}.{name}" if path else name


def _mismatch(value: Any, shape: _Shape, path: str) -> str | None:
    """Where and how ``value`` first departs from ``shape`` (``path`` is where it sits), or ``None``."""
    where = path or "the top level"
    if value is None and shape.nullable:
        return None
    if not shape.test(value):
        return f"{where} should be {shape.expected}, found {_found(value)}"
    if isinstance(value, dict):
        missing = [key for key in shape.required if key not in value]
        missing += [b for pair in shape.together for a, b in (pair, pair[::-1]) if a in value and b not in value]
        if missing:
            return f"{path or 'it'} lacks {', '.join(missing)}"
        children = [(key, value[key], inner) for key, inner in shape.fields.items() if key in value]
        children += [(key, item, shape.each) for key, item in value.items()] if shape.each else []
    else:
        children = [(i, item, shape.each) for i, item in enumerate(value)] if shape.each else []
    for key, item, inner in children:
        problem = _mismatch(item, inner, _child(path, key))
        if problem:
            return problem
    return None


def check_record(record: Any, file: Path) -> dict[str, Any]:
    """``record`` (the parsed ``file``) when it is a schema-2 results.json with every field a reader uses of the
    right JSON type; otherwise one line naming the file, the field's path, what was expected and what was found.

    NaN and ±inf are numbers here: they are a result, shown and flagged by the readers (:func:`non_finite`).
    """
    if isinstance(record, dict):
        version = record.get("schema_version", 1)  # schema 1 had no version field
        if version != SCHEMA_VERSION:
            raise EvalkitError(f"{file} is results.json schema {version!r}; this evalkit reads schema "
                               f"{SCHEMA_VERSION}: regenerate it with `evalkit fit` (same task and model configs)")
    problem = _mismatch(record, _RECORD, "")
    if problem:
        raise EvalkitError(f"{file} is not an evalkit results.json: {problem}; regenerate it with `evalkit fit`")
    return record


def _read(file: Path) -> dict[str, Any]:
    """A schema-2 results.json of the shape every reader expects, or one line that says how to get one."""
    try:
        record = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EvalkitError(f"{file} is not an evalkit results.json (not JSON); point at a results.json written by "
                           "`evalkit fit`, or a folder of them") from None
    return check_record(record, file)


def _files(paths: list[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            # Hidden folders are fits still writing (or killed while writing): not runs yet.
            files.extend(sorted(f for f in p.rglob("results.json")
                                if not any(part.startswith(".") for part in f.relative_to(p).parts)))
        else:
            raise EvalkitError(f"results path not found: {p}")
    if not files:
        raise EvalkitError(f"no results.json under {', '.join(map(str, paths))}; run `evalkit fit` first")
    return files


def _assign_labels(runs: list[Run]) -> None:
    """Display names, made unambiguous: ``name [fingerprint]`` where two models share a name, ``name bf16``
    where one model was embedded in several precisions, and ``name (protocol)`` on every row when some
    task was evaluated under several protocols."""
    identities: dict[str, set[str]] = defaultdict(set)
    precisions: dict[str, set[str | None]] = defaultdict(set)
    setups: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for run in runs:
        identities[run.model].add(run.identity)
        precisions[run.identity].add(run.precision)
        setups[run.task].add((run.evaluation, run.protocol))
    several = any(len(found) > 1 for found in setups.values())
    every = set().union(*setups.values())
    protocol_says_all = len({protocol for _, protocol in every}) == len(every)
    for run in runs:
        run.label = run.model
        if len(identities[run.model]) > 1:
            run.label += f" [{short_fingerprint(run, 8)}]"
        if len(precisions[run.identity]) > 1:
            run.label += f" {run.precision or 'precision not recorded'}"
        if several:
            run.label += f" ({run.protocol})" if protocol_says_all else f" ({run.evaluation} {run.protocol})"


def load_results(paths: list[str | Path]) -> list[Run]:
    """Every results.json under ``paths`` (files or folders), the newest per (task, evaluation, protocol,
    model fingerprint, precision), sorted by task and label."""
    by_key: dict[tuple[str, str, str, str, str | None], list[tuple[str, Run]]] = defaultdict(list)
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
