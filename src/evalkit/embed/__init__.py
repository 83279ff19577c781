"""The embedding stage and its feature cache.

Everything is imported on first access (:mod:`evalkit.lazy`): the command line imports
:mod:`evalkit.embed.config` without torch, and a predict whose caches are complete never
imports the Lightning loop (:mod:`evalkit.embed.loop`).
"""

from evalkit.lazy import lazy_exports

_EXPORTS = {"EmbedConfig": "config", "Embeddings": "cache", "FeatureSet": "features", "PooledRows": "features",
            "SplitCache": "predict", "cache_key": "cache", "cache_path": "cache", "embed_task": "predict",
            "feature_file": "features", "predict_features": "predict", "read_embeddings": "cache"}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
