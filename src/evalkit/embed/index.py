"""Which model fingerprint a model config had when ``predict`` last embedded with it.

``fit`` must not need the model's weights (DESIGN: a stage reads only the previous stage's
files), yet a cache is addressed by the fingerprint, which hashes the weights. So ``predict``
records, per model config (:meth:`ModelSpec.config_key`), the fingerprint it computed, one
small file per config under ``EMBEDDINGS_ROOT/.models/``. ``fit`` hashes the weights when
they are there (a rewritten checkpoint must never reuse stale embeddings) and reads this
index only when they are not, and says so in results.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.models.base import ModelSpec

INDEX_DIR = ".models"


def _index_file(embeddings_root: str | Path, model: ModelSpec) -> Path:
    return Path(embeddings_root) / INDEX_DIR / f"{model.config_key()[:32]}.json"


def record_fingerprint(embeddings_root: str | Path, model: ModelSpec, fingerprint: str) -> None:
    path = _index_file(embeddings_root, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_writers_files(path.parent)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"model": model.name, "model_fingerprint": fingerprint}))
    os.replace(tmp, path)


def _remove_dead_writers_files(folder: Path) -> None:
    """Temporary index files whose writer (the pid in the name) no longer runs: left by a kill."""
    for tmp in folder.glob("*.json.*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def model_fingerprint(embeddings_root: str | Path, model: ModelSpec) -> tuple[str, str]:
    """``(fingerprint, source)``: ``weights`` when the weight files are hashed, ``index`` when they are
    absent and ``predict`` recorded the fingerprint of this config."""
    missing = model.missing_weights()
    if not missing:
        return model.fingerprint(), "weights"
    path = _index_file(embeddings_root, model)
    try:
        return json.loads(path.read_text())["model_fingerprint"], "index"
    except (OSError, ValueError, KeyError):
        raise EvalkitError(f"weights not found: {missing[0]}; {model.missing_weights_hint} (without the weights, `fit` "
                           f"finds only embeddings that `evalkit predict` made of this model config under "
                           f"{embeddings_root})") from None
