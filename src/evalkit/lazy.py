"""Package exports imported on first access.

The command line imports the packages that hold the registries (``evalkit.data``,
``evalkit.models``, ``evalkit.evaluations``); if their ``__init__`` imported every module,
``evalkit --version`` would import torch, torchvision and Lightning first (seconds).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``package.X`` is ``X`` of its module ``exports[X]``,
    imported on the first access of ``X``."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(sys.modules[package], name, value)  # the next access is a plain attribute
        return value

    return __getattr__
