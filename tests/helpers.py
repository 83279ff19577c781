"""Paths and small helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
DATA = REPO / "data"
CRC_DEMO = DATA / "crc_demo"
CRC_TASK = CONFIGS / "tasks" / "crc_demo.yaml"
PRECOMPUTED_TASK = CONFIGS / "tasks" / "precomputed.yaml"
RESNET_RANDOM = CONFIGS / "models" / "resnet50_random.yaml"
CRC_CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]

# Every environment variable evalkit reads; tests start from none of them set.
EVALKIT_ENV = ("DATA_ROOT", "EMBEDDINGS_ROOT", "RESULTS_ROOT", "N_RUNS", "MAX_STEPS", "BATCH_SIZE", "NUM_WORKERS",
               "ACCELERATOR", "DEVICES", "TRAIN_H5", "VAL_H5", "TEST_H5")


def write_yaml(path: Path, content: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def model_yaml(path: Path, class_path: str, **init_args: Any) -> Path:
    return write_yaml(path, {"model": {"class_path": class_path, "init_args": init_args}})


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of an ``evalkit`` subprocess: offline, no evalkit variables unless given."""
    env = {k: v for k, v in os.environ.items() if k not in EVALKIT_ENV}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def evalkit_cmd(*args: str | os.PathLike) -> list[str]:
    return [sys.executable, "-m", "evalkit", *map(str, args)]


def run_cli(*args: str | os.PathLike, cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess (``python -m evalkit``)."""
    return subprocess.run(evalkit_cmd(*args), cwd=cwd, env=cli_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def copy_crc_demo(dst_root: Path) -> Path:
    """A private copy of the shipped tiles, ``dst_root/crc_demo``, safe to damage."""
    dst = dst_root / "crc_demo"
    shutil.copytree(CRC_DEMO, dst)
    return dst


def read_h5(path: Path) -> dict[str, Any]:
    """Everything in a cache file, for exact comparisons."""
    with h5py.File(path, "r") as f:
        return {
            "embeddings": f["embeddings"][...],
            "labels": f["labels"][...],
            "ids": [s.decode() if isinstance(s, bytes) else s for s in f["ids"][...]],
            "attrs": {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()},
            "embeddings_dtype": f["embeddings"].dtype,
        }


def assert_same_cache(a: Path, b: Path) -> None:
    """Two cache files hold bit-identical arrays and identical attributes."""
    x, y = read_h5(a), read_h5(b)
    assert x["embeddings"].dtype == y["embeddings"].dtype
    assert np.array_equal(x["embeddings"], y["embeddings"])
    assert np.array_equal(x["labels"], y["labels"])
    assert x["ids"] == y["ids"]
    assert x["attrs"] == y["attrs"]


def write_foreign_h5(path: Path) -> Path:
    """An HDF5 file of another schema (what a user might pass by mistake)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=np.zeros((4, 8), dtype=np.float32))
        f.create_dataset("y", data=np.arange(4))
        f.attrs["source"] = "not evalkit"
    return path


def load_task(path: Path = CRC_TASK, *overrides: str):
    """A :class:`evalkit.task.Task` from a task config, through the real parser."""
    from evalkit.cli import build_parser

    parser = build_parser("fit")
    cfg = parser.parse_args(["--config", str(path), *overrides])
    return parser.instantiate_classes(cfg).task


def small_timm(input_size: int = 64, seed: int = 0, **kwargs):
    """A fast real backbone: timm ResNet-18 at a small input size."""
    from evalkit.models import Preprocessing, TimmModel

    return TimmModel("resnet18", seed=seed, preprocessing=Preprocessing(input_size=input_size), **kwargs)


def cpu_embed(batch_size: int = 8, **kwargs):
    from evalkit.embed import EmbedConfig

    return EmbedConfig(batch_size=batch_size, num_workers=0, accelerator="cpu", devices=1, **kwargs)
