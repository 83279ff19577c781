"""The model adapter registry (a module of its own so adapters can import it without cycles)."""

from evalkit.registry import Registry

MODELS: Registry[type] = Registry("model adapter")
