"""Label-free representation metrics of an embedding matrix: RankMe, ODCorr, α-ReQ (and DimCorr).

They score a model from its cached embeddings alone, before (or instead of) fitting a probe.
All of them need only D×D matrices accumulated over the rows of ``Z`` [N, D] (its second
moments, and the Gram matrix of its row-standardised rows), so the data are read once, in
row chunks accumulated in float64: a cache of 300,000 × 1,536 float16 embeddings is never
held as a float64 copy (3.7 GB), no N×N matrix is ever formed, and what remains is two
eigen-decompositions of D×D matrices.

The moments are accumulated about a shift (the mean of the first chunk), not about zero.
Embeddings often sit far from the origin (a mean of 1e3 with unit spread is not unusual);
``sum(z zᵀ) - N μ μᵀ`` about zero would then cancel most of float64's digits, while about
the shift the cancellation is negligible. The uncentred Gram matrix that RankMe needs is
recovered from the same shifted sums exactly, since it involves no subtraction.

- RankMe (Garrido et al., ICML 2023): ``exp(entropy)`` of the normalised singular values of
  the *uncentred* ``Z``, as in the paper; higher is better (a less collapsed representation).
- ODCorr (kaiko.ai, Aben et al. 2024, "Towards large-scale training of pathology foundation
  models", Section IV-D1, eq. 1): the root mean square of the Pearson correlations between the
  embedding vectors of pairs of different *samples*, ``sqrt(Σ_{i≠j} ρ(Z_i, Z_j)² / (N(N-1)))``;
  lower is better (samples easier to tell apart). The paper stresses that this is not the
  correlation between embedding *dimensions* of earlier work: that one is DimCorr below.
- DimCorr: the same root mean square over the Pearson correlations between pairs of feature
  *dimensions* (what evalkit reported as "odcorr" before it followed the paper); lower means
  less redundant dimensions.
- α-ReQ (Agrawal et al., NeurIPS 2022): the decay exponent α of the centred covariance's
  eigenspectrum, ``λ_i ∝ i^-α``; neither direction is better (the paper finds a sweet spot
  near 1), so it is reported, not ranked.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from evalkit.errors import EvalkitError

RANKME_EPS = 1e-7  # the ε of the RankMe paper, added to every normalised singular value
ALPHA_REQ_REL_TOL = 1e-10  # eigenvalues at or below λ_1 · this are taken as zero in the α-ReQ fit
# Rows per float64 working chunk by default: about this many bytes of them (a few such copies live at once).
CHUNK_BYTES = 16 * 2**20


@dataclass(frozen=True)
class SecondMoments:
    """What one pass over ``Z`` [N, D] yields, all float64.

    Attributes:
        n: the number of rows N.
        mean: column means [D].
        gram: the uncentred ``ZᵀZ`` [D, D] (its eigenvalues are RankMe's σ²).
        covariance: the centred covariance [D, D] with the unbiased ``N - 1`` divisor (``numpy.cov``'s).
        varies: [D] bool, True where a column holds at least two different values; the others
            have no correlation with anything.
        row_gram: ``ẐᵀẐ`` [D, D] of the row-standardised rows ``Ẑ`` (see :func:`standardise_rows`) of
            the rows that vary; ``‖ẐᵀẐ‖_F² = Σ_{i,j} ρ(Z_i, Z_j)²`` over those rows (ODCorr).
        constant_rows: rows whose D values are all equal: they have no correlation with any
            sample and are left out of ``row_gram``.
    """

    n: int
    mean: torch.Tensor
    gram: torch.Tensor
    covariance: torch.Tensor
    varies: torch.Tensor
    row_gram: torch.Tensor
    constant_rows: int


def _chunks(embeddings: torch.Tensor | np.ndarray, chunk_rows: int) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first row, float64 tensor)`` per chunk; anything that slices to an array (an h5py dataset) works."""
    n = embeddings.shape[0]
    for lo in range(0, n, chunk_rows):
        block = embeddings[lo:lo + chunk_rows]
        block = block if isinstance(block, torch.Tensor) else torch.from_numpy(np.asarray(block))
        yield lo, block.to(torch.float64)


def standardise_rows(block: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The rows of ``block`` [n, D] that vary, each centred on its own mean over D and divided by its own norm.

    The dot product of two such rows is the Pearson correlation of the two samples' embedding
    vectors. A row whose D values are all equal has no correlation (zero variance) and is left
    out; the second value counts them. Any other row has a non-zero norm once centred
    (``a - m`` rounds to 0 only when ``a == m``), so no division by zero is possible.
    """
    block = block.to(torch.float64)
    constant = (block == block[:, :1]).all(dim=1)
    rows = block[~constant]  # boolean indexing copies: the caller's block is left as it is
    rows -= rows.mean(dim=1, keepdim=True)
    rows /= torch.linalg.vector_norm(rows, dim=1, keepdim=True)
    return rows, int(constant.sum())


def second_moments(embeddings: torch.Tensor | np.ndarray, chunk_rows: int | None = None) -> SecondMoments:
    """Accumulate the mean, uncentred Gram, centred covariance and the row-standardised Gram of ``embeddings``
    [N, D] in one pass.

    Only ``chunk_rows`` rows at a time are converted to float64 (default: ``CHUNK_BYTES`` of them,
    1,365 rows at D = 1,536, so that each working copy stays small beside the data); a CUDA tensor is
    accumulated on its own device.
    """
    shape = tuple(embeddings.shape)
    if len(shape) != 2:
        raise EvalkitError(f"expected embeddings of shape [N, D], got shape {list(shape)}")
    n, dim = shape
    if n < 2:
        raise EvalkitError(f"representation metrics need at least 2 embeddings, got {n}")
    if dim < 1:
        raise EvalkitError("embeddings have no feature dimensions (D = 0)")
    if chunk_rows is None:
        chunk_rows = max(1, CHUNK_BYTES // (8 * dim))
    if chunk_rows < 1:
        raise EvalkitError(f"chunk_rows must be at least 1, got {chunk_rows}")

    shift = first = total = outer = varies = row_gram = None
    constant_rows = 0
    for lo, block in _chunks(embeddings, chunk_rows):
        finite = torch.isfinite(block)
        if not bool(finite.all()):
            row = lo + int((~finite).any(dim=1).nonzero()[0])
            raise EvalkitError(f"embeddings hold non-finite values (NaN or inf), first at row {row}; re-embed "
                               "(a float16 model or cache overflows above 65,504: use float32 or bfloat16)")
        if shift is None:
            shift = block.mean(dim=0)
            first = block[0].clone()
            total = torch.zeros(dim, dtype=torch.float64, device=block.device)
            outer = torch.zeros(dim, dim, dtype=torch.float64, device=block.device)
            varies = torch.zeros(dim, dtype=torch.bool, device=block.device)
            row_gram = torch.zeros(dim, dim, dtype=torch.float64, device=block.device)
        varies |= (block != first).any(dim=0)
        standardised, constant = standardise_rows(block)
        row_gram.addmm_(standardised.T, standardised)
        constant_rows += constant
        del standardised  # at most one extra chunk in float64 at a time
        block = block - shift  # not in place: a float64 input arrives here as a view of the caller's data
        total += block.sum(dim=0)
        outer.addmm_(block.T, block)

    # With s = Σ(z - c) and S = Σ(z - c)(z - c)ᵀ about the shift c:
    #   Σ z zᵀ = S + c sᵀ + s cᵀ + N c cᵀ,  and  (N - 1) cov = S - s sᵀ / N.
    # Each D × D matrix is 19 MB at D = 1,536, so they are formed in place, one temporary at a
    # time, in the order (and so with the rounding) of the formulas.
    mean = shift + total / n
    covariance = torch.outer(total, total).div_(n)
    covariance = torch.sub(outer, covariance, out=covariance).div_(n - 1)
    gram = outer  # S itself is not needed any more
    cross = torch.outer(shift, total)
    gram += cross
    gram += cross.T
    del cross
    gram += torch.outer(shift, shift).mul_(n)
    # gemm need not return a bitwise-symmetric AᵀA; eigvalsh would read only one triangle.
    gram = _symmetric(gram)
    covariance = _symmetric(covariance)
    row_gram = _symmetric(row_gram)
    return SecondMoments(n=n, mean=mean, gram=gram, covariance=covariance, varies=varies, row_gram=row_gram,
                         constant_rows=constant_rows)


def _symmetric(matrix: torch.Tensor) -> torch.Tensor:
    """``(A + Aᵀ) / 2`` with one temporary (the caller's ``A`` is given up)."""
    return (matrix + matrix.T).div_(2)


def singular_values_from_gram(gram: torch.Tensor, rank: int) -> torch.Tensor:
    """The ``rank`` largest singular values of ``Z``, descending, from the eigenvalues of ``ZᵀZ``.

    Pass ``rank = min(N, D)``: ``Z`` has no more singular values than that, and the other
    D - N eigenvalues of ``ZᵀZ`` (N < D) are zero. The eigen-solver's error is about
    ``eps · λ_max`` (measured: 3e-16 · λ_max at D = 1,536), and a square root would lift
    that to ``1e-8 · σ_max``, which shifts RankMe of a rank-deficient ``Z`` (by 2e-6 relative
    for a rank-1 500 × 40 matrix against ``svdvals``; more for wider D). So
    eigenvalues at or below ``D · eps · λ_max`` (a 1,000-fold margin; σ below
    ``sqrt(D · eps) · σ_max``, 6e-7 · σ_max at D = 1,536) are set to exactly zero: the Gram
    matrix cannot tell them from zero, and RankMe's own ε (1e-7) floors them anyway.
    """
    eigenvalues = torch.linalg.eigvalsh(gram.to(torch.float64)).flip(0)[:rank]
    tol = gram.shape[0] * torch.finfo(torch.float64).eps * eigenvalues[0].clamp(min=0)
    eigenvalues = torch.where(eigenvalues > tol, eigenvalues, torch.zeros_like(eigenvalues))
    return eigenvalues.sqrt()


def rankme_from_singular_values(singular_values: torch.Tensor, eps: float = RANKME_EPS) -> float:
    """RankMe = ``exp(-Σ p_k log p_k)`` with ``p_k = σ_k / Σσ + ε``, as in the paper (ε not renormalised).

    A smooth count of the dimensions in use: D for an isotropic representation, 1 for a
    collapsed one. NaN when every singular value is zero (``Z`` is all zeros).
    """
    sv = singular_values.to(torch.float64)
    norm = sv.sum()
    if not bool(norm > 0):
        return math.nan
    p = sv / norm + eps
    return float(torch.exp(-(p * p.log()).sum()))


def odcorr_from_row_gram(row_gram: torch.Tensor, n_rows: int) -> float:
    """ODCorr (kaiko.ai et al. 2024, eq. 1): root mean square of the Pearson correlations between different samples.

    ``row_gram`` is ``ẐᵀẐ`` [D, D] of the ``n_rows`` row-standardised embeddings ``Ẑ``
    (:func:`standardise_rows`), whose N×N matrix ``ẐẐᵀ`` holds the correlations ``ρ_ij``. The
    two products have the same Frobenius norm, so ``Σ_{i,j} ρ_ij² = ‖ẐᵀẐ‖_F²`` in O(N·D²)
    instead of O(N²·D); the diagonal contributes ``ρ_ii² = 1`` for each of the N rows, so

        ODCorr = sqrt((‖ẐᵀẐ‖_F² - N) / (N (N - 1))).

    Rounding in the float64 Gram moves ODCorr² by at most about ``2 N eps`` (7e-11 at
    N = 300,000), and the subtraction of N cannot make that large relative to the result
    where N is large: ``ODCorr² ≥ (N / (D - 1) - 1) / (N - 1)``, about ``1 / (D - 1)`` for
    N ≫ D (``ẐẐᵀ`` has trace N and, its rows being centred, rank below D). Pass the rows that vary (constant rows have
    no correlation). NaN when fewer than 2 rows remain.
    """
    if n_rows < 2:
        return math.nan
    squares = float(row_gram.to(torch.float64).square().sum())
    mean_square = max(squares - n_rows, 0.0) / (n_rows * (n_rows - 1))
    return min(math.sqrt(mean_square), 1.0)


def dimcorr_from_covariance(covariance: torch.Tensor, varies: torch.Tensor | None = None) -> float:
    """DimCorr: root mean square of the off-diagonal Pearson correlations between feature dimensions.

    Not the paper's ODCorr (that one correlates samples): the orthogonal direction, which the
    paper attributes to earlier work, kept because evalkit reported it as "odcorr" before.

    A dimension with zero variance (``varies`` False, or a zero diagonal entry) has no
    correlation, and is left out: the mean runs over the ``d(d - 1)`` ordered pairs of the d
    dimensions that vary. NaN when fewer than 2 dimensions vary. Correlations are clipped to
    [-1, 1], as ``numpy.corrcoef`` does, since rounding can carry them just past.
    """
    cov = covariance.to(torch.float64)
    keep = cov.diagonal() > 0
    if varies is not None:
        keep &= varies.to(keep.device)
    d = int(keep.sum())
    if d < 2:
        return math.nan
    corr = cov[keep][:, keep] if d < len(keep) else cov.clone()  # the one D × D working copy (19 MB at 1,536)
    std = corr.diagonal().sqrt()
    corr.div_(torch.outer(std, std)).clamp_(-1.0, 1.0)
    corr.fill_diagonal_(0.0)
    return math.sqrt(float(corr.square_().sum()) / (d * (d - 1)))


def alpha_req_from_eigenvalues(eigenvalues: torch.Tensor, rel_tol: float = ALPHA_REQ_REL_TOL) -> float:
    """α of the least-squares fit ``log λ_i = c - α log i`` over the eigenvalues above ``λ_1 · rel_tol``.

    Eigenvalues of the centred covariance, in any order. Those at or below ``λ_1 · rel_tol``
    are left out: zero eigenvalues (N ≤ D, or a rank-deficient representation) have no
    logarithm, and the eigen-solver returns them as noise of about ``eps · λ_1`` (3e-16 ·
    λ_1 measured at D = 1,536), far below 1e-10; a real spectrum decaying as ``i^-3``
    spans 1e-10 only past i = 2,000. NaN when fewer than 2 eigenvalues remain.
    """
    lam = eigenvalues.to(torch.float64).flatten().sort(descending=True).values
    if lam.numel() < 2 or not bool(lam[0] > 0):
        return math.nan
    lam = lam[lam > lam[0] * rel_tol]
    if lam.numel() < 2:
        return math.nan
    x = torch.arange(1, lam.numel() + 1, dtype=torch.float64, device=lam.device).log()
    y = lam.log()
    x = x - x.mean()
    slope = float((x * (y - y.mean())).sum() / (x * x).sum())
    return -slope


def representation_metrics(embeddings: torch.Tensor | np.ndarray,
                           chunk_rows: int | None = None) -> dict[str, float | int]:
    """RankMe, ODCorr, DimCorr and α-ReQ of ``embeddings`` [N, D] (torch or numpy, any float dtype), from one pass.

    ``odcorr_excluded`` is a count, not a metric: the samples left out of ODCorr because their
    embedding has zero variance (all D values equal). ``chunk_rows`` bounds the float64
    working copies to ``chunk_rows × D`` each (default ``CHUNK_BYTES`` of them); the results do not depend on it
    beyond rounding.
    """
    moments = second_moments(embeddings, chunk_rows=chunk_rows)
    singular_values = singular_values_from_gram(moments.gram, rank=min(moments.n, moments.gram.shape[0]))
    rankme = rankme_from_singular_values(singular_values)
    odcorr = odcorr_from_row_gram(moments.row_gram, moments.n - moments.constant_rows)
    covariance, varies, constant_rows = moments.covariance, moments.varies, moments.constant_rows
    del moments  # its Gram matrices (19 MB each at D = 1,536) are done with
    return {
        "rankme": rankme,
        "odcorr": odcorr,
        "odcorr_excluded": constant_rows,
        "dimcorr": dimcorr_from_covariance(covariance, varies),
        "alpha_req": alpha_req_from_eigenvalues(torch.linalg.eigvalsh(covariance)),
    }
