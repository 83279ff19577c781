"""What a command line says before jsonargparse parses it.

jsonargparse builds its parser before it reads the config files, yet the parser of ``predict``,
``fit`` and ``predict_fit`` depends on the evaluation the configs choose (its option groups), and
registry names (``class_path: timm``) must become class paths first. Both are read here from the
config files and flags of ``argv``, the way jsonargparse will read them: later ones win.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import yaml

from evalkit.data import DATASETS
from evalkit.errors import EvalkitError
from evalkit.evaluations import get_evaluation
from evalkit.models import MODELS

if TYPE_CHECKING:
    from evalkit.evaluations.base import Evaluation


def _options(argv: list[str]) -> Iterator[tuple[str, int, str, bool]]:
    """``(name, position of its value, value, given as name=value)`` of every ``--option`` of ``argv`` that has a value."""
    for i, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        name, sep, value = arg.partition("=")
        if sep:
            yield name, i, value, True
        elif i + 1 < len(argv):
            yield name, i + 1, argv[i + 1], False


def _config_content(value: str) -> dict[str, Any] | None:
    """The mapping in the YAML file a ``--config`` value names; None when it names no readable YAML mapping."""
    if not Path(value).is_file():
        return None
    try:
        content = yaml.safe_load(Path(value).read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        return None
    return content if isinstance(content, dict) else None


def _config_values(argv: list[str]) -> dict[str, Any]:
    """What the config files and flags of ``argv`` say about the choice of evaluation, later ones winning:
    ``evaluation``, ``task.evaluations`` and the dataset's ``class_path``."""
    found: dict[str, Any] = {}
    for name, _, value, _ in _options(argv):
        content = _config_content(value) if name == "--config" else None
        if content is not None:
            task = content.get("task") if isinstance(content.get("task"), dict) else {}
            dataset = task.get("dataset")
            for key, item in (("evaluation", content.get("evaluation")), ("task.evaluations", task.get("evaluations")),
                              ("task.dataset", dataset.get("class_path") if isinstance(dataset, dict) else dataset)):
                if item is not None:
                    found[key] = item
        elif name in ("--evaluation", "--task.evaluations", "--task.dataset", "--task.dataset.class_path"):
            found[name[2:].removesuffix(".class_path")] = yaml.safe_load(value) if name == "--task.evaluations" else value
    return found


def chosen_evaluation(argv: list[str]) -> type[Evaluation]:
    """The evaluation a run of ``argv`` uses: ``--evaluation`` if given (one of the task's), else the first of
    the task's ``evaluations``, else the first its dataset supports; linear_probe when none can be told."""
    found = _config_values(argv)
    names = found.get("task.evaluations")
    if not names and isinstance(found.get("task.dataset"), str):
        dataset = _dataset_class(found["task.dataset"])
        names = list(getattr(dataset, "evaluations", ())) if dataset is not None else None
    names = [names] if isinstance(names, str) else list(names or ["linear_probe"])
    chosen = found.get("evaluation") or names[0]
    if chosen not in names:
        raise EvalkitError(f"--evaluation {chosen}: this task runs {', '.join(names)}; pick one of them")
    return get_evaluation(chosen)


_REGISTRY_KEYS = {"model": MODELS, "task.dataset": DATASETS}  # where a registry name may stand for a class_path


def _dotted(registry: Any, name: Any) -> Any:
    """``name``'s dotted class path when it is a registry name (``timm``), else ``name`` unchanged."""
    if isinstance(name, str) and name in registry:
        cls = registry.get(name)
        return f"{cls.__module__}.{cls.__name__}"
    return name


def with_class_paths(argv: list[str]) -> list[str]:
    """``argv`` with registry names (``class_path: timm``, ``--task.dataset image_folder``) replaced by their
    dotted class paths: the registries are the front door for configs and the command line alike, and
    jsonargparse then sees only class paths. A config file that names one is passed on as its YAML text."""
    out = list(argv)
    for name, position, value, inline in _options(argv):
        prefix = f"{name}=" if inline else ""
        for key, registry in _REGISTRY_KEYS.items():
            if name in (f"--{key}", f"--{key}.class_path"):
                out[position] = prefix + str(_dotted(registry, value))
        content = _config_content(value) if name == "--config" else None
        if content is not None and _rename_in_config(content):
            out[position] = prefix + yaml.safe_dump(content, sort_keys=False)
    return out


def _rename_in_config(content: dict[str, Any]) -> bool:
    """Replace registry names by class paths in a loaded config; True if any was replaced."""
    changed = False
    for key, registry in _REGISTRY_KEYS.items():
        parent, node = content, None
        *path, last = key.split(".")
        for part in path:
            parent = parent.get(part) if isinstance(parent, dict) else None
        node = parent.get(last) if isinstance(parent, dict) else None
        if isinstance(node, str) and node in registry:
            parent[last] = {"class_path": _dotted(registry, node)}
            changed = True
        elif isinstance(node, dict) and node.get("class_path") in registry:
            node["class_path"] = _dotted(registry, node["class_path"])
            changed = True
    return changed


def _dataset_class(class_path: str) -> type | None:
    """The dataset class a config names by dotted path, class name or registry name."""
    if class_path in DATASETS:
        return DATASETS.get(class_path)
    module, _, name = class_path.rpartition(".")
    for _, cls in DATASETS.items():
        if cls.__name__ == name or cls.__name__ == class_path:
            return cls
    try:
        return getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError):
        return None


def model_config_positions(argv: list[str]) -> list[int]:
    """Positions in ``argv`` of the ``--config`` values whose file sets ``model``."""
    return [position for name, position, value, _ in _options(argv)
            if name == "--config" and "model" in (_config_content(value) or {})]


def without_configs(argv: list[str], drop: list[int]) -> list[str]:
    """``argv`` without the ``--config`` options whose value positions are in ``drop``."""
    skip: set[int] = set()
    for pos in drop:
        skip.add(pos)
        if argv[pos] != "--config" and not argv[pos].startswith("--config="):
            skip.add(pos - 1)
    return [a for i, a in enumerate(argv) if i not in skip]
