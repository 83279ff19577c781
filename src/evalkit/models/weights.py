"""Where a preset's published weights are on this machine: a file or folder the config gives, else the Hugging Face cache.

evalkit never downloads preset weights and never asks the network about them (``HF_HUB_OFFLINE`` or not): it
looks, in order, at

1. ``weights`` when the model config gives it: that file, or the first of the preset's ``weight_files`` in that
   folder (a ``hf download ORG/NAME --local-dir DIR`` folder). Nothing else is searched then: weights named by
   the user are never swapped for others found elsewhere.
2. otherwise the Hugging Face cache that ``hf download ORG/NAME`` fills, found as huggingface_hub finds it
   (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``):
   ``models--ORG--NAME/snapshots/<revision>/<weight file>``, the revision read from ``refs/main``, then the
   other snapshots, newest first.

What is missing is one line naming every place looked and how to get the weights. This module imports nothing
heavy: ``evalkit models list`` prints :func:`weight_locations`.
"""

from __future__ import annotations

import os
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.models.presets import Preset


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, by huggingface_hub's rule, read from the environment now:
    ``$HF_HUB_CACHE``, ``$HUGGINGFACE_HUB_CACHE`` (its old name), ``$HF_HOME/hub``,
    ``$XDG_CACHE_HOME/huggingface/hub``, ``~/.cache/huggingface/hub``."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expandvars(os.environ[variable])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(xdg).expanduser() / "huggingface" / "hub"


def hf_repo_folder(repo: str, cache: Path | None = None) -> Path:
    """The cache folder of model repository ``ORG/NAME``: ``<cache>/models--ORG--NAME``."""
    return (cache or hf_hub_cache()) / ("models--" + repo.replace("/", "--"))


def _snapshots(repo_folder: Path) -> list[Path]:
    """The snapshot folders of a cached repository: the one ``refs/main`` names first, then the others, newest
    first."""
    folder = repo_folder / "snapshots"
    found = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True) \
        if folder.is_dir() else []
    ref = repo_folder / "refs" / "main"
    main = folder / ref.read_text().strip() if ref.is_file() else None
    return ([main] if main in found else []) + [p for p in found if p != main]


def weight_locations(preset: Preset, weights: str | os.PathLike | None = None) -> list[str]:
    """Every path where the weights of ``preset`` are looked for, in order (a ``*`` stands for a cache snapshot
    not yet on disk)."""
    if weights is not None:
        path = Path(weights).expanduser()
        return [str(path / name) for name in preset.weight_files] if path.is_dir() else [str(path)]
    if not preset.hf_repo:
        return []
    repo_folder = hf_repo_folder(preset.hf_repo)
    snapshots = _snapshots(repo_folder) or [repo_folder / "snapshots" / "*"]
    return [str(snapshot / name) for snapshot in snapshots for name in preset.weight_files]


def find_weights(preset: Preset, weights: str | os.PathLike | None = None) -> Path | None:
    """The weights file of ``preset`` (see the module docstring for where it is looked for), or ``None``.
    A cache entry whose blob is missing (an interrupted download: a dangling link) does not count."""
    return next((Path(p) for p in weight_locations(preset, weights) if "*" not in p and Path(p).is_file()), None)


def resolve_weights(preset: Preset, weights: str | os.PathLike | None = None) -> Path:
    """Like :func:`find_weights`, but missing weights are an error naming every place looked and how to get them."""
    found = find_weights(preset, weights)
    if found is None:
        raise EvalkitError(missing_weights_message(preset, weights))
    return found


def how_to_get(preset: Preset, weights: str | os.PathLike | None = None) -> str:
    """What to do when the weights of ``preset`` are not on this machine."""
    if not preset.hf_repo:
        return f"model preset '{preset.name}' names no Hugging Face repository: set the model's weights to a local file"
    repo = preset.hf_repo
    steps = (f"download them where there is network with `hf download {repo}` (older clients: `huggingface-cli "
             f"download`) into the Hugging Face cache evalkit reads ({hf_hub_cache()}: set HF_HUB_CACHE or HF_HOME "
             f"to use another), or with `hf download {repo} --local-dir DIR` and set the model's weights to DIR")
    if weights is not None:
        steps = f"check the model's weights ({weights}), or remove it to read the Hugging Face cache; or {steps}"
    if preset.gated:
        steps += (f"; {repo} is gated: accept its terms on https://huggingface.co/{repo} and log in (`hf auth login`) "
                  "before downloading")
    return steps


def missing_weights_message(preset: Preset, weights: str | os.PathLike | None = None) -> str:
    """The one-line error for weights that are nowhere to be found."""
    places = weight_locations(preset, weights)
    looked = f"looked in {', '.join(places)}" if places else "looked nowhere"
    return f"weights of model preset '{preset.name}' not found ({looked}); {how_to_get(preset, weights)}"
