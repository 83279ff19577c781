"""The evaluation registry (its own module, so evaluation files can import it without cycles).

Every module of :mod:`evalkit.evaluations` may register one; they are imported on the first lookup.
"""

from evalkit.registry import Registry

EVALUATIONS: Registry[type] = Registry("evaluation", "evalkit.evaluations")
