"""evalkit: evaluate pathology foundation models on frozen embeddings."""

__version__ = "0.1.0"
