"""The embedding stage and its HDF5 cache.

The Lightning predict loop (:mod:`evalkit.embed.predict`) is imported on first use, so
that commands which only read caches or check data start without loading Lightning.
"""

from typing import Any

from evalkit.embed.cache import Embeddings, cache_key, cache_path, read_embeddings
from evalkit.embed.config import EmbedConfig

__all__ = ["EmbedConfig", "Embeddings", "SplitCache", "cache_key", "cache_path", "embed_task", "read_embeddings"]


def __getattr__(name: str) -> Any:
    if name in ("SplitCache", "embed_task"):
        from evalkit.embed import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'evalkit.embed' has no attribute '{name}'")
