"""The embedding stage and its feature cache.

The Lightning predict loop (:mod:`evalkit.embed.predict`) is imported on first use, so
that commands which only read caches or check data start without loading Lightning.
"""

from typing import Any

from evalkit.embed.cache import Embeddings, cache_key, cache_path, read_embeddings
from evalkit.embed.config import EmbedConfig
from evalkit.embed.features import FeatureSet, PooledRows, feature_file

__all__ = ["EmbedConfig", "Embeddings", "FeatureSet", "PooledRows", "SplitCache", "cache_key", "cache_path", "embed_task",
           "feature_file", "predict_features", "read_embeddings"]


def __getattr__(name: str) -> Any:
    if name in ("SplitCache", "embed_task", "predict_features"):
        from evalkit.embed import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'evalkit.embed' has no attribute '{name}'")
