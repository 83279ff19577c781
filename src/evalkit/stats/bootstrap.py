"""Bootstrap confidence intervals of the reported metrics, all resamples and runs at once.

A resample with replacement is a weighting of the test samples by how many times each was
drawn, so every metric is computed from weighted counts by
:class:`evalkit.metrics.classification.ClassificationScorer` (the same float64 code as the point
estimate and early stopping) and never from a materialised resample: ``B`` weightings of ``N``
samples are one ``[B, N]`` tensor, and the ``R`` seeded runs share it (they are scored on the
same samples, so they get the same resamples).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from evalkit.errors import EvalkitError
from evalkit.metrics.classification import ClassificationScorer

# A chunk of resamples holds at most this many weights: 16 MB of float64 weights beside 16 MB of int64 draws.
# The resamples do not depend on it (one generator stream, split by resample), and neither do the numbers.
MAX_CHUNK_ELEMENTS = 1 << 21


def weighted_metrics(
    weights: torch.Tensor,
    target: torch.Tensor,
    probs: torch.Tensor,
    num_classes: int,
    metrics: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """The reported metrics of ``R`` runs under ``B`` weightings of the samples, as ``[B, R]`` tensors.

    ``weights`` [B, N] (a bootstrap resample is a weighting by draw counts), ``target`` [N],
    ``probs`` [R, N, C] (or [N, C]); predictions are ``probs.argmax(-1)``. With unit weights
    every value is :func:`evalkit.metrics.classification_metrics` of that run, bit for bit:
    classes absent from a weighting's targets do not count in balanced accuracy and AUROC, and
    F1 averages over the classes present in the targets or the predictions, as scikit-learn does.
    ``metrics`` picks a subset (AUROC is the costly one).
    """
    return ClassificationScorer(target, probs, num_classes, metrics)(weights)


def bootstrap_weights(n: int, n_resamples: int, generator: torch.Generator, chunk: int) -> Iterator[torch.Tensor]:
    """Draw counts of ``n_resamples`` resamples of ``n`` samples with replacement, ``chunk`` at a time.

    Each yielded ``[b, n]`` float64 tensor holds, per resample, how often each sample was drawn
    (a multinomial count summing to ``n``). The draws depend only on the generator's state: a chunk
    is the next ``b`` resamples of one stream, so any chunk size gives the same resamples.
    """
    if n < 1 or n_resamples < 1 or chunk < 1:
        raise EvalkitError(f"expected n, n_resamples and chunk of at least 1, got {n}, {n_resamples}, {chunk}")
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        drawn = torch.randint(n, (b, n), generator=generator)
        ones = torch.ones(1, 1, dtype=torch.float64).expand(b, n)
        yield torch.zeros(b, n, dtype=torch.float64).scatter_add_(1, drawn, ones)


def _resample_chunk(n: int) -> int:
    """Resamples per chunk so that a chunk of weights stays within ``MAX_CHUNK_ELEMENTS``."""
    return max(1, MAX_CHUNK_ELEMENTS // n)


def check_resampling(n_resamples: int, confidence: float) -> None:
    """Fails with one line on settings no bootstrap can use."""
    if n_resamples < 1:
        raise EvalkitError(f"expected n_resamples of at least 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise EvalkitError(f"expected confidence in (0, 1), e.g. 0.95, got {confidence}")


def percentile_interval(values: torch.Tensor, confidence: float) -> tuple[float, float]:
    """Percentile interval (linear interpolation, as numpy's default); NaN resamples are left out."""
    alpha = (1.0 - confidence) / 2
    q = torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64, device=values.device)
    low, high = torch.nanquantile(values, q).tolist()
    return low, high


def resampled_run_means(scorers: Sequence[ClassificationScorer], n_resamples: int,
                        seed: int) -> list[dict[str, torch.Tensor]]:
    """Per scorer and metric, the [n_resamples] means over runs under the same resamples for every scorer.

    One draw of resamples for all scorers keeps paired comparisons paired.
    """
    n = scorers[0].n
    generator = torch.Generator().manual_seed(seed)
    parts: list[dict[str, list[torch.Tensor]]] = [{name: [] for name in s.metrics} for s in scorers]
    for weights in bootstrap_weights(n, n_resamples, generator, _resample_chunk(n)):
        weights = weights.to(scorers[0].probs.device)
        for scorer, part in zip(scorers, parts):
            for name, value in scorer.score(weights).items():
                part[name].append(value.mean(dim=1))
    return [{name: torch.cat(values) for name, values in part.items()} for part in parts]


def bootstrap_ci(
    target: torch.Tensor,
    probs: torch.Tensor,
    num_classes: int,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    metrics: Sequence[str] | None = None,
) -> dict[str, dict]:
    """Percentile bootstrap interval of each metric's mean over the ``R`` runs (``metrics``: a subset).

    The test samples are resampled with replacement and the same resamples score every run,
    so the interval covers test-set sampling of the run-averaged metric (the run-to-run spread
    is the std over runs, reported elsewhere). Returns, per metric, ``estimate`` (on the full
    data), ``low``, ``high``, the bootstrap ``std``, ``confidence`` and ``n_resamples``.
    The same inputs and seed give the same numbers; resamples are drawn in chunks of at most
    ``MAX_CHUNK_ELEMENTS`` weights, so memory stays bounded for any ``N``.
    """
    check_resampling(n_resamples, confidence)
    scorer = ClassificationScorer(target, probs, num_classes, metrics)
    estimate = {name: float(value.mean()) for name, value in scorer(torch.ones(1, scorer.n)).items()}
    (resampled,) = resampled_run_means([scorer], n_resamples, seed)
    out = {}
    for name, values in resampled.items():
        low, high = percentile_interval(values, confidence)
        std = float(values[~values.isnan()].std()) if n_resamples > 1 else math.nan
        out[name] = {"estimate": estimate[name], "low": low, "high": high, "std": std,
                     "confidence": confidence, "n_resamples": n_resamples}
    return out
