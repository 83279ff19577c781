"""Reference tests: RankMe, ODCorr, DimCorr and α-ReQ against their direct formulas and known answers.

The direct formulas hold the whole matrix in float64 (``svdvals``, ``numpy.corrcoef`` over the
N×N sample correlations and the D×D dimension correlations, ``numpy.cov``); the module under
test never forms an N×N matrix, so they check each other.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evalkit.errors import EvalkitError
from evalkit.metrics.representation import (
    ALPHA_REQ_REL_TOL,
    RANKME_EPS,
    alpha_req_from_eigenvalues,
    dimcorr_from_covariance,
    odcorr_from_row_gram,
    rankme_from_singular_values,
    representation_metrics,
    second_moments,
    singular_values_from_gram,
    standardise_rows,
)


# ---- direct formulas -------------------------------------------------------------------------

def _rankme_direct(z: np.ndarray) -> float:
    sv = torch.linalg.svdvals(torch.as_tensor(z, dtype=torch.float64))
    p = sv / sv.sum() + RANKME_EPS
    return float(torch.exp(-(p * p.log()).sum()))


def _odcorr_direct(z: np.ndarray) -> float:
    """The paper's eq. (1): the N×N Pearson correlations between samples (rows); constant rows left out."""
    z = z[np.ptp(z, axis=1) > 0]
    corr = np.corrcoef(z.astype(np.float64), rowvar=True)
    off = corr[~np.eye(len(corr), dtype=bool)]
    return float(np.sqrt(np.mean(off ** 2)))


def _dimcorr_direct(z: np.ndarray) -> float:
    z = z[:, np.ptp(z, axis=0) > 0]  # constant columns have no correlation
    corr = np.corrcoef(z.astype(np.float64), rowvar=False)
    off = corr[~np.eye(len(corr), dtype=bool)]
    return float(np.sqrt(np.mean(off ** 2)))


def _alpha_req_direct(z: np.ndarray) -> float:
    lam = np.linalg.eigvalsh(np.cov(z.astype(np.float64), rowvar=False))[::-1]
    lam = lam[lam > lam[0] * ALPHA_REQ_REL_TOL]
    slope, _ = np.polyfit(np.log(np.arange(1, len(lam) + 1)), np.log(lam), 1)
    return float(-slope)


