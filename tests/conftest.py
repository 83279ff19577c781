"""Shared fixtures. No test writes into the repository: each runs in its own tmp folder with
the evalkit roots pointed there, and anything that could reach the network is offline."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub/transformers (they read these once, at import):
# the machine has no network, so hub look-ups must fail at once instead of timing out.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from helpers import DATA, EVALKIT_ENV, cpu_embed, load_task, small_timm  # noqa: E402

pytest_plugins = ["pytester"]  # runs evalkit's own pytest plugin in a pytest inside the test


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in EVALKIT_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EMBEDDINGS_ROOT", str(tmp_path / "embeddings"))
    monkeypatch.setenv("RESULTS_ROOT", str(tmp_path / "results"))
    monkeypatch.setenv("DATA_ROOT", str(DATA))
    monkeypatch.chdir(tmp_path)


@dataclass
class EmbeddedCRC:
    """The shipped CRC tiles embedded once per session by a small real model."""

    task: object
    model: object
    root: Path
    caches: dict  # split -> SplitCache
    log: list[str]


@pytest.fixture(scope="session")
def crc_cache(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedCRC:
    from evalkit.embed import embed_task

    root = tmp_path_factory.mktemp("crc_cache")
    task, model, log = load_task(), small_timm(), []
    caches = embed_task(task, model, DATA, root, cpu_embed(batch_size=8), log.append)
    return EmbeddedCRC(task, model, root, {c.split: c for c in caches}, log)
