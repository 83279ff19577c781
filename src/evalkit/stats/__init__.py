"""Uncertainty and significance of reported metrics: bootstrap intervals, paired tests, rankings.

The functions are imported on first access (:mod:`evalkit.lazy`): the command line imports
:mod:`evalkit.stats.config` without torch.
"""

from evalkit.lazy import lazy_exports

_EXPORTS = {"bootstrap_ci": "bootstrap", "bootstrap_weights": "bootstrap", "cliques": "ranking",
            "consensus_predictions": "paired", "friedman": "ranking", "mcnemar": "paired",
            "nemenyi_critical_difference": "ranking", "paired_bootstrap": "paired", "weighted_metrics": "bootstrap"}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
