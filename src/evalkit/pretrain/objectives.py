"""Pretraining objectives: one registry, one contract, one file per objective.

An objective is a loss over the projected views of a batch, ``proj`` [V, B, K] with the global
views first. ``forward(proj, num_global, step)`` returns the total loss and detached parts to
log. ``evalkit pretrain --objective NAME`` (or ``objective: {class_path: NAME, init_args: ...}``
in the config) picks one; every other setting (data, views, backbone, optimiser, budget) stays
the same, so two objectives are compared fairly. A new objective is one module of this package
whose name ends in ``_loss``, registering its class with ``@OBJECTIVES.register(name)``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor, nn

from evalkit.registry import Registry

OBJECTIVES: Registry[type[Objective]] = Registry("pretraining objective")


class Objective(nn.Module, ABC):
    """Base of every pretraining objective; its ``__init__`` arguments are its settings."""

    name: str = ""

    @abstractmethod
    def forward(self, proj: Tensor, num_global: int, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """``proj`` [V, B, K] (global views first) -> (total loss, {part: detached value})."""

    def settings(self) -> dict[str, Any]:
        """The ``__init__`` arguments as set, for the checkpoint's hyperparameters and the log line."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}


def _import_objectives() -> None:
    import evalkit.pretrain as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name.endswith("_loss"):
            importlib.import_module(f"{package.__name__}.{module.name}")


def create_objective(name: str, **settings: Any) -> Objective:
    """The objective registered as ``name``, built with ``settings`` (one line listing the known names if unknown)."""
    _import_objectives()
    return OBJECTIVES.get(name)(**settings)


def objective_names() -> list[str]:
    _import_objectives()
    return OBJECTIVES.names()
