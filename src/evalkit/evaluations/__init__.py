"""Evaluations, one file each, behind the ``EVALUATIONS`` registry: :func:`get_evaluation` is the front door.

A task type is an evaluation (``evaluations/<name>.py``, registered under its name) plus a task
config that names it; every module of this package is imported here, so a new file is all it
takes (docs/evaluations.md walks through one).
"""

import importlib
import pkgutil

from evalkit.evaluations.base import Evaluation, EvaluationResult
from evalkit.evaluations.registry import EVALUATIONS

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def get_evaluation(name: str) -> type[Evaluation]:
    """The evaluation class registered as ``name`` (one line listing the known ones if there is none)."""
    return EVALUATIONS.get(name)


__all__ = ["EVALUATIONS", "Evaluation", "EvaluationResult", "get_evaluation"]
