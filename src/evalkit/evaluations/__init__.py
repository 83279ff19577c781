"""Evaluations, one file each, behind the ``EVALUATIONS`` registry: :func:`get_evaluation` is the front door.

A task type is an evaluation (``evaluations/<name>.py``, registered under its name) plus a task
config that names it; the registry imports every module of this package on its first listing
(``get_evaluation(name)`` the module ``name`` alone), so a new file is all it takes
(docs/evaluations.md walks through one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evalkit.evaluations.registry import EVALUATIONS
from evalkit.lazy import lazy_exports

if TYPE_CHECKING:
    from evalkit.evaluations.base import Evaluation

__getattr__ = lazy_exports(__name__, {"Evaluation": "base", "EvaluationResult": "base"})


def get_evaluation(name: str) -> type[Evaluation]:
    """The evaluation class registered as ``name`` (one line listing the known ones if there is none)."""
    return EVALUATIONS.get(name)


__all__ = ["EVALUATIONS", "Evaluation", "EvaluationResult", "get_evaluation"]
