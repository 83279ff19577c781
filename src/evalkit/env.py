"""Environment-variable defaults, as in eva: each one is only a default that a config key overrides.

They are read when the command line parser is built (not at import), so that ``--help``
shows the value in force.

eva's own variables (``${oc.env:...}`` in kaiko-ai/eva ``configs/vision``, and its "how to use" page) are
honoured where they mean the same thing in evalkit, and named in one warning line where they do not
(docs/coming_from_eva.md has the whole table).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError

ENV_DEFAULTS: dict[str, str] = {
    "DATA_ROOT": "data",
    "EMBEDDINGS_ROOT": "data/embeddings",
    "RESULTS_ROOT": "results/runs",
    "N_RUNS": "5",
    "MAX_STEPS": "12500",
    "BATCH_SIZE": "",  # empty: the protocol's own batch size
    "NUM_WORKERS": "",  # empty: from the cores (CPU: one decode worker per 8, at least 1; GPU: all but one, at most 8)
    "ACCELERATOR": "auto",
    "DEVICES": "1",
    "PREDICT_BATCH_SIZE": "",  # eva's name; empty: --embed.batch_size's own default
}

# eva's name -> evalkit's variable of the same meaning, read when evalkit's own is unset.
EVA_ALIASES: dict[str, str] = {"N_DATA_WORKERS": "NUM_WORKERS", "NUM_DEVICES": "DEVICES"}

# eva's variables that evalkit does not read -> what to use instead (said in the warning).
EVA_IGNORED: dict[str, str] = {
    "OUTPUT_ROOT": "use RESULTS_ROOT, the folder above <task>/<model>/<run-id>",
    "LR_VALUE": "use --head.lr or --seg.lr",
    "LR_VALUE_END": "no equivalent: the decoder's cosine schedule ends at 0",
    "WEIGHT_DECAY": "no equivalent: the protocol fixes it",
    "PATIENCE": "use --head.patience_fraction, a fraction of max_epochs; eva's configs use 0.2",
    "MAX_EPOCHS": "use --head.max_steps",
    "IN_FEATURES": "not needed: the width is read from the cache",
    "RESIZE_DIM": "use --model.preprocessing.input_size",
    "NORMALIZE_MEAN": "use --model.preprocessing.mean",
    "NORMALIZE_STD": "use --model.preprocessing.std",
    "MODEL_EXTRA_KWARGS": "use --model.* options",
    "REPO_OR_DIR": "use --model NAME or --config MODEL.yaml",
    "OUT_INDICES": "no equivalent: segmentation reads the adapter's own feature maps",
    "CHECKPOINT_TYPE": "no equivalent: the probes score their best validation epoch, segmentation its last step",
    "MONITOR_METRIC": "no equivalent: each evaluation fixes it, docs/protocols.md",
    "MONITOR_METRIC_MODE": "no equivalent: each evaluation fixes it, docs/protocols.md",
    "METRICS_DEVICE": "use --head.device",
    "DOWNLOAD_DATA": "no equivalent: evalkit never downloads; `evalkit data check` checks the layout",
    "DOWNLOAD": "no equivalent: evalkit never downloads; `evalkit data check` checks the layout",
    "TQDM_REFRESH_RATE": "no equivalent",
    "SAVE_LAST": "no equivalent",
    "LOG_EVERY_N_STEPS": "no equivalent",
    "VAL_CHECK_INTERVAL": "no equivalent",
    "LIGHTNING_ROOT": "no equivalent",
}

_NULL = ("null", "none", "~")  # how an eva user writes "the default" in a variable (N_DATA_WORKERS=null)


def _lookup(name: str) -> tuple[str, str]:
    """``(variable, value)``: evalkit's own ``name`` when set, else eva's name for it when set, else the default."""
    if name in os.environ:
        return name, os.environ[name]
    for eva, ours in EVA_ALIASES.items():
        if ours == name and eva in os.environ:
            value = os.environ[eva]
            return eva, "" if value.strip().lower() in _NULL else value
    return name, ENV_DEFAULTS[name]


def env_str(name: str) -> str:
    return _lookup(name)[1]


def env_int(name: str) -> int | None:
    """The integer value of ``name``, or ``None`` when it is empty."""
    variable, value = _lookup(name)
    value = value.strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise EvalkitError(f"environment variable {variable} must be an integer, got '{value}'") from None


def eva_warning() -> str | None:
    """One line naming the eva variables set here that evalkit ignores, each with what to use instead."""
    ignored = [f"{name} ({instead})" for name, instead in EVA_IGNORED.items() if os.environ.get(name, "").strip()]
    if not ignored:
        return None
    return f"evalkit ignores eva's {', '.join(ignored)}; see docs/coming_from_eva.md"


def model_from_env() -> str | None:
    """eva's ``MODEL_NAME`` when it is set: the model a run without one uses (a preset, by eva's registry name
    ``pathology/mahmood_uni2_h`` or evalkit's ``uni2-h``)."""
    from evalkit.models.presets import find_preset

    value = os.environ.get("MODEL_NAME", "").strip()
    if not value:
        return None
    if find_preset(value) is None:
        raise EvalkitError(f"MODEL_NAME={value} (eva's model variable) names no evalkit model preset; pass --model "
                           "NAME or --config MODEL.yaml (`evalkit models list` shows the presets), or unset MODEL_NAME")
    return value


def eva_data_root_warning(data_root: str | Path, dataset: Any, split: str) -> str | None:
    """A warning when ``data_root`` looks like eva's ``DATA_ROOT``, one dataset's own folder, rather than evalkit's,
    the folder that holds the dataset folders: the dataset's folder is not under it, and it has that folder's
    name or the dataset finds its own files directly in it."""
    root = getattr(dataset, "root", None)
    data_root = Path(data_root)
    if not isinstance(root, str) or Path(root).is_absolute() or (data_root / root).is_dir() or not data_root.is_dir():
        return None
    if data_root.name == Path(root).name:
        fix = f"set DATA_ROOT={data_root.parent}"
    elif _holds_split(dataset, data_root, split):
        fix = f"pass --task.dataset.root {data_root.resolve()}, or set DATA_ROOT to a folder holding it as {root}/"
    else:
        return None
    return (f"DATA_ROOT {data_root} looks like eva's DATA_ROOT (one dataset's folder); evalkit's DATA_ROOT is the "
            f"folder that holds the dataset folders, this task's as {root}/: {fix}")


def _holds_split(dataset: Any, folder: Path, split: str) -> bool:
    """Whether ``dataset`` finds ``split``'s samples with ``folder`` itself as its dataset folder."""
    probe = copy.copy(dataset)
    probe.root = str(folder.resolve())  # absolute: taken as is, whatever the data root
    try:
        return len(probe.list_split(folder, split, check_counts=False)) > 0
    except (EvalkitError, OSError):
        return False
