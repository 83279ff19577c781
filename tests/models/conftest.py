"""Fixtures of the model tests: tiny synthetic presets, and a Hugging Face cache written the way `hf download` fills it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import pytest

from evalkit.models.presets import PRESETS, Preset
from preset_fixtures import SYNTHETIC


@pytest.fixture
def synthetic_presets(monkeypatch: pytest.MonkeyPatch) -> dict[str, Preset]:
    """The presets of ``SYNTHETIC``, found by name through ``get_preset`` for the test alone (the real table, where
    it exists, is set aside meanwhile, so a synthetic name never meets a real alias)."""
    PRESETS.load()  # first: the table module, imported during the test (by MODELS' first lookup), would fill the set-aside dict
    monkeypatch.setattr(PRESETS, "_items", {})
    monkeypatch.setattr(PRESETS, "_loaded", True)
    for preset in SYNTHETIC.values():
        PRESETS.add(preset.name, preset)
    return SYNTHETIC


SnapshotWriter = Callable[..., Path]


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SnapshotWriter:
    """``HF_HUB_CACHE`` points at an empty folder; the fixture writes snapshots into it as ``hf download`` does:
    ``models--ORG--NAME/blobs/<sha256>``, ``snapshots/<revision>/<file>`` linking to the blob, ``refs/main``."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))

    def write(repo: str, files: dict[str, Path], revision: str = "a" * 40, main: bool = True) -> Path:
        folder = cache / ("models--" + repo.replace("/", "--"))
        snapshot = folder / "snapshots" / revision
        snapshot.mkdir(parents=True, exist_ok=True)
        (folder / "blobs").mkdir(exist_ok=True)
        for name, source in files.items():
            data = source.read_bytes()
            blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
        if main:
            (folder / "refs").mkdir(exist_ok=True)
            (folder / "refs" / "main").write_text(revision)
        return snapshot

    write.cache = cache  # type: ignore[attr-defined]
    return write
