"""The LeJEPA loss against a slow float64 reference and closed forms; invariances, precision, seeding, DDP."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from evalkit.errors import EvalkitError
from evalkit.pretrain import (
    EPPS_PULLEY_KNOTS,
    EPPS_PULLEY_T_MAX,
    LeJEPALoss,
    epps_pulley,
    prediction_loss,
    random_directions,
    sigreg,
)


def _collapsed_integral(t_max: float) -> float:
    """``∫_{-T}^{T} (1 - e^{-t²/2})² e^{-t²/2} dt`` in closed form: the Epps–Pulley integral of samples all at 0.

    Expanded, the integrand is ``e^{-t²/2} - 2 e^{-t²} + e^{-3t²/2}``, and
    ``∫_{-T}^{T} e^{-a t²} dt = sqrt(π / a) · erf(T sqrt(a))``.
    """
    return sum(c * math.sqrt(math.pi / a) * math.erf(t_max * math.sqrt(a)) for c, a in ((1, 0.5), (-2, 1.0), (1, 1.5)))


def _null_mean(t_max: float) -> float:
    """The mean of the statistic for i.i.d. N(0, 1) samples, ``∫_{-T}^{T} (1 - e^{-t²}) e^{-t²/2} dt``.

    ``E|φ_N(t) - φ(t)|² = (1 - φ(t)²) / N``, since ``Var e^{itX} = 1 - |φ(t)|²``; the factor N cancels.
    """
    return sum(c * math.sqrt(math.pi / a) * math.erf(t_max * math.sqrt(a)) for c, a in ((1, 0.5), (-1, 1.5)))


def _reference_epps_pulley(x: torch.Tensor, t_max: float = EPPS_PULLEY_T_MAX, knots: int = 2001) -> torch.Tensor:
    """The statistic of each column of ``x`` [N, M] the slow way.

    It uses complex exponentials in float64, the whole interval [-T, T] with no use of
    symmetry, and composite Simpson on a fine grid. It loops over columns to bound memory.
    """
    t = torch.linspace(-t_max, t_max, knots, dtype=torch.float64)
    gauss = torch.exp(-0.5 * t**2)
    simpson = torch.ones(knots, dtype=torch.float64)
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
    simpson *= (t[1] - t[0]) / 3.0
    stats = []
    for column in x.double().T:
        ecf = torch.exp(1j * column[:, None] * t).mean(dim=0)
        stats.append(len(column) * ((ecf - gauss).abs().square() * gauss) @ simpson)
    return torch.stack(stats)


def _embeddings(views: int, n: int, dim: int, seed: int) -> torch.Tensor:
    """Non-Gaussian, unevenly scaled and shifted embeddings [V, N, K]: half the coordinates uniform, half Gaussian."""
    g = torch.Generator().manual_seed(seed)
    gauss = torch.randn(views, n, dim - dim // 2, generator=g)
    uniform = (torch.rand(views, n, dim // 2, generator=g) - 0.5) * 3.0
    scale = torch.linspace(0.6, 1.4, dim)
    return torch.cat([gauss, uniform], dim=-1) * scale + 0.2


# ---- SIGReg: reference, closed forms, quadrature ----


def test_sigreg_matches_slow_reference():
    proj = _embeddings(views=2, n=256, dim=16, seed=0)
    directions = random_directions(16, 48, step=11)
    expected = torch.stack([_reference_epps_pulley(view @ directions) for view in proj]).mean()
    got = sigreg(proj, step=11, num_directions=48)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(float(expected), rel=1e-4)


def test_epps_pulley_per_column_matches_reference_for_wide_and_heavy_tailed_samples():
    g = torch.Generator().manual_seed(1)
    columns = torch.stack([2.0 * torch.randn(400, generator=g),  # N(0, 4)
                           torch.distributions.Laplace(0.0, 1.0).sample((400,)),  # variance 2, heavy tails
                           torch.rand(400, generator=g) * 4.0 - 1.0], dim=1)
    expected = _reference_epps_pulley(columns)
    torch.testing.assert_close(epps_pulley(columns).double(), expected, rtol=1e-4, atol=0.0)


@pytest.mark.parametrize(("t_max", "num_knots"), [(5.0, 17), (3.0, 33)], ids=["paper", "reference-code"])
def test_published_rules_equal_trapezoid_on_the_full_grid(t_max, num_knots):
    """The symmetric half-grid weights reproduce ``torch.trapezoid`` on ``linspace(-T, T, knots)`` exactly."""
    x = _embeddings(views=1, n=300, dim=6, seed=2)[0]
    t = torch.linspace(-t_max, t_max, num_knots, dtype=torch.float64)
    gauss = torch.exp(-0.5 * t**2)
    ecf = torch.exp(1j * x.double()[..., None] * t).mean(dim=0)  # [M, T]
    expected = len(x) * torch.trapezoid((ecf - gauss).abs().square() * gauss, t, dim=-1)
    torch.testing.assert_close(epps_pulley(x, t_max, num_knots).double(), expected, rtol=1e-5, atol=0.0)


def test_collapsed_at_zero_matches_closed_form():
    n = 96
    for t_max, num_knots, rel in [(EPPS_PULLEY_T_MAX, EPPS_PULLEY_KNOTS, 1e-5), (3.0, 33, 1e-3)]:
        stat = epps_pulley(torch.zeros(n, 5), t_max, num_knots)
        expected = n * _collapsed_integral(t_max)
        assert stat.tolist() == pytest.approx([expected] * 5, rel=rel)
    assert _collapsed_integral(5.0) == pytest.approx(0.40892, abs=1e-5)  # √(2π) - 2√π + √(2π/3), to 1e-11


def test_doubling_the_knots_changes_little():
    proj = _embeddings(views=2, n=256, dim=16, seed=3)
    base = float(sigreg(proj, step=0, num_directions=64))
    doubled = float(sigreg(proj, step=0, num_directions=64, num_knots=2 * EPPS_PULLEY_KNOTS - 1))
    assert doubled == pytest.approx(base, rel=1e-3)
    # The paper's coarser rule (17 knots on [-5, 5]) is as good on near-Gaussian samples.
    gauss = torch.randn(2, 512, 16, generator=torch.Generator().manual_seed(3))
    paper = float(sigreg(gauss, step=0, num_directions=64, num_knots=17))
    assert paper == pytest.approx(float(sigreg(gauss, step=0, num_directions=64, num_knots=33)), rel=1e-3)


def test_isotropic_gaussian_sits_at_the_null_mean():
    n = 1024
    gauss = torch.randn(2, n, 16, generator=torch.Generator().manual_seed(4))
    value = float(sigreg(gauss, step=0, num_directions=128))
    assert _null_mean(EPPS_PULLEY_T_MAX) == pytest.approx(1.0594, abs=1e-4)
    assert value == pytest.approx(_null_mean(EPPS_PULLEY_T_MAX), abs=0.35)  # 3 sd over seeds; N-scaling off by 2 fails
    assert value / n < 2e-3  # the unscaled integral goes to 0; a collapsed batch keeps 0.41 of N


def test_collapsed_and_anisotropic_embeddings_score_higher():
    n, dim = 512, 16
    g = torch.Generator().manual_seed(5)
    iso = torch.randn(1, n, dim, generator=g)
    aniso = iso * torch.cat([torch.full((dim // 2,), 2.0), torch.full((dim // 2,), 0.3)])
    point = torch.full((1, n, dim), 0.7)
    rank1 = torch.randn(1, n, 1, generator=g) * torch.randn(1, 1, dim, generator=g)
    score = {name: float(sigreg(z, step=0, num_directions=256))
             for name, z in [("iso", iso), ("aniso", aniso), ("point", point), ("rank1", rank1)]}
    assert score["aniso"] > 3 * score["iso"]
    # Collapse to one point scores at least N times the closed form at 0 (0 is its best point).
    assert score["point"] >= n * _collapsed_integral(EPPS_PULLEY_T_MAX) * (1 - 1e-5)
    assert min(score["point"], score["rank1"]) > 20 * score["iso"]


def test_each_view_is_tested_on_its_own():
    """The paper averages SIGReg over views; it does not pool the views into one batch."""
    proj = _embeddings(views=3, n=128, dim=8, seed=6)
    per_view = torch.stack([sigreg(view, step=2, num_directions=32) for view in proj])
    assert float(sigreg(proj, step=2, num_directions=32)) == pytest.approx(float(per_view.mean()), rel=1e-6)
    assert epps_pulley(proj @ random_directions(8, 32, step=2)).shape == (3, 32)


# ---- directions ----


def test_directions_are_unit_and_seeded_by_the_step():
    a = random_directions(24, 100, step=7)
    assert a.shape == (24, 100) and a.dtype == torch.float32
    torch.testing.assert_close(a.norm(dim=0), torch.ones(100))
    assert torch.equal(a, random_directions(24, 100, step=7))
    assert not torch.allclose(a, random_directions(24, 100, step=8))
    proj = _embeddings(views=1, n=64, dim=24, seed=7)
    assert torch.equal(sigreg(proj, step=7, num_directions=16), sigreg(proj, step=7, num_directions=16))
    assert not torch.equal(sigreg(proj, step=7, num_directions=16), sigreg(proj, step=8, num_directions=16))


# ---- prediction term ----


def test_prediction_known_value_and_paper_formula():
    # One sample, one coordinate: global views at 0 and 2 (centre 1), a local view at 4.
    assert float(prediction_loss(torch.tensor([[[0.0]], [[2.0]], [[4.0]]]), num_global=2)) == pytest.approx(11 / 3)
    # The paper's (1/B) Σ_n (1/V) Σ_v ||μ_n - z_{n,v}||², divided by K as its code does.
    proj = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(8))
    views, batch, dim = proj.shape
    expected = 0.0
    for n in range(batch):
        centre = proj[:2, n].mean(dim=0)
        expected += sum(float((centre - proj[v, n]).square().sum()) for v in range(views)) / views
    expected /= batch * dim
    assert float(prediction_loss(proj, num_global=2)) == pytest.approx(expected, rel=1e-6)


def test_prediction_invariances():
    proj = torch.randn(6, 8, 5, generator=torch.Generator().manual_seed(9))
    base = prediction_loss(proj, num_global=2)
    assert float(prediction_loss(proj[:1].expand(6, -1, -1), num_global=2)) == 0.0  # identical views
    shift = torch.randn(8, 5) * 10  # a translation per sample, common to its views
    assert float(prediction_loss(proj + shift, num_global=2)) == pytest.approx(float(base), rel=1e-5)
    assert float(prediction_loss(3.0 * proj, num_global=2)) == pytest.approx(9.0 * float(base), rel=1e-6)


def test_prediction_gradient_reaches_the_global_views():
    proj = torch.randn(4, 3, 2, requires_grad=True)
    prediction_loss(proj, num_global=2).backward()
    assert bool(proj.grad[:2].abs().sum() > 0)  # no stop-gradient on the centres


# ---- the module, precision ----


def test_module_combines_the_parts():
    proj = _embeddings(views=4, n=64, dim=8, seed=10)
    loss = LeJEPALoss(lam=0.2, num_directions=32)
    total, parts = loss(proj, num_global=2, step=3)
    assert set(parts) == {"prediction", "sigreg"}
    assert float(parts["prediction"]) == pytest.approx(float(prediction_loss(proj, 2)))
    assert float(parts["sigreg"]) == pytest.approx(float(sigreg(proj, 3, num_directions=32)))
    assert float(total) == pytest.approx(0.8 * float(parts["prediction"]) + 0.2 * float(parts["sigreg"]))
    assert LeJEPALoss().lam == 0.05


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_float32_loss_and_finite_gradients(dtype):
    proj = (_embeddings(views=3, n=64, dim=8, seed=11) * 4.0).to(dtype).requires_grad_(True)
    total, parts = LeJEPALoss(num_directions=32)(proj, num_global=2, step=0)
    assert total.dtype == parts["sigreg"].dtype == parts["prediction"].dtype == torch.float32
    total.backward()
    assert proj.grad.dtype == dtype and bool(torch.isfinite(proj.grad).all())
    # The cast is exact, so the value is the float32 computation on the same numbers.
    reference, _ = LeJEPALoss(num_directions=32)(proj.detach().float(), num_global=2, step=0)
    assert float(total.detach()) == pytest.approx(float(reference), rel=1e-6)


def test_autocast_is_disabled_inside():
    proj = _embeddings(views=2, n=64, dim=8, seed=12)
    plain, _ = LeJEPALoss(num_directions=32)(proj, num_global=1, step=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast, _ = LeJEPALoss(num_directions=32)(proj, num_global=1, step=0)
    assert cast.dtype == torch.float32
    assert float(cast) == pytest.approx(float(plain), rel=1e-6)


def test_bad_arguments_raise_one_line_errors():
    proj = torch.zeros(3, 4, 5)
    with pytest.raises(EvalkitError, match="num_global"):
        prediction_loss(proj, num_global=4)
    with pytest.raises(EvalkitError, match=r"\[V, B, K\]"):
        prediction_loss(proj[0], num_global=1)
    with pytest.raises(EvalkitError, match="odd"):
        sigreg(proj, step=0, num_knots=16)
    with pytest.raises(EvalkitError, match="lam"):
        LeJEPALoss(lam=1.5)
    with pytest.raises(EvalkitError, match="t_max"):
        epps_pulley(proj, t_max=0.0)
    with pytest.raises(EvalkitError, match="N >= 1"):
        epps_pulley(torch.zeros(0, 3))


# ---- DDP: two gloo processes, each with part of the batch ----


def _ddp_worker(rank: int, world_size: int, root: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{root}/rendezvous", rank=rank, world_size=world_size)
    try:
        data = torch.load(f"{root}/data.pt")
        lo, hi = data["bounds"][rank]
        local = data["proj"][:, lo:hi].clone().requires_grad_(True)
        value = sigreg(local, step=5, num_directions=32)
        value.backward()
        torch.save({"value": value.detach(), "grad": local.grad}, f"{root}/rank{rank}.pt")
        # Both ranks done with their collectives before either tears gloo down: a rank that destroys the group
        # while the other's backward all-reduce is still finishing can abort in gloo's destructor ("terminate
        # called without an active exception", seen once under CI load).
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_ddp_pools_the_characteristic_function_across_ranks(tmp_path: Path):
    """Two ranks holding 40 and 24 of 64 samples get the single-process value on all 64.

    Each rank's gradient is twice its rows of the single-process gradient. The backward of the
    all-reduce sums over ranks, and DDP's gradient averaging divides by the world size again.
    """
    proj = _embeddings(views=2, n=64, dim=8, seed=13)
    bounds = [(0, 40), (40, 64)]  # unequal local batches: N must be the global count, not 2 × local
    torch.save({"proj": proj, "bounds": bounds}, tmp_path / "data.pt")
    whole = proj.clone().requires_grad_(True)
    expected = sigreg(whole, step=5, num_directions=32)
    expected.backward()

    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    for rank, (lo, hi) in enumerate(bounds):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert float(got["value"]) == pytest.approx(float(expected.detach()), rel=1e-5)
        torch.testing.assert_close(got["grad"], 2 * whole.grad[:, lo:hi], rtol=1e-4, atol=1e-7)