def _structured(seed: int, n: int, d: int, offset: float = 0.0) -> np.ndarray:
    """Gaussian rows with a power-law spectrum in a random basis plus a mean: every metric is non-trivial."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scales = np.arange(1, d + 1) ** -0.7
    return rng.standard_normal((n, d)) * scales @ basis.T + offset + rng.standard_normal(d)


# ---- against the direct formulas -------------------------------------------------------------

@pytest.mark.parametrize("seed,n,d,offset", [
    (0, 300, 32, 0.0), (1, 500, 64, 3.0), (2, 50, 120, 0.0), (3, 40, 40, 1.0), (4, 90, 200, -2.0),
])
def test_metrics_match_direct_formulas(seed, n, d, offset):
    z = _structured(seed, n, d, offset)
    ours = representation_metrics(torch.from_numpy(z).float(), chunk_rows=64)
    z32 = z.astype(np.float32)  # the same values the module saw
    assert ours["rankme"] == pytest.approx(_rankme_direct(z32), rel=1e-6)
    assert ours["odcorr"] == pytest.approx(_odcorr_direct(z32), rel=1e-6)
    assert ours["odcorr_excluded"] == 0
    assert ours["dimcorr"] == pytest.approx(_dimcorr_direct(z32), rel=1e-6)
    assert ours["alpha_req"] == pytest.approx(_alpha_req_direct(z32), rel=1e-6)


@pytest.mark.parametrize("seed,n,d,offset,chunk_rows", [
    (20, 30, 200, 0.0, 7),      # N < K: the K×K Gram has rank below N
    (21, 199, 200, 5.0, 64),    # N just below K
    (22, 1_000, 24, -3.0, 100),  # N > K
    (23, 2, 5, 1e3, 1),         # the smallest N, far from the origin
])
def test_odcorr_matches_corrcoef_of_the_samples(seed, n, d, offset, chunk_rows):
    """ODCorr correlates samples (rows), not dimensions: numpy.corrcoef over the N rows, to 1e-6."""
    z = _structured(seed, n, d) + offset + np.random.default_rng(seed).standard_normal((n, 1)) * 4
    ours = representation_metrics(z, chunk_rows=chunk_rows)
    assert abs(ours["odcorr"] - _odcorr_direct(z)) < 1e-6
    assert ours["odcorr"] == pytest.approx(_odcorr_direct(z), rel=1e-9)
    assert ours["odcorr_excluded"] == 0
    if n > 2:  # the other direction gives another number: the test tells the two apart
        assert abs(ours["odcorr"] - _dimcorr_direct(z)) > 1e-3


def test_standardised_rows_give_the_sample_correlations():
    z = _structured(24, 12, 30, offset=2.0)
    rows, constant = standardise_rows(torch.from_numpy(z))
    assert constant == 0
    np.testing.assert_allclose((rows @ rows.T).numpy(), np.corrcoef(z), rtol=0, atol=1e-12)
    # ‖ẐᵀẐ‖_F = ‖ẐẐᵀ‖_F: the K×K Gram carries the sum of the N×N squared correlations
    assert float((rows.T @ rows).square().sum()) == pytest.approx(float(np.square(np.corrcoef(z)).sum()), rel=1e-12)


def test_building_blocks_match_direct_formulas():
    z = _structured(5, 200, 48, offset=1.0)
    moments = second_moments(z, chunk_rows=33)
    np.testing.assert_allclose(moments.mean.numpy(), z.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(moments.gram.numpy(), z.T @ z, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(moments.covariance.numpy(), np.cov(z, rowvar=False), rtol=1e-10, atol=1e-12)
    sv = singular_values_from_gram(moments.gram, rank=48)
    np.testing.assert_allclose(sv.numpy(), np.linalg.svd(z, compute_uv=False), rtol=1e-9)
    assert rankme_from_singular_values(sv) == pytest.approx(_rankme_direct(z), rel=1e-9)
    assert dimcorr_from_covariance(moments.covariance) == pytest.approx(_dimcorr_direct(z), rel=1e-9)
    rows, _ = standardise_rows(torch.from_numpy(z))
    np.testing.assert_allclose(moments.row_gram.numpy(), (rows.T @ rows).numpy(), rtol=1e-10, atol=1e-10)
    assert moments.constant_rows == 0
    assert odcorr_from_row_gram(moments.row_gram, 200) == pytest.approx(_odcorr_direct(z), rel=1e-9)
    lam = torch.linalg.eigvalsh(moments.covariance)
    assert alpha_req_from_eigenvalues(lam) == pytest.approx(_alpha_req_direct(z), rel=1e-9)
    assert alpha_req_from_eigenvalues(lam.flip(0)) == alpha_req_from_eigenvalues(lam)  # any order


@pytest.mark.parametrize("n,d", [(101, 16), (30, 50)])
def test_chunking_does_not_change_the_numbers(n, d):
    z = _structured(6, n, d, offset=5.0)
    one = representation_metrics(z, chunk_rows=10**6)
    for chunk_rows in (7, 1, n - 1):
        chunked = representation_metrics(z, chunk_rows=chunk_rows)
        for name, value in one.items():
            assert chunked[name] == pytest.approx(value, rel=1e-10), (name, chunk_rows)
    # numpy and torch input agree exactly: the same values go through the same float64 arithmetic
    assert representation_metrics(torch.from_numpy(z), chunk_rows=7) == representation_metrics(z, chunk_rows=7)


# ---- known answers ---------------------------------------------------------------------------

def test_identity_matrix():
    d = 64
    out = representation_metrics(torch.eye(d))
    # all singular values 1: p_k = 1/D + ε for each of the D of them
    p = 1 / d + RANKME_EPS
    assert out["rankme"] == pytest.approx(math.exp(-d * p * math.log(p)), rel=1e-12)
    assert out["rankme"] == pytest.approx(d, rel=1e-4)
    # row (and column) j of I is e_j: mean 1/D, variance 1/D, covariance with another -1/(D(D-1)),
    # so every correlation between two samples, and between two dimensions, is -1/(D-1)
    assert out["odcorr"] == pytest.approx(1 / (d - 1), rel=1e-9)
    assert out["dimcorr"] == pytest.approx(1 / (d - 1), rel=1e-12)
    # centred covariance (I - 11ᵀ/D)/(D-1): D-1 equal eigenvalues and one zero -> a flat spectrum
    assert abs(out["alpha_req"]) < 1e-10


@pytest.mark.parametrize("n,d", [(500, 40), (20, 64)])
def test_rank_one_matrix(n, d):
    rng = np.random.default_rng(7)
    u, v = rng.standard_normal(n), 1.0 + rng.random(d)  # non-constant columns, none zero
    out = representation_metrics(np.outer(u, v))
    # one singular value, min(N, D) - 1 zeros: p = (1 + ε, ε, ..., ε)
    m, eps = min(n, d), RANKME_EPS
    expected = math.exp(-(1 + eps) * math.log(1 + eps) - (m - 1) * eps * math.log(eps))
    assert out["rankme"] == pytest.approx(expected, rel=1e-9)
    assert out["rankme"] == pytest.approx(1.0, abs=1e-3)
    assert out["odcorr"] == pytest.approx(1.0, rel=1e-12)  # every row is a multiple of v: ρ = ±1
    assert out["dimcorr"] == pytest.approx(1.0, rel=1e-12)  # every column is a multiple of u
    assert math.isnan(out["alpha_req"])  # one non-zero eigenvalue: no line to fit


def test_isotropic_gaussian():
    n, d = 20_000, 64
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(8))
    out = representation_metrics(z)
    # correlations between independent columns (N values each) are about N(0, 1/N)
    assert 0.9 / math.sqrt(n) < out["dimcorr"] < 1.1 / math.sqrt(n)
    # between independent rows (D values each) E[ρ²] = 1/(D - 1), which is also ODCorr's floor for
    # N ≫ D: the N×N correlation matrix has trace N and rank below D
    assert out["odcorr"] == pytest.approx(1 / math.sqrt(d - 1), rel=0.01)
    assert out["odcorr"] ** 2 >= (n / (d - 1) - 1) / (n - 1) * (1 - 1e-12)
    assert abs(out["alpha_req"]) < 0.1  # eigenvalues within (1 ± sqrt(D/N))², a flat spectrum
    assert 0.99 * d < out["rankme"] <= d


def test_zero_variance_sample_is_left_out_of_odcorr_and_counted():
    z = _structured(14, 150, 12)
    z[3, :] = 5.0  # exactly representable: its centred values are exactly 0
    z[7, :] = 0.1  # not representable: its mean need not round back to 0.1, the equality test still drops it
    z[149, :] = 0.0
    expected = _odcorr_direct(np.delete(z, [3, 7, 149], axis=0))
    for chunk_rows in (16, 1, 1_000):
        out = representation_metrics(z, chunk_rows=chunk_rows)
        assert out["odcorr"] == pytest.approx(expected, rel=1e-9)
        assert out["odcorr_excluded"] == 3
    assert second_moments(z, chunk_rows=16).constant_rows == 3


def test_zero_variance_column_is_left_out_of_dimcorr():
    z = _structured(9, 150, 12)
    z[:, 3] = 5.0  # exactly representable: its centred variance is exactly 0
    z[:, 7] = 0.1  # not representable: its variance cancels only to rounding, `varies` still drops it
    expected = _dimcorr_direct(np.delete(z, [3, 7], axis=1))
    out = representation_metrics(z, chunk_rows=16)
    assert out["dimcorr"] == pytest.approx(expected, rel=1e-9)
    assert out["odcorr"] == pytest.approx(_odcorr_direct(z), rel=1e-9)  # a constant column is still data for samples
    moments = second_moments(z, chunk_rows=16)
    assert moments.varies.tolist() == [j not in (3, 7) for j in range(12)]
    # from a covariance alone, a zero diagonal entry marks the dimension
    cov = torch.from_numpy(np.cov(z, rowvar=False))
    cov[7, :] = cov[:, 7] = 0.0
    assert dimcorr_from_covariance(cov) == pytest.approx(expected, rel=1e-9)


def test_fewer_than_two_varying_samples_or_dimensions_give_nan():
    z = np.ones((10, 4))
    z[:, 1] = np.arange(10)
    assert math.isnan(representation_metrics(z)["dimcorr"])
    assert math.isnan(dimcorr_from_covariance(torch.zeros(3, 3)))
    z = np.ones((10, 4))
    z[4, 1] = 2.0  # one varying sample: no pair to correlate
    out = representation_metrics(z)
    assert math.isnan(out["odcorr"]) and out["odcorr_excluded"] == 9
    assert math.isnan(odcorr_from_row_gram(torch.zeros(4, 4), 1))
    assert math.isnan(representation_metrics(np.arange(10.0)[:, None])["odcorr"])  # D = 1: every sample constant


def test_all_zero_embeddings_give_nan():
    out = representation_metrics(torch.zeros(10, 4))
    assert out.pop("odcorr_excluded") == 10
    assert all(math.isnan(value) for value in out.values())


def test_float16_input():
    z16 = torch.from_numpy(_structured(10, 400, 32, offset=2.0)).half()
    out = representation_metrics(z16, chunk_rows=50)
    assert out == representation_metrics(z16.double(), chunk_rows=50)  # the same values, widened exactly
    assert out == representation_metrics(z16.numpy(), chunk_rows=50)
    assert out["rankme"] == pytest.approx(_rankme_direct(z16.numpy()), rel=1e-6)
    assert out["odcorr"] == pytest.approx(_odcorr_direct(z16.numpy()), rel=1e-6)
    assert out["dimcorr"] == pytest.approx(_dimcorr_direct(z16.numpy()), rel=1e-6)
    assert out["alpha_req"] == pytest.approx(_alpha_req_direct(z16.numpy()), rel=1e-6)


def test_input_is_not_modified():
    z = torch.from_numpy(_structured(11, 50, 8, offset=3.0))
    before = z.clone()
    representation_metrics(z, chunk_rows=16)
    assert torch.equal(z, before)


# ---- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_embeddings_raise(bad):
    z = torch.randn(30, 5)
    z[13, 2] = bad
    with pytest.raises(EvalkitError, match="non-finite.*row 13"):
        representation_metrics(z, chunk_rows=7)


def test_float16_overflow_raises():
    z = torch.randn(20, 5)
    z[4, 0] = 70_000.0  # above float16's largest value: inf once cast
    with pytest.raises(EvalkitError, match="non-finite.*row 4"):
        representation_metrics(z.half())


@pytest.mark.parametrize("shape", [(1, 8), (0, 8)])
def test_fewer_than_two_rows_raise(shape):
    with pytest.raises(EvalkitError, match="at least 2 embeddings"):
        representation_metrics(torch.zeros(shape))


def test_bad_shape_and_chunk_rows_raise():
    with pytest.raises(EvalkitError, match=r"shape \[N, D\]"):
        representation_metrics(torch.zeros(10))
    with pytest.raises(EvalkitError, match="chunk_rows"):
        representation_metrics(torch.zeros(10, 3), chunk_rows=0)


# ---- numerical stability at a realistic size --------------------------------------------------

def test_large_offset_float32_at_realistic_width():
    """20,000 × 1,536 float32 around 1e3: about zero, ZᵀZ/N - μμᵀ would cancel six digits."""
    n, d = 20_000, 1_536
    g = torch.Generator().manual_seed(12)
    z = torch.randn(n, 32, generator=g) @ torch.randn(32, d, generator=g) * 0.3
    z += torch.randn(n, d, generator=g) * torch.linspace(0.1, 2.0, d)
    z += 1e3 + torch.randn(d, generator=g)
    z64 = z.numpy().astype(np.float64)
    ref_mean = z64.mean(axis=0)
    ref_cov = np.cov(z64, rowvar=False)

    moments = second_moments(z)
    assert np.abs(moments.mean.numpy() - ref_mean).max() < 1e-12 * 1e3
    cov_err = np.linalg.norm(moments.covariance.numpy() - ref_cov) / np.linalg.norm(ref_cov)
    assert cov_err < 1e-12, cov_err  # about zero instead of the shift: 5e-10

    ref_std = np.sqrt(np.diag(ref_cov))
    corr = ref_cov / np.outer(ref_std, ref_std)
    ref_odcorr = np.sqrt(np.mean(corr[~np.eye(d, dtype=bool)] ** 2))
    assert dimcorr_from_covariance(moments.covariance, moments.varies) == pytest.approx(ref_odcorr, rel=1e-8)
    lam = np.linalg.eigvalsh(ref_cov)[::-1]
    slope, _ = np.polyfit(np.log(np.arange(1, d + 1)), np.log(lam), 1)
    assert alpha_req_from_eigenvalues(torch.linalg.eigvalsh(moments.covariance)) == pytest.approx(-slope, rel=1e-8)


def test_odcorr_at_realistic_width_far_from_the_origin():
    """4,000 × 1,536 float32 around 1e3 with a per-sample offset: the K×K route against the N×N corrcoef."""
    n, d = 4_000, 1_536
    g = torch.Generator().manual_seed(15)
    z = torch.randn(n, 16, generator=g) @ torch.randn(16, d, generator=g)
    z += torch.randn(n, d, generator=g) * torch.linspace(0.1, 2.0, d) + 1e3 + 10 * torch.randn(n, 1, generator=g)
    moments = second_moments(z, chunk_rows=1_000)  # what representation_metrics reads ODCorr from, without its eigh
    assert moments.constant_rows == 0
    assert odcorr_from_row_gram(moments.row_gram, n) == pytest.approx(_odcorr_direct(z.numpy()), rel=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensor_matches_cpu():
    z = torch.from_numpy(_structured(13, 300, 48, offset=4.0)).float()
    cpu, cuda = representation_metrics(z, chunk_rows=64), representation_metrics(z.cuda(), chunk_rows=64)
    for name, value in cpu.items():
        assert cuda[name] == pytest.approx(value, rel=1e-9), name


@pytest.mark.slow
def test_odcorr_at_300k_by_1536_in_float64():
    """300,000 × 1,536 float64 (3.7 GB), built from 300 patterns so that the exact answer is known.

    Row i is ``a_i · p_c(i) + b_i`` with a_i of either sign and b_i near 1e3: its correlation with
    row j is ±corr(p_c(i), p_c(j)), so Σ_{i≠j} ρ_ij² = Σ_{c,e} n_c n_e R_ce² - N from the 300 × 300
    pattern correlations R, computed directly; no 300,000² matrix is needed to check the K×K route.
    """
    n, d, m = 300_000, 1_536, 300
    rng = np.random.default_rng(16)
    patterns = _structured(16, m, d) + 0.5 * rng.standard_normal(d)  # a shared component: large correlations
    which = rng.integers(0, m, n)
    z = torch.from_numpy(patterns[which])
    z *= torch.from_numpy(rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 2.0, n))[:, None]
    z += torch.from_numpy(1e3 + rng.standard_normal(n))[:, None]
    counts = np.bincount(which, minlength=m).astype(np.float64)
    squares = np.outer(counts, counts) * np.corrcoef(patterns) ** 2
    expected = math.sqrt((math.fsum(squares.ravel()) - n) / (n * (n - 1)))

    moments = second_moments(z)
    assert moments.constant_rows == 0
    assert odcorr_from_row_gram(moments.row_gram, n) == pytest.approx(expected, rel=1e-9)
