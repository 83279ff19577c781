"""The evaluation registry (its own module, so evaluation files can import it without cycles)."""

from evalkit.registry import Registry

EVALUATIONS: Registry[type] = Registry("evaluation")
