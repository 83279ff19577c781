"""The published protocol rules (kaiko Table VI, eva) as data, and that the probe really applies them."""

from __future__ import annotations

import math

import pytest
import torch

import evalkit.heads.linear as linear

from evalkit.heads import PROTOCOLS, LinearProbeConfig, fit_linear_probe


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
    """Records the optimizer the probe builds and the size of each training mini-batch."""

    def __init__(self, monkeypatch):
        self.optimizers: list[tuple[str, float, dict]] = []
        self.batch_rows: list[int] = []
        spy = self
        for name in ("SGD", "AdamW"):
            base = getattr(torch.optim, name)

            class Recording(base):  # type: ignore[misc, valid-type]
                def __init__(self, *args, **kwargs):
                    super().__init__(*args, **kwargs)
                    spy.optimizers.append((type(self).__mro__[1].__name__, self.defaults["lr"], dict(self.defaults)))

            monkeypatch.setattr(torch.optim, name, Recording)
        gradient = linear._cross_entropy_grad

        def recording_grad(logits, target):
            spy.batch_rows.append(logits.shape[0])  # one call per run and step
            return gradient(logits, target)

        monkeypatch.setattr(linear, "_cross_entropy_grad", recording_grad)


@pytest.mark.parametrize("protocol,optimizer,lr,batch", [
    ("sgd_kaiko", "SGD", 0.000625, 256),
    ("adamw_eva", "AdamW", 3e-4, 256),
])
def test_the_probe_uses_the_protocol_small_dataset(monkeypatch, protocol, optimizer, lr, batch):
    spy = _Spy(monkeypatch)
    train, val = _data(600), _data(60)
    result = fit_linear_probe(train, val, 3, LinearProbeConfig(protocol=protocol, n_runs=2, max_steps=6, seed=0),
                              {"val": val})
    assert [o[0] for o in spy.optimizers] == [optimizer]
    assert spy.optimizers[0][1] == pytest.approx(lr)
    if optimizer == "SGD":
        assert spy.optimizers[0][2]["momentum"] == 0.9 and spy.optimizers[0][2]["nesterov"] is True
        assert spy.optimizers[0][2].get("weight_decay", 0.0) == 0.0
    # 2 runs of 256 rows per step; the last mini-batch of an epoch holds the rest (600 = 256 + 256 + 88).
    assert spy.batch_rows[:6] == [batch, batch, batch, batch, 88, 88]
    assert result.settings["batch_size"] == batch and result.settings["lr"] == pytest.approx(lr)
    assert result.settings["steps_run"] == 6


def test_the_probe_uses_the_large_dataset_rule(monkeypatch):
    spy = _Spy(monkeypatch)
    train, val = _data(10_000), _data(90)
    result = fit_linear_probe(train, val, 3, LinearProbeConfig(protocol="sgd_kaiko", n_runs=1, max_steps=2, seed=0),
                              {"val": val})
    assert spy.optimizers[0][1] == pytest.approx(0.01)
    assert spy.batch_rows[:2] == [4096, 4096]
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
    seen: list[float] = []
    step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    train, val = _data(800), _data(30)  # one epoch of 8 steps: early stopping cannot cut it short
    fit_linear_probe(train, val, 3, LinearProbeConfig(n_runs=1, max_steps=8, batch_size=100, lr=1.0), {"val": val})

    assert seen == pytest.approx([0.5 * (1 + math.cos(math.pi * s / 8)) for s in range(8)])
