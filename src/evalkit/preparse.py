"""What a command line says before jsonargparse parses it.

jsonargparse builds its parser before it reads the config files, yet the parser of ``predict``,
``fit`` and ``predict_fit`` depends on the evaluation the configs choose (its option groups), and
registry names (``class_path: timm``) and model presets (``--model uni2-h``) must become class paths
first. Both are read here from the config files and flags of ``argv``, the way jsonargparse will read
them: later ones win. So are the models of a ``predict_fit`` comparison and the flags addressed to one
of them (``--models.NAME.KEY``).
"""

from __future__ import annotations

import importlib
import json
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
PRESET_ADAPTER = "preset"  # the registry name of PresetModel, the adapter of every model preset


def _dotted(registry: Any, name: Any) -> Any:
    """``name``'s dotted class path when it is a registry name (``timm``), else ``name`` unchanged."""
    if isinstance(name, str) and name in registry:
        cls = registry.get(name)
        return f"{cls.__module__}.{cls.__name__}"
    return name


def _adapter_classes() -> set[str]:
    """The class names of the registered adapters (``TimmModel``): a class name or path names an adapter."""
    return {cls.__name__ for _, cls in MODELS.items()}


def preset_model(value: Any) -> dict[str, Any] | None:
    """The model config that a ``--model`` value or a config file's ``model: NAME`` stands for when it names a
    model preset (any case, any alias, ``<name>-random``) and no adapter (``timm``, ``TimmModel``,
    ``evalkit.models.TimmModel`` win):
    ``{class_path: PresetModel, init_args: {preset: <the preset's own name>}}``; else None."""
    from evalkit.models.presets import find_preset  # the first lookup, not the command line's import, loads them

    if not isinstance(value, str) or value in MODELS or value.rpartition(".")[2] in _adapter_classes():
        return None
    preset = find_preset(value)
    if preset is None:
        return None
    return {"class_path": _dotted(MODELS, PRESET_ADAPTER), "init_args": {"preset": preset.name}}


def with_class_paths(argv: list[str]) -> list[str]:
    """``argv`` with registry names (``class_path: timm``, ``--task.dataset image_folder``) replaced by their
    dotted class paths and preset names (``--model uni2-h``, ``model: uni2-h``) by the PresetModel config
    they stand for: the registries are the front door for configs and the command line alike, and
    jsonargparse then sees only class paths. A config file that names one is passed on as its YAML text."""
    out = list(argv)
    for name, position, value, inline in _options(argv):
        prefix = f"{name}=" if inline else ""
        preset = preset_model(value) if name == "--model" else None
        if preset is not None:  # a whole config, so that --model.weights etc. after it still apply
            out[position] = prefix + json.dumps(preset)
            continue
        for key, registry in _REGISTRY_KEYS.items():
            if name in (f"--{key}", f"--{key}.class_path"):
                out[position] = prefix + str(_dotted(registry, value))
        content = _config_content(value) if name == "--config" else None
        if content is not None and _rename_in_config(content):
            out[position] = prefix + yaml.safe_dump(content, sort_keys=False)
    return out


def _rename_in_config(content: dict[str, Any]) -> bool:
    """Replace registry names by class paths, and a preset name in ``model:`` by its config, in a loaded
    config; True if any was replaced."""
    changed = False
    preset = preset_model(content.get("model"))
    if preset is not None:
        content["model"] = preset
        changed = True
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


# ---- the models of a predict_fit comparison, and the flags addressed to one of them ----

def model_positions(argv: list[str]) -> list[int]:
    """Positions in ``argv`` of the values that each name one model: a ``--config`` file that sets ``model``,
    and a ``--model VALUE`` (a preset, registry name or class; ``--model.KEY`` flags are settings of one)."""
    return [position for name, position, value, _ in _options(argv)
            if name == "--model" or (name == "--config" and "model" in (_config_content(value) or {}))]


def without_models(argv: list[str], drop: list[int]) -> list[str]:
    """``argv`` without the ``--config FILE`` and ``--model VALUE`` options whose value positions are in ``drop``."""
    skip: set[int] = set()
    for pos in drop:
        skip.add(pos)
        if not argv[pos].startswith(("--config=", "--model=")):
            skip.add(pos - 1)
    return [a for i, a in enumerate(argv) if i not in skip]


def model_addresses(argv: list[str], position: int) -> list[str]:
    """The names that ``--models.NAME.KEY`` may use for the model at ``position``: the stem of its config file
    (``resnet50_random``), or its ``--model`` value as given and the preset's own name (``uni2-h``)."""
    from evalkit.models.presets import find_preset

    value = argv[position].partition("=")[2] if argv[position].startswith("--") else argv[position]
    if argv[position].startswith("--config=") or (position and argv[position - 1] == "--config"):
        return [Path(value).stem]
    preset = find_preset(value)
    return list(dict.fromkeys([value] + ([preset.name] if preset is not None else [])))


def split_model_flags(argv: list[str]) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """``(rest, loose, addressed)``: ``argv`` without its ``--model.KEY [VALUE]`` flags (``loose``, each as its
    tokens) and its ``--models.NAME.KEY [VALUE]`` flags (``addressed``); ``--model VALUE`` stays in ``rest``."""
    rest: list[str] = []
    loose: list[list[str]] = []
    addressed: list[list[str]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        target = loose if arg.startswith("--model.") else addressed if arg.startswith("--models.") else None
        if target is None:
            rest.append(arg)
            i += 1
            continue
        n = 1 if "=" in arg or i + 1 == len(argv) or argv[i + 1].startswith("--") else 2
        target.append(argv[i:i + n])
        i += n
    return rest, loose, addressed


def route_addressed(addressed: list[list[str]], addresses: list[list[str]]) -> list[list[str]]:
    """Per model, the ``--model.KEY [VALUE]`` flags that ``--models.NAME.KEY [VALUE]`` flags address to it
    (``addresses``: the names each model answers to, matched case-insensitively, the longest first)."""
    routed: list[list[str]] = [[] for _ in addresses]
    shown = ", ".join(dict.fromkeys(a[-1] for a in addresses))
    for tokens in addressed:
        option, sep, value = tokens[0].partition("=")
        path = option[len("--models."):]
        matches = [(len(name), i) for i, names in enumerate(addresses) for name in names
                   if path.lower().startswith(name.lower() + ".") and len(path) > len(name) + 1]
        if not matches:
            raise EvalkitError(f"{option}: no model of this comparison answers to that name; address one as "
                               f"--models.<name>.KEY with <name> one of: {shown}")
        longest = max(length for length, _ in matches)
        owners = sorted({i for length, i in matches if length == longest})
        name = path[:longest]
        if len(owners) > 1:
            raise EvalkitError(f"{option}: {len(owners)} models of this comparison answer to '{name}'; put the "
                               "setting in that model's YAML file instead")
        key = path[longest + 1:]
        routed[owners[0]] += [f"--model.{key}{sep}{value}"] if sep else [f"--model.{key}", *tokens[1:]]
    return routed
