"""The pretraining objectives registry and SimCLR's NT-Xent, checked against a direct transcription."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from evalkit.errors import EvalkitError
from evalkit.pretrain.lejepa_loss import LeJEPALoss
from evalkit.pretrain.objectives import create_objective, objective_names
from evalkit.pretrain.simclr_loss import SimCLRLoss, nt_xent


def _nt_xent_by_hand(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """SimCLR's loss as the paper writes it (Algorithm 1): 2N anchors, one positive each, loops and all."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        sims = [math.exp(float(z[i] @ z[k]) / tau) for k in range(2 * n) if k != i]
        total += -math.log(math.exp(float(z[i] @ z[j]) / tau) / sum(sims))
    return total / (2 * n)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_with_two_views_is_simclrs_loss(tau):
    g = torch.Generator().manual_seed(0)
    proj = torch.randn(2, 6, 5, generator=g)
    assert float(nt_xent(proj, tau)) == pytest.approx(_nt_xent_by_hand(proj[0], proj[1], tau), rel=1e-5)


def test_nt_xent_with_more_views_averages_over_every_positive():
    g = torch.Generator().manual_seed(1)
    proj = torch.randn(3, 4, 8, generator=g)
    z = F.normalize(proj.reshape(12, 8).double(), dim=1)
    image = torch.arange(4).repeat(3)
    expected = 0.0
    for i in range(12):
        others = [k for k in range(12) if k != i]
        log_norm = math.log(sum(math.exp(float(z[i] @ z[k]) / 0.2) for k in others))
        positives = [k for k in others if image[k] == image[i]]
        expected += sum(log_norm - float(z[i] @ z[k]) / 0.2 for k in positives) / len(positives)
    assert float(nt_xent(proj, 0.2)) == pytest.approx(expected / 12, rel=1e-5)


def test_nt_xent_is_lowest_when_views_agree_and_images_differ():
    eye = torch.eye(4)
    aligned = torch.stack([eye, eye])
    shuffled = torch.stack([eye, eye[[1, 2, 3, 0]]])
    assert float(nt_xent(aligned, 0.1)) < float(nt_xent(shuffled, 0.1))


def test_the_registry_builds_each_objective_by_name_and_refuses_unknown_ones():
    assert {"lejepa", "simclr"} <= set(objective_names())
    assert isinstance(create_objective("simclr", temperature=0.3), SimCLRLoss)
    lejepa = create_objective("lejepa", lam=0.1)
    assert isinstance(lejepa, LeJEPALoss) and lejepa.settings()["lam"] == 0.1
    with pytest.raises(EvalkitError, match="simclr"):
        create_objective("byol")
    with pytest.raises(EvalkitError, match="temperature must be positive"):
        SimCLRLoss(temperature=0)


def test_objectives_share_one_contract():
    proj = torch.randn(4, 8, 16, requires_grad=True)
    for name in objective_names():
        total, parts = create_objective(name)(proj, 2, 0)
        assert total.ndim == 0 and torch.isfinite(total) and parts
        total.backward()
