"""The LeJEPA pretraining loss: views predict their sample's centre, and SIGReg prevents collapse.

LeJEPA (Balestriero & LeCun 2025, "LeJEPA: Provable and Scalable Self-Supervised Learning
Without the Heuristics", arXiv:2511.08544) has no teacher, no stop-gradient and no predictor
network. What stops the embeddings from collapsing is SIGReg, a goodness-of-fit test that
pulls them towards an isotropic Gaussian. This module is therefore the whole objective:

    total = (1 - λ) · prediction + λ · SIGReg,        λ = 0.05 by default

Every definition was checked against the code listings in the paper (its ``SIGReg`` and
``LeJEPA`` functions) and against the authors' reference code, github.com/rbalestr-lab/lejepa
(``lejepa/univariate/epps_pulley.py``, ``lejepa/multivariate/slicing.py``, ``MINIMAL.md``):

- **prediction**: the centre μ_n of sample n is the mean of its V_g *global* views'
  embeddings. The term is the mean of (z_{n,v} - μ_n)² over every view v (global and local),
  every sample n and every one of the K coordinates. The paper's equation writes a squared
  norm, ||μ_n - z_{n,v}||²₂, which sums over K. Its code listing and the reference code take
  ``.square().mean()``, which is 1/K of that. The paper's λ goes with its code, so we follow
  the code: with the equation's sum, λ would act K times weaker.
- **SIGReg** ("sketched isotropic Gaussian regularisation"): the embeddings of each view are
  projected onto M random unit directions. The directions are drawn anew each step, from a
  generator seeded by the step, so every rank draws the same ones. Each 1-D projection gets an
  Epps–Pulley statistic against N(0, 1), and these are averaged over directions and views.
  M = 1024 follows the paper's experiments and the reference README (the paper's listing
  defaults to 256).
- **Epps–Pulley**: ``EP = N ∫ |φ_N(t) - e^{-t²/2}|² w(t) dt`` with ``w(t) = e^{-t²/2}``.
  Here ``φ_N(t) = mean_n e^{i t x_n}`` is the empirical characteristic function (ECF), and
  N is the global batch size (the local batch size times the world size, in the paper's
  listing). Scaling by N gives the statistic an O(1) value, independent of N, when the
  samples really are N(0, 1): its mean is ``∫ (1 - e^{-t²}) w(t) dt`` (1.059 on [-5, 5]).
  A collapsed batch gets a value that grows with N.

Quadrature. The real part of the ECF is even in t and the imaginary part is odd, so the
integrand is even. The trapezoid rule on ``linspace(-t_max, t_max, num_knots)`` (``num_knots``
odd, step ``h = 2 t_max / (num_knots - 1)``) therefore needs only its non-negative knots,
weighted h at t = 0 and at t_max and 2h in between. Our default is [-5, 5] with 33 knots
(h = 0.3125, 17 of them evaluated). The interval is the paper's; the 17 evaluated knots are
what the reference code evaluates.

Against a float64 integral on 20,001 knots, the default rule is within 1e-5 relative for
N(0, 1), uniform, Laplace, N(0, 4) and collapsed samples. The two published rules are each
one argument away:

- the paper's, 17 knots on [-5, 5] (``t_max=5, num_knots=17``, h = 0.625): within 1e-4 for
  near-Gaussian samples, but it aliases for wider ones (off by up to 1.4% for unit-variance
  Laplace samples and 2% for N(0, 4));
- the reference code's, 17 knots on [0, 3] (``t_max=3, num_knots=33``): it drops the tail
  beyond |t| = 3, and it is up to 1.3e-3 off even on [-3, 3].

On N(0, 1) samples all three agree to within 0.3%, so λ carries over. A wrong step h
would rescale SIGReg, and so λ, without any error.

DDP. When ``torch.distributed`` is initialised, the ECF is computed from the cos and sin sums
of all ranks together. The sums and the sample count go through one differentiable
``all_reduce`` (SUM), so the result is exact even when local batch sizes differ. The
backward of that all-reduce sums the gradient over ranks. Each rank's gradient is then
world_size times its share of the global gradient, and DDP's gradient averaging divides that
factor back out. Every rank must therefore call SIGReg the same number of times per step.

Precision. Every term is computed in float32, with autocast disabled inside, even for float16
or bfloat16 inputs. bfloat16 would round ``t·x`` near 15 (t = 5, x = 3) to a multiple of
2^-4 = 0.06 rad. That is as large as the ECF's deviation from e^{-t²/2} at a batch of
256 (about 1/√N). If TF32 matmuls are enabled on the GPU, the projection onto the directions
still runs in TF32.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from evalkit.errors import EvalkitError
from evalkit.pretrain.objectives import OBJECTIVES, Objective

LEJEPA_LAMBDA = 0.05  # λ: the paper's recommendation; the reference repo's scripts/launch_*_ablation.md use it
SIGREG_DIRECTIONS = 1024  # M: the paper's experiments; the reference README's num_slices=1024
EPPS_PULLEY_T_MAX = 5.0  # the integral runs over [-T, T], as in the paper's listing (t = linspace(-5, 5, 17))
EPPS_PULLEY_KNOTS = 33  # trapezoid knots on [-T, T]; its 17 non-negative ones are evaluated (the reference code's 17)


def _check_quadrature(t_max: float, num_knots: int) -> None:
    if not t_max > 0:
        raise EvalkitError(f"t_max must be positive, got {t_max}")
    if num_knots < 3 or num_knots % 2 == 0:
        raise EvalkitError(f"num_knots must be odd and at least 3 (t = 0 must be a knot), got {num_knots}")


def _quadrature(t_max: float, num_knots: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The non-negative knots ``t`` of ``linspace(-t_max, t_max, num_knots)`` and their weights.

    With an even ``f``, ``Σ_k weights_k f(t_k)`` equals the trapezoid rule for
    ``∫_{-t_max}^{t_max} f(t) e^{-t²/2} dt`` on all ``num_knots`` knots. The Epps–Pulley
    integrand is even.
    """
    t = torch.linspace(0.0, t_max, (num_knots + 1) // 2, dtype=torch.float32, device=device)
    h = 2.0 * t_max / (num_knots - 1)
    weights = torch.full_like(t, 2.0 * h)
    weights[0] = weights[-1] = h
    return t, weights * torch.exp(-0.5 * t.square())


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce_sums(sums: Tensor, n_local: int) -> tuple[Tensor, Tensor]:
    """``sums`` and the sample count summed over all ranks in one collective, gradients flowing to ``sums``."""
    from torch.distributed.nn.functional import all_reduce

    packed = torch.cat([sums.flatten(), sums.new_tensor([float(n_local)])])
    packed = all_reduce(packed, op=dist.ReduceOp.SUM)
    return packed[:-1].view_as(sums), packed[-1].detach()


def epps_pulley(x: Tensor, t_max: float = EPPS_PULLEY_T_MAX, num_knots: int = EPPS_PULLEY_KNOTS) -> Tensor:
    """Epps–Pulley statistic of each column of ``x`` [..., N, M] against N(0, 1), as [..., M] float32.

    Each column is one set of N univariate samples. The statistic is the global N times the
    e^{-t²/2}-weighted squared distance between the columns' ECF and e^{-t²/2}, integrated over
    [-t_max, t_max] (see the module docstring). Under DDP the ECF pools every rank's samples.
    """
    if x.dim() < 2 or x.shape[-2] < 1:
        raise EvalkitError(f"expected samples of shape [..., N, M] with N >= 1, got shape {list(x.shape)}")
    _check_quadrature(t_max, num_knots)
    with torch.autocast(device_type=x.device.type, enabled=False):
        t, weights = _quadrature(t_max, num_knots, x.device)
        xt = x.float().unsqueeze(-1) * t  # [..., N, M, T]
        sums = torch.stack([xt.cos().sum(dim=-3), xt.sin().sum(dim=-3)])  # [2, ..., M, T]
        n: int | Tensor = x.shape[-2]
        if _distributed():
            sums, n = _all_reduce_sums(sums, x.shape[-2])
        cos_mean, sin_mean = (sums / n).unbind(0)
        err = (cos_mean - torch.exp(-0.5 * t.square())).square() + sin_mean.square()
        return n * (err @ weights)


def random_directions(dim: int, num_directions: int, step: int, device: torch.device | str | None = None) -> Tensor:
    """``num_directions`` unit vectors in R^dim as the columns of a [dim, num_directions] float32 tensor.

    A generator on ``device`` is seeded with ``step``, so every rank (and every call with the
    same step) gets the same directions, and each step gets new ones, as in the paper's
    listing. Different device types (CPU, CUDA) draw different directions for the same step.
    """
    if dim < 1 or num_directions < 1:
        raise EvalkitError(f"expected dim and num_directions of at least 1, got {dim} and {num_directions}")
    device = torch.device("cpu" if device is None else device)
    generator = torch.Generator(device=device).manual_seed(int(step))
    directions = torch.randn(dim, num_directions, generator=generator, device=device, dtype=torch.float32)
    return directions / directions.norm(dim=0, keepdim=True)


def sigreg(
    proj: Tensor,
    step: int,
    num_directions: int = SIGREG_DIRECTIONS,
    t_max: float = EPPS_PULLEY_T_MAX,
    num_knots: int = EPPS_PULLEY_KNOTS,
) -> Tensor:
    """SIGReg of embeddings [N, K] or of several views [V, N, K], as a float32 scalar.

    Each view's embeddings are projected onto ``num_directions`` random unit directions, the
    same for all views and drawn from ``step``. The projections' Epps–Pulley statistics are
    averaged over directions and views. The value is about 1 for i.i.d. N(0, I) embeddings and
    grows with N for collapsed ones.
    """
    if proj.dim() not in (2, 3) or proj.shape[-2] < 1 or proj.shape[-1] < 1:
        raise EvalkitError(f"expected embeddings of shape [N, K] or [V, N, K], got shape {list(proj.shape)}")
    with torch.autocast(device_type=proj.device.type, enabled=False):
        directions = random_directions(proj.shape[-1], num_directions, step, proj.device)
        return epps_pulley(proj.float() @ directions, t_max, num_knots).mean()


def _check_views(proj: Tensor, num_global: int) -> None:
    if proj.dim() != 3 or min(proj.shape) < 1:
        raise EvalkitError("expected projected embeddings of shape [V, B, K] (views first), "
                           f"got shape {list(proj.shape)}")
    if not 1 <= num_global <= proj.shape[0]:
        raise EvalkitError(f"num_global must be between 1 and the {proj.shape[0]} views, got {num_global}")


def prediction_loss(proj: Tensor, num_global: int) -> Tensor:
    """Mean squared difference between every view's embedding and its sample's centre, as a float32 scalar.

    ``proj`` [V, B, K] holds all V views of the same B samples, the ``num_global`` global
    views first. The centre of a sample is the mean of its global views; the mean runs over
    views, samples and coordinates (the paper's code; its equation's squared norm is K times
    this). No stop-gradient: the centres get gradients too, as in the paper. The term is
    unchanged by a translation common to all views of a sample, and scales with the square
    of a common scale factor.
    """
    _check_views(proj, num_global)
    with torch.autocast(device_type=proj.device.type, enabled=False):
        z = proj.float()
        return (z - z[:num_global].mean(dim=0)).square().mean()


@OBJECTIVES.register("lejepa")
class LeJEPALoss(Objective):
    """``(1 - lam) · prediction + lam · SIGReg`` over projected embeddings of shape [V, B, K].

    Stack the views as ``torch.cat([global_proj, local_proj])``, with the global views first.
    ``forward(proj, num_global, step)`` returns the total loss and detached parts for logging,
    ``{"prediction": ..., "sigreg": ...}``. ``step`` seeds the SIGReg directions. Pass the
    optimiser step, identical on every rank, so the directions change once per step.

    Args:
        lam: the weight λ of SIGReg, in [0, 1]; the paper recommends 0.05.
        num_directions: random directions M per step (1024 in the paper's experiments).
        num_knots: trapezoid knots on [-t_max, t_max], odd (33: 17 evaluated; see the module docstring).
        t_max: the integral runs over [-t_max, t_max] (5, as in the paper).
    """

    name = "lejepa"

    def __init__(
        self,
        lam: float = LEJEPA_LAMBDA,
        num_directions: int = SIGREG_DIRECTIONS,
        num_knots: int = EPPS_PULLEY_KNOTS,
        t_max: float = EPPS_PULLEY_T_MAX,
    ) -> None:
        super().__init__()
        if not 0.0 <= lam <= 1.0:
            raise EvalkitError(f"lam must be in [0, 1], got {lam}")
        if num_directions < 1:
            raise EvalkitError(f"num_directions must be at least 1, got {num_directions}")
        _check_quadrature(t_max, num_knots)
        self.lam = lam
        self.num_directions = num_directions
        self.num_knots = num_knots
        self.t_max = t_max

    def forward(self, proj: Tensor, num_global: int, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        prediction = prediction_loss(proj, num_global)
        regulariser = sigreg(proj, step, self.num_directions, self.t_max, self.num_knots)
        total = (1.0 - self.lam) * prediction + self.lam * regulariser
        return total, {"prediction": prediction.detach(), "sigreg": regulariser.detach()}

    def extra_repr(self) -> str:
        return f"lam={self.lam}, num_directions={self.num_directions}, num_knots={self.num_knots}, t_max={self.t_max}"
