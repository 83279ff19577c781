"""The embedding stage and its HDF5 cache."""

from evalkit.embed.cache import Embeddings, cache_key, cache_path, read_embeddings
from evalkit.embed.predict import EmbedConfig, SplitCache, embed_task

__all__ = ["EmbedConfig", "Embeddings", "SplitCache", "cache_key", "cache_path", "embed_task", "read_embeddings"]
