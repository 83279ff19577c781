"""The published protocol rules (kaiko Table VI, eva) as data, and that the probe really applies them."""

from __future__ import annotations

import math

import pytest
import torch

import evalkit.heads.linear as linear

from evalkit.heads import PROTOCOLS, LinearProbeConfig, fit_linear_probe
from evalkit.heads.protocols import cosine_schedule


def test_sgd_kaiko_small_and_large_datasets():
    p = PROTOCOLS.get("sgd_kaiko")
    assert (p.optimizer, p.momentum, p.nesterov, p.weight_decay) == ("sgd", 0.9, True, 0.0)
    for n in (10, 2_175, 9_999):
        assert p.batch_size(n) == 256
        assert p.lr(p.batch_size(n)) == pytest.approx(0.000625)
    for n in (10_000, 100_000, 262_144):
        assert p.batch_size(n) == 4096
        assert p.lr(p.batch_size(n)) == pytest.approx(0.01)
    assert p.lr(512) == pytest.approx(0.00125)  # linear scaling for an overridden batch size


def test_adamw_eva():
    p = PROTOCOLS.get("adamw_eva")
    assert p.optimizer == "adamw"
    for n in (10, 9_999, 100_000):
        assert p.batch_size(n) == 256
        assert p.lr(p.batch_size(n)) == pytest.approx(3e-4)


def test_the_step_budget_is_12500():
    assert LinearProbeConfig().max_steps == 12_500
    assert LinearProbeConfig().n_runs == 5


PATIENCE_CASES = [  # protocol, n_train, batch size, max_steps
    ("sgd_kaiko", 100_000, 4096, 12_500),  # CRC: 25 steps/epoch -> 500 epochs -> 25
    ("sgd_kaiko", 262_144, 4096, 12_500),  # PCam: 64 steps/epoch -> 196 epochs -> 9.8
    ("sgd_kaiko", 2_000, 256, 12_500),  # 8 steps/epoch -> 1563 epochs -> 78.15
    ("adamw_eva", 400, 256, 12_500),  # 2 steps/epoch -> 6250 epochs -> 312.5
    ("adamw_eva", 256, 256, 400),  # 400 epochs -> 20
    ("adamw_eva", 256, 256, 10),  # 10 epochs -> at least one epoch
]


@pytest.mark.parametrize("name,n_train,batch,max_steps", PATIENCE_CASES)
def test_patience_is_a_twentieth_of_max_epochs(name, n_train, batch, max_steps):
    """DESIGN.md: patience = max_epochs / 20 for sgd_kaiko, and adamw_eva has "the same early stopping"."""
    max_epochs = math.ceil(max_steps / math.ceil(n_train / batch))
    exact = max_epochs / 20
    allowed = {max(1, math.floor(exact)), max(1, math.ceil(exact))}  # either rounding of a fraction
    assert PROTOCOLS.get(name).patience(n_train, batch, max_steps) in allowed


def _data(n: int, dim: int = 8, classes: int = 3):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    return torch.randn(n, dim, generator=g) + 3 * torch.nn.functional.one_hot(y, dim).float(), y


class _Spy:
    """Records the optimiser the probe builds, the lr of each step and the rows of each mini-batch."""

    def __init__(self, monkeypatch):
        self.optimizers: list[str] = []
        self.lrs: list[float] = []
        self.batch_rows: list[list[int]] = []
        spy = self
        base = linear._Optimizer

        class Recording(base):  # type: ignore[misc, valid-type]
            def __init__(self, protocol):
                super().__init__(protocol)
                spy.optimizers.append(protocol)

            def step(self, params, grad, lr):
                spy.lrs.append(lr)
                return super().step(params, grad, lr)

        monkeypatch.setattr(linear, "_Optimizer", Recording)
        gradient = linear._gradient

        def recording_gradient(params, rows, labels, chunk):
            spy.batch_rows.append([labels.shape[1]] * labels.shape[0])  # per step, each run's rows
            return gradient(params, rows, labels, chunk)

        monkeypatch.setattr(linear, "_gradient", recording_gradient)


@pytest.mark.parametrize("protocol,optimizer,lr,batch", [
    ("sgd_kaiko", "sgd", 0.000625, 256),
    ("adamw_eva", "adamw", 3e-4, 256),
])
def test_the_probe_uses_the_protocol_small_dataset(monkeypatch, protocol, optimizer, lr, batch):
    spy = _Spy(monkeypatch)
    train, val = _data(600), _data(60)
    result = fit_linear_probe(train, val, 3, LinearProbeConfig(protocol=protocol, n_runs=2, max_steps=6, seed=0),
                              {"val": val})
    assert [o.optimizer for o in spy.optimizers] == [optimizer]
    used = spy.optimizers[0]
    if optimizer == "sgd":
        assert (used.momentum, used.nesterov, used.weight_decay) == (0.9, True, 0.0)
    else:
        assert used.weight_decay == 0.01
    assert spy.lrs[0] == pytest.approx(lr)
    # 2 runs of 256 rows per step; the last mini-batch of an epoch holds the rest (600 = 256 + 256 + 88).
    assert spy.batch_rows[:6] == [[batch] * 2, [batch] * 2, [88] * 2, [batch] * 2, [batch] * 2, [88] * 2]
    assert result.settings["batch_size"] == batch and result.settings["lr"] == pytest.approx(lr)
    assert result.settings["steps_run"] == 6


def test_the_probe_uses_the_large_dataset_rule(monkeypatch):
    spy = _Spy(monkeypatch)
    train, val = _data(10_000), _data(90)
    result = fit_linear_probe(train, val, 3, LinearProbeConfig(protocol="sgd_kaiko", n_runs=1, max_steps=2, seed=0),
                              {"val": val})
    assert spy.lrs[0] == pytest.approx(0.01)
    assert spy.batch_rows[:2] == [[4096], [4096]]
    assert result.settings["batch_size"] == 4096
    assert result.settings["patience_epochs"] == 1


def test_batch_size_override_scales_the_lr_and_lr_override_wins():
    train, val = _data(300), _data(30)
    result = fit_linear_probe(train, val, 3, LinearProbeConfig(n_runs=1, max_steps=3, batch_size=128), {"val": val})
    assert result.settings["lr"] == pytest.approx(0.01 * 128 / 4096)
    result = fit_linear_probe(train, val, 3, LinearProbeConfig(n_runs=1, max_steps=3, batch_size=128, lr=0.5),
                              {"val": val})
    assert result.settings["lr"] == 0.5


def test_the_lr_follows_a_cosine_to_zero_without_warmup(monkeypatch):
    spy = _Spy(monkeypatch)
    train, val = _data(800), _data(30)  # one epoch of 8 steps: early stopping cannot cut it short
    fit_linear_probe(train, val, 3, LinearProbeConfig(n_runs=1, max_steps=8, batch_size=100, lr=1.0), {"val": val})

    assert spy.lrs == pytest.approx([0.5 * (1 + math.cos(math.pi * s / 8)) for s in range(8)])
    assert cosine_schedule(1.0, 8) == spy.lrs  # the printable schedule is the one used
