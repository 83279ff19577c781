"""The model adapter registry (a module of its own so adapters can import it without cycles).

Its entries register when their module is imported: every module of :mod:`evalkit.models`, on the
registry's first lookup.
"""

from evalkit.registry import Registry

MODELS: Registry[type] = Registry("model adapter", "evalkit.models")
