"""Paths and small helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np
import pytest
import yaml

from evalkit.env import EVA_ALIASES, EVA_IGNORED

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
DATA = REPO / "data"
CRC_DEMO = DATA / "crc_demo"
CRC_TASK = CONFIGS / "tasks" / "crc_demo.yaml"
PRECOMPUTED_TASK = CONFIGS / "tasks" / "precomputed.yaml"
CONSEP_TASK = CONFIGS / "tasks" / "consep.yaml"
RESNET_RANDOM = CONFIGS / "models" / "resnet50_random.yaml"
VIT_TINY = CONFIGS / "models" / "vit_tiny_patch16_224_random.yaml"
CRC_CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]

# Every environment variable evalkit reads (eva's included, docs/coming_from_eva.md); tests start from none of them set.
EVALKIT_ENV = ("DATA_ROOT", "EMBEDDINGS_ROOT", "RESULTS_ROOT", "N_RUNS", "MAX_STEPS", "BATCH_SIZE", "NUM_WORKERS",
               "ACCELERATOR", "DEVICES", "TRAIN_H5", "VAL_H5", "TEST_H5", "EVALKIT_FAULT_AFTER_BATCHES",
               "EVALKIT_TRUST_CODE", "PREDICT_BATCH_SIZE", "MODEL_NAME", *EVA_ALIASES, *EVA_IGNORED)


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


@contextlib.contextmanager
def background_cli(*args: str | os.PathLike, cwd: Path, log: Path, timeout: float = 300,
                   **env: str) -> Iterator[subprocess.Popen]:
    """``python -m evalkit`` started in the background, for the ``with`` block (the test's own work runs
    meanwhile), then waited for up to ``timeout`` s and killed if it is still running. Its stdout and stderr go
    to ``log``: a pipe nobody reads would stall it once full. SIGINT is back to its default: a test run started
    in the background of a shell inherits it ignored, and Python then leaves it ignored, so Ctrl+C would
    never reach the run."""
    with open(log, "w") as out:
        proc = subprocess.Popen(evalkit_cmd(*args), cwd=cwd, env=cli_env(**env), stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        yield proc
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_in_process(*args: str | os.PathLike, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``evalkit.cli.main(args)`` in this process, as ``run_cli`` runs it in a new one: in ``cwd``, with no evalkit
    variables but ``env``, stdout and stderr captured. It spares the ~3 s of imports a subprocess pays; keep
    subprocesses for what only a process shows (a kill, a signal, a setting read at import)."""
    from evalkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        for name in EVALKIT_ENV:
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        patch.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv := [str(arg) for arg in args])
            except SystemExit as exit_:  # --help, --print_config: the exit status the interpreter would give
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


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


def h5_tree(path: Path) -> dict[str, Any]:
    """Every dataset and group of an HDF5 file, recursively: name -> (dtype, shape, values, attrs); the
    file's own attributes under ``"/"``."""
    def plain(attrs: h5py.AttributeManager) -> dict[str, Any]:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in attrs.items()}

    tree: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        tree["/"] = plain(f.attrs)

        def visit(name: str, obj: h5py.HLObject) -> None:
            if isinstance(obj, h5py.Dataset):
                values = obj[()]
                if h5py.check_string_dtype(obj.dtype) is not None:
                    values = [v.decode() if isinstance(v, bytes) else v for v in np.ravel(values)]
                tree[name] = (str(obj.dtype), obj.shape, values, plain(obj.attrs))
            else:
                tree[name] = ("group", None, None, plain(obj.attrs))

        f.visititems(visit)
    return tree


def assert_same_cache(a: Path, b: Path, ignore_attrs: tuple[str, ...] = ()) -> None:
    """Two cache files hold the same datasets (every one, recursively: ``embeddings``, ``features/<i>``,
    ``full_masks/<j>``, ...) with bit-identical values, dtypes and shapes, and identical attributes
    (the file's and every dataset's), ``ignore_attrs`` of the file aside, and always ``embedding_cost``: it
    measures the run (seconds, memory), not what the file holds."""
    from evalkit.embed.cost import COST_ATTR

    ignore_attrs = (*ignore_attrs, COST_ATTR)
    x, y = h5_tree(a), h5_tree(b)
    assert sorted(x) == sorted(y), f"{a} and {b} hold different datasets"
    assert len(x) > 1, f"{a} holds no datasets"
    for name in x:
        if name == "/":
            continue
        (dtype_x, shape_x, values_x, attrs_x), (dtype_y, shape_y, values_y, attrs_y) = x[name], y[name]
        assert (dtype_x, shape_x) == (dtype_y, shape_y), f"{name}: {dtype_x}{shape_x} != {dtype_y}{shape_y}"
        if isinstance(values_x, list):
            assert values_x == values_y, name
        elif values_x is not None:
            assert np.array_equal(values_x, values_y), f"{name} differs between {a} and {b}"
        assert attrs_x == attrs_y, name
    file_x = {k: v for k, v in x["/"].items() if k not in ignore_attrs}
    file_y = {k: v for k, v in y["/"].items() if k not in ignore_attrs}
    assert file_x == file_y


def write_foreign_h5(path: Path) -> Path:
    """An HDF5 file of another schema (what a user might pass by mistake)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=np.zeros((4, 8), dtype=np.float32))
        f.create_dataset("y", data=np.arange(4))
        f.attrs["source"] = "not evalkit"
    return path


def write_schema1_h5(path: Path, n: int = 6, dim: int = 8) -> Path:
    """A pooled-embedding cache as evalkit wrote it before schema versions (schema 1): the same datasets,
    a ``model_fingerprint`` attribute, no ``schema_version`` and no ``kind``."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset("embeddings", data=rng.standard_normal((n, dim)).astype(np.float32))
        f.create_dataset("labels", data=np.arange(n) % 2)
        f.create_dataset("ids", data=np.array([f"img-{i}.png" for i in range(n)], dtype=object),
                         dtype=h5py.string_dtype("utf-8"))
        f.attrs.update({"model": "old", "model_fingerprint": "0" * 64, "dataset": "old", "split": "train",
                        "transform": "{}", "complete": True, "evalkit_version": "0.1.0"})
    return path


def load_task(path: Path = CRC_TASK, *overrides: str):
    """A :class:`evalkit.task.Task` from a task config, through the real parser."""
    from evalkit.cli import build_parser
    from evalkit.preparse import chosen_evaluation

    argv = ["--config", str(path), *overrides]
    parser = build_parser("fit", chosen_evaluation(argv))
    cfg = parser.parse_args(argv)
    return parser.instantiate_classes(cfg).task


def small_timm(input_size: int = 64, seed: int = 0, **kwargs):
    """A fast real backbone: timm ResNet-18 at a small input size."""
    from evalkit.models import Preprocessing, TimmModel

    return TimmModel("resnet18", seed=seed, preprocessing=Preprocessing(input_size=input_size), **kwargs)


def cpu_embed(batch_size: int = 8, **kwargs):
    from evalkit.embed import EmbedConfig

    return EmbedConfig(batch_size=batch_size, num_workers=0, accelerator="cpu", devices=1, **kwargs)
