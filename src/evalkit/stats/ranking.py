"""Several models over several tasks: Friedman test, Nemenyi critical difference, CD-diagram cliques.

Scores of different tasks are not commensurable (a point of AUROC on one task is not a point
on another), so models are compared by their rank within each task, as in Demšar (2006),
"Statistical comparisons of classifiers over multiple data sets", JMLR 7. A task is a block;
the models are the treatments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from evalkit.errors import EvalkitError


def _check_design(k: int, n_blocks: int) -> None:
    if k < 2 or n_blocks < 2:
        raise EvalkitError(f"expected at least 2 models and 2 tasks (blocks) to rank, got {k} models "
                           f"and {n_blocks} tasks")


def friedman(scores: torch.Tensor | np.ndarray, higher_is_better: bool) -> dict:
    """Friedman test that ``k`` models rank alike over ``n_blocks`` tasks: ``scores`` [n_blocks, k].

    Rank 1 is the best model of a task; tied models share their average rank. The statistic
    carries scipy's tie correction, ``chi2 / (1 - sum(t**3 - t) / (n k (k**2 - 1)))``, and equals
    ``scipy.stats.friedmanchisquare(*scores.T)``. The Iman-Davenport F, ``(n - 1) chi2 /
    (n (k - 1) - chi2)`` on ``(k - 1, (k - 1)(n - 1))`` degrees of freedom, is the less
    conservative version Demšar recommends. If every task ties all models, nothing
    distinguishes them: statistic 0 and p = 1 (scipy gives NaN). Returns ``average_ranks``
    (one per model), ``statistic``, ``p_value``, ``iman_davenport_f``, ``iman_davenport_p``,
    ``n_blocks`` and ``k``. ``higher_is_better`` is the metric's recorded direction (its
    ``MetricSpec``), never a default; a metric with none (``None``) cannot be ranked and is refused.
    """
    from scipy import stats  # imported here: scipy takes a while, and only the ranking needs it

    if not isinstance(higher_is_better, bool):
        raise EvalkitError(f"expected higher_is_better True or False, got {higher_is_better!r}: a metric with no "
                           "better end cannot be ranked")
    x = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    if x.ndim != 2:
        raise EvalkitError(f"expected scores of shape [tasks, models], got shape {list(x.shape)}")
    n, k = x.shape
    _check_design(k, n)
    if not np.isfinite(x).all():
        raise EvalkitError("expected finite scores; a model without a score on a task cannot be ranked")
    ranks = stats.rankdata(-x if higher_is_better else x, method="average", axis=1)
    tied = (x[:, :, None] == x[:, None, :]).sum(axis=2)  # size t of each entry's tie group
    ties = float((tied**2 - 1).sum())  # sum over groups of t (t**2 - 1)
    correction = 1.0 - ties / (k * (k * k - 1) * n)
    if correction <= 0:
        statistic = 0.0
    else:
        rank_sums = ranks.sum(axis=0)
        statistic = float((12.0 / (k * n * (k + 1)) * (rank_sums**2).sum() - 3 * n * (k + 1)) / correction)
        statistic = max(statistic, 0.0)  # rounding can leave -1e-15 when all rank sums are equal
    p_value = float(stats.chi2.sf(statistic, k - 1))
    denominator = n * (k - 1) - statistic
    if denominator > 0:
        f = (n - 1) * statistic / denominator
        f_p = float(stats.f.sf(f, k - 1, (k - 1) * (n - 1)))
    else:  # every task ranks the models identically
        f, f_p = math.inf, 0.0
    return {"average_ranks": ranks.mean(axis=0).tolist(), "statistic": statistic, "p_value": p_value,
            "iman_davenport_f": float(f), "iman_davenport_p": f_p, "n_blocks": n, "k": k}


def nemenyi_critical_difference(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Smallest difference of average ranks that Nemenyi's test calls significant.

    ``CD = q_alpha sqrt(k (k + 1) / (6 n_blocks))`` with ``q_alpha`` the studentized range
    quantile for ``k`` groups and infinite degrees of freedom over sqrt(2) (Demšar 2006,
    Table 5a: 1.960, 2.343, 2.569, 2.728, 2.850 for k = 2..6 at alpha = 0.05).
    """
    from scipy.stats import studentized_range

    _check_design(k, n_blocks)
    if not 0.0 < alpha < 1.0:
        raise EvalkitError(f"expected alpha in (0, 1), e.g. 0.05, got {alpha}")
    q = float(studentized_range.ppf(1.0 - alpha, k, math.inf)) / math.sqrt(2.0)
    return q * math.sqrt(k * (k + 1) / (6.0 * n_blocks))


def cliques(avg_ranks: Sequence[float] | np.ndarray | torch.Tensor, cd: float) -> list[list[int]]:
    """Groups of models not significantly different: the bars of a critical-difference diagram.

    Two models differ significantly when their average ranks differ by at least ``cd``
    (Demšar 2006), so a clique is a maximal run of models, in rank order, whose ranks span
    less than ``cd``. Returns model indices, best rank first, one list per bar; a model
    different from every other has no bar. Cliques may overlap, as bars do in the diagram.
    """
    ranks = np.asarray(avg_ranks.detach().cpu() if isinstance(avg_ranks, torch.Tensor) else avg_ranks,
                       dtype=np.float64)
    if ranks.ndim != 1 or not np.isfinite(ranks).all() or not math.isfinite(cd) or cd < 0:
        raise EvalkitError(f"expected a 1-D list of finite average ranks and a critical difference >= 0, "
                           f"got shape {list(ranks.shape)} and cd={cd}")
    order = np.argsort(ranks, kind="stable")
    sorted_ranks = ranks[order]
    # For each model, the last one (in rank order) less than cd behind it.
    last = np.searchsorted(sorted_ranks, sorted_ranks + cd, side="left") - 1
    # A run is maximal when it holds more than one model and reaches further than the previous run.
    previous = np.concatenate([[-1], last[:-1]])
    starts = np.flatnonzero((last > np.arange(len(ranks))) & (last > previous))
    return [order[i:last[i] + 1].tolist() for i in starts]
