"""The dataset registry (its own module so dataset files can import it without cycles)."""

from evalkit.registry import Registry

DATASETS: Registry[type] = Registry("dataset")
