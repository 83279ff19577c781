"""The batched linear probe: seeded, runs independent of each other, early stopping keeps the best epoch."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import evalkit.heads.linear as linear
from reference_probe import reference_fit
from evalkit.errors import EvalkitError
from evalkit.heads import PROTOCOLS, LinearProbeConfig, fit_linear_probe
from evalkit.heads.protocols import cosine_schedule, cosine_to_zero
from evalkit.metrics import CLASSIFICATION_METRICS


def blobs(n: int, classes: int = 4, dim: int = 16, spread: float = 1.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(42)) * 2
    y = torch.arange(n) % classes
    return centers[y] + spread * torch.randn(n, dim, generator=g), y


def _fit(cfg: LinearProbeConfig, train, val, test=None):
    evaluate = {"val": val} | ({"test": test} if test is not None else {})
    return fit_linear_probe(train, val, int(train[1].max()) + 1, cfg, evaluate)


def test_result_shape():
    train, val, test = blobs(200), blobs(40, seed=1), blobs(40, seed=2)
    result = _fit(LinearProbeConfig(n_runs=3, max_steps=30, seed=4), train, val, test)
    assert set(result.metrics) == {"val", "test"}
    for split in result.metrics.values():
        assert list(split) == list(CLASSIFICATION_METRICS)
        assert all(len(values) == 3 for values in split.values())
    assert len(result.best_epochs) == len(result.stopped_epochs) == 3
    assert result.settings["seeds"] == [4, 5, 6]
    assert result.seconds >= 0


def test_learns_separable_data():
    train, val = blobs(400, spread=0.5), blobs(100, spread=0.5, seed=1)
    result = _fit(LinearProbeConfig(n_runs=2, max_steps=300, seed=0), train, val)
    assert min(result.metrics["val"]["balanced_accuracy"]) > 0.97
    assert min(result.metrics["val"]["auroc_macro"]) > 0.99


def test_chance_on_random_labels():
    train, val = blobs(400), blobs(400, seed=1)
    shuffled = (val[0], val[1][torch.randperm(400, generator=torch.Generator().manual_seed(0))])
    result = _fit(LinearProbeConfig(n_runs=2, max_steps=200, seed=0), train, shuffled)
    assert max(result.metrics["val"]["balanced_accuracy"]) < 0.5


@pytest.mark.parametrize("protocol", ["sgd_kaiko", "adamw_eva"])
def test_same_seed_same_numbers(protocol):
    train, val, test = blobs(300, spread=3.0), blobs(60, spread=3.0, seed=1), blobs(60, spread=3.0, seed=2)
    cfg = LinearProbeConfig(protocol=protocol, n_runs=3, max_steps=120, seed=7, lr=0.05)
    a, b = _fit(cfg, train, val, test), _fit(cfg, train, val, test)
    assert a.metrics == b.metrics
    assert a.best_epochs == b.best_epochs and a.stopped_epochs == b.stopped_epochs
    other = _fit(LinearProbeConfig(protocol=protocol, n_runs=3, max_steps=120, seed=8, lr=0.05), train, val, test)
    assert other.metrics != a.metrics


@pytest.mark.parametrize("protocol", ["sgd_kaiko", "adamw_eva"])
def test_batched_runs_are_independent(protocol):
    """Run r of an R-run fit is the 1-run fit with seed + r: fitting runs together changes nothing."""
    train, val, test = blobs(300, spread=3.0), blobs(60, spread=3.0, seed=1), blobs(60, spread=3.0, seed=2)
    kwargs = dict(protocol=protocol, max_steps=150, lr=0.05, batch_size=64)
    together = _fit(LinearProbeConfig(n_runs=3, seed=10, **kwargs), train, val, test)
    assert len(set(together.metrics["test"]["f1_macro"])) > 1 or len(set(together.best_epochs)) > 1, \
        "the runs should differ, or this test proves nothing"
    for r in range(3):
        alone = _fit(LinearProbeConfig(n_runs=1, seed=10 + r, **kwargs), train, val, test)
        assert together.best_epochs[r] == alone.best_epochs[0]
        assert together.stopped_epochs[r] == alone.stopped_epochs[0]
        for split, metrics in together.metrics.items():
            for name, values in metrics.items():
                assert values[r] == pytest.approx(alone.metrics[split][name][0], abs=1e-6), (split, name, r)


def _textbook_probe(train, val, num_classes: int, protocol: str, seed: int, lr: float, batch_size: int,
                    max_steps: int, patience: int):
    """One run the plain way: nn.Linear, autograd cross-entropy, torch's optimiser and
    CosineAnnealingLR, a reshuffle per epoch, early stopping on validation balanced accuracy.
    Returns the best epoch and the validation probabilities of its weights."""
    from sklearn.metrics import balanced_accuracy_score

    (x, y), (vx, vy) = train, val
    torch.manual_seed(seed)
    layer = torch.nn.Linear(x.shape[1], num_classes)  # evalkit draws the same numbers from its own generator
    order = torch.Generator().manual_seed(seed)
    torch.empty(num_classes * x.shape[1] + num_classes).uniform_(generator=order)  # advance past those draws
    if protocol == "sgd_kaiko":
        optimizer = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=0.0)
    else:
        optimizer = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_steps)
    step, epoch, best, best_epoch, best_probs, waited = 0, 0, -1.0, -1, None, 0
    while step < max_steps:
        permutation = torch.randperm(len(x), generator=order)
        for lo in range(0, len(x), batch_size):
            rows = permutation[lo:lo + batch_size]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(layer(x[rows]), y[rows]).backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step >= max_steps:
                break
        with torch.no_grad():
            probs = layer(vx).softmax(dim=-1)
        score = balanced_accuracy_score(vy.numpy(), probs.argmax(dim=1).numpy())
        if score > best:
            best, best_epoch, best_probs, waited = score, epoch, probs, 0
        else:
            waited += 1
            if waited >= patience:
                break
        epoch += 1
    return best_epoch, best_probs


@pytest.mark.parametrize("protocol", ["sgd_kaiko", "adamw_eva"])
def test_the_batched_probe_is_the_textbook_loop_per_run(protocol):
    """The closed-form gradients over stacked runs change nothing against autograd and torch's own
    optimiser, scheduler and early stopping, run by run."""
    train, val = blobs(300, classes=3, dim=8, spread=3.0), blobs(100, classes=3, dim=8, spread=3.0, seed=1)
    cfg = LinearProbeConfig(protocol=protocol, n_runs=2, max_steps=400, lr=0.05, batch_size=32, seed=5)
    result = _fit(cfg, train, val)
    assert result.settings["steps_run"] < 400, "early stopping should end this fit, or the test proves less"
    for r in range(2):
        best_epoch, probs = _textbook_probe(train, val, 3, protocol, 5 + r, 0.05, 32, 400,
                                            result.settings["patience_epochs"])
        assert result.best_epochs[r] == best_epoch
        torch.testing.assert_close(result.probs["val"][r], probs, atol=1e-5, rtol=0)


def test_early_stopping_restores_the_best_epoch():
    """Train data whose fit, once converged, gets the validation data wrong.

    The training labels follow ``2B - A`` (A and B almost collinear), so gradient descent first
    puts positive weight on A (val accuracy 1: val labels follow A) and later negative weight
    on A (val accuracy 0). The reported numbers must be those of the best epoch.
    """
    g = torch.Generator().manual_seed(0)
    n = 512
    y = torch.arange(n) % 2
    s = (2 * y - 1).float()
    b = s + 0.5 * torch.randn(n, generator=g)
    train = (torch.stack([2 * b - 0.3 * s, b], dim=1), y)
    vy = torch.arange(100) % 2
    val = (torch.stack([(2 * vy - 1).float(), torch.zeros(100)], dim=1), vy)

    result = fit_linear_probe(train, val, 2, LinearProbeConfig(n_runs=2, max_steps=3000, seed=0, lr=1.0, batch_size=64),
                              {"val": val})
    for r in range(2):
        per_epoch = result.val_scores[r]  # what early stopping saw, epoch by epoch
        assert len(per_epoch) == result.stopped_epochs[r] + 1
        assert per_epoch[-1] < max(per_epoch), "the data should make late epochs worse"
        assert result.best_epochs[r] == per_epoch.index(max(per_epoch))
        assert result.metrics["val"]["balanced_accuracy"][r] == max(per_epoch)  # one float64 code path
        assert result.best_epochs[r] < result.stopped_epochs[r]
    assert result.settings["steps_run"] < 3000  # stopped early, not at max_steps


def test_early_stopping_waits_patience_epochs():
    train, val = blobs(256, spread=0.3), blobs(64, spread=0.3, seed=1)
    # 1 step per epoch, 400 epochs -> patience 20; separable data peaks at once and never improves.
    result = _fit(LinearProbeConfig(n_runs=1, max_steps=400, batch_size=256, lr=0.5, seed=0), train, val)
    assert result.settings["patience_epochs"] == 20
    assert result.stopped_epochs[0] == result.best_epochs[0] + 20
    assert result.settings["steps_run"] == result.stopped_epochs[0] + 1


def test_non_finite_embeddings_stop_training():
    train = blobs(64)
    train[0][3, 2] = float("nan")
    with pytest.raises(EvalkitError, match="non-finite"):
        _fit(LinearProbeConfig(n_runs=1, max_steps=10), train, blobs(16, seed=1))


# ---- the batched loop against the loop it replaced (tests/heads/reference_probe.py) ----

def _assert_same_decisions(result, ref, runs=None) -> None:
    """Same best and stopped epochs as the reference loop; a different best epoch only where the
    reference scored it within 1e-6 of its own choice (a tie, which rounding may break either way)."""
    runs = runs if runs is not None else range(len(ref.best_epochs))
    for mine, r in zip(runs, range(len(ref.best_epochs))):
        new, old = result.best_epochs[mine], ref.best_epochs[r]
        if new == old:
            assert result.stopped_epochs[mine] == ref.stopped_epochs[r], (mine, r)
            torch.testing.assert_close(result.probs["val"][mine], ref.probs[r], atol=1e-5, rtol=0)
        else:
            assert abs(float(ref.scores[new, r]) - float(ref.scores[old, r])) <= 1e-6, (mine, new, old)


def test_one_step_epochs_decide_as_the_reference_loop():
    """A set smaller than the batch (one step per epoch, validated in blocks, never reshuffled) at the
    protocol's own small-data lr, long enough for early stopping to end every run."""
    train, val = blobs(40, classes=4, dim=16, spread=2.5), blobs(60, classes=4, dim=16, spread=2.5, seed=1)
    cfg = LinearProbeConfig(n_runs=3, max_steps=3000, seed=0, lr=0.002)
    result, ref = _fit(cfg, train, val), reference_fit(train, val, 4, cfg)
    assert ref.steps_run < 3000 and len(set(ref.best_epochs)) > 1, "the runs should stop early, and differ"
    _assert_same_decisions(result, ref)
    assert result.settings["steps_run"] == ref.steps_run
    for r in range(3):
        assert result.val_scores[r] == pytest.approx(ref.scores[:len(result.val_scores[r]), r].tolist(), abs=1e-6)


@pytest.mark.parametrize("protocol", ["sgd_kaiko", "adamw_eva"])
def test_minibatch_epochs_decide_as_the_reference_loop(protocol, monkeypatch):
    """Several steps per epoch, each run reshuffled by its own generator, the batch taken in chunks."""
    monkeypatch.setattr(linear, "CHUNK_MIN_ROWS", 8)  # chunks of 8 rows: exercised on a small problem
    monkeypatch.setattr(linear, "CHUNK_BYTES", 1)
    train, val = blobs(300, classes=3, dim=8, spread=3.0), blobs(100, classes=3, dim=8, spread=3.0, seed=1)
    cfg = LinearProbeConfig(protocol=protocol, n_runs=3, max_steps=600, lr=0.05, batch_size=32, seed=5)
    result, ref = _fit(cfg, train, val), reference_fit(train, val, 3, cfg)
    assert ref.steps_run < 600, "early stopping should end this fit, or the test proves less"
    _assert_same_decisions(result, ref)
    assert result.settings["steps_run"] == ref.steps_run


def test_runs_on_subsets_of_different_sizes_decide_as_each_alone():
    """One fit over subsets of five sizes (one-step and several-step epochs, a padded last batch) gives
    each run what the reference loop gives it alone on its subset."""
    x, y = blobs(200, classes=4, dim=12, spread=2.5)
    val = blobs(80, classes=4, dim=12, spread=2.5, seed=1)
    g = torch.Generator().manual_seed(3)
    sizes = [10, 14, 20, 40, 60]  # batch 32: one step for the first three, two for the others
    subsets = [torch.randperm(200, generator=g)[:m].sort().values for m in sizes]
    seeds = [11, 12, 13, 14, 15]
    cfg = LinearProbeConfig(n_runs=5, max_steps=800, lr=0.05, batch_size=32)
    together = fit_linear_probe((x, y), val, 4, cfg, {"val": val}, subsets=subsets, seeds=seeds)
    assert together.settings["seeds"] == seeds
    for r, (rows, seed) in enumerate(zip(subsets, seeds)):
        alone = reference_fit((x, y), val, 4, dataclasses.replace(cfg, n_runs=1, seed=seed), subsets=rows[None])
        _assert_same_decisions(together, alone, runs=[r])


def _sequential_stopping(scores: list[list[float]], patience: int) -> tuple[list[int], list[int]]:
    """Early stopping checked after every epoch, the way the reference loop does it."""
    best_epochs, stopped = [], []
    for run in zip(*scores):
        best, best_epoch, waited = -math.inf, 0, 0
        for epoch, score in enumerate(run):
            if score > best:
                best, best_epoch, waited = score, epoch, 0
            else:
                waited += 1
            if waited >= patience:
                break
        best_epochs.append(best_epoch)
        stopped.append(epoch)
    return best_epochs, stopped


@pytest.mark.parametrize("seed", range(20))
def test_replaying_a_block_decides_as_checking_every_epoch(seed):
    """Scores from few distinct values (many ties), replayed in blocks of random length."""
    g = torch.Generator().manual_seed(seed)
    epochs, runs, patience = 60, 4, int(torch.randint(1, 8, (1,), generator=g))
    scores = (torch.randint(0, 5, (epochs, runs), generator=g) / 4).double()
    expected = _sequential_stopping(scores.tolist(), patience)
    best_score, waited = torch.full((runs,), -math.inf, dtype=torch.float64), torch.zeros(runs, dtype=torch.long)
    best, stopped, active, epoch = [0] * runs, [None] * runs, list(range(runs)), 0
    while epoch < epochs and active:
        block = min(int(torch.randint(1, 9, (1,), generator=g)), epochs - epoch)
        replay = linear._replay(scores[epoch:epoch + block, active], best_score, waited, patience)
        for i, r in enumerate(active):
            if replay.best[i] >= 0:
                best[r] = epoch + int(replay.best[i])
            stopped[r] = epoch + int(replay.last[i])
        keep = (replay.stop < 0).nonzero().flatten()
        active = [active[i] for i in keep.tolist()]
        best_score, waited = replay.best_score[keep], replay.waited[keep]
        epoch += block
    assert (best, stopped) == expected


@pytest.mark.parametrize("protocol", ["sgd_kaiko", "adamw_eva"])
def test_the_optimiser_updates_as_torch_optim(protocol):
    """SGD (Nesterov momentum) and AdamW on the stacked parameters, against torch's own, 30 steps."""
    p = PROTOCOLS.get(protocol)
    g = torch.Generator().manual_seed(0)
    params = torch.randn(3, 4, 6, generator=g)
    theirs = params.clone()
    theirs.grad = torch.zeros_like(theirs)
    mine = linear._Optimizer(p)
    if p.optimizer == "sgd":
        torch_optimizer = torch.optim.SGD([theirs], lr=0.1, momentum=p.momentum, nesterov=p.nesterov,
                                          weight_decay=p.weight_decay)
    else:
        torch_optimizer = torch.optim.AdamW([theirs], lr=0.1, weight_decay=p.weight_decay)
    schedule = cosine_to_zero(torch_optimizer, 30)
    lrs = cosine_schedule(0.1, 30)
    for step in range(30):
        grad = torch.randn(3, 4, 6, generator=g)
        theirs.grad.copy_(grad)
        assert torch_optimizer.param_groups[0]["lr"] == lrs[step]
        torch_optimizer.step()
        schedule.step()
        mine.step(params, grad, lrs[step])
        torch.testing.assert_close(params, theirs, atol=1e-7, rtol=0)


def test_the_probe_trains_on_the_embeddings_without_copying_them():
    """Every run on every row: a one-step epoch uses the embeddings tensor itself, and mini-batches
    gather at most a chunk of rows at a time into one reused buffer."""
    x, y = blobs(200)
    every = [torch.arange(200)] * 3
    one_step = linear._Batches(x, y, every, [torch.Generator() for _ in range(3)], linear._Group([0, 1, 2], 200, 256, 1))
    assert one_step.fixed[0] is x
    several = linear._Batches(x, y, every, [torch.Generator() for _ in range(3)], linear._Group([0, 1, 2], 200, 16, 13))
    assert several.fixed is None
    rows, _ = several.epoch()[0]
    first, second = rows(0, 8), rows(8, 16)
    assert first.data_ptr() == second.data_ptr() and several._buffer.numel() == 3 * 8 * 16


def test_runs_on_every_row_shuffle_as_runs_on_explicit_pools():
    """Runs on every row shuffle the row numbers themselves (no [R, N] stack of pools); they draw and
    train exactly as runs handed the same rows as separate index tensors, including after runs stop."""
    train, val = blobs(300, spread=3.0), blobs(60, spread=3.0, seed=1)
    cfg = LinearProbeConfig(n_runs=3, max_steps=400, seed=2, batch_size=32, lr=0.05, patience_fraction=0.1)
    every = fit_linear_probe(train, val, 4, cfg, {"val": val})
    pools = fit_linear_probe(train, val, 4, cfg, {"val": val}, subsets=[torch.arange(300) for _ in range(3)])
    assert every.best_epochs == pools.best_epochs and every.stopped_epochs == pools.stopped_epochs
    assert len(set(every.stopped_epochs)) > 1  # some runs left the stack before others
    assert torch.equal(every.probs["val"], pools.probs["val"])
    batches = linear._Batches(*train, [torch.arange(300)] * 3, [torch.Generator() for _ in range(3)],
                              linear._Group([0, 1, 2], 300, 32, 10))
    assert batches.every_row and batches.rows.stride(0) == 0  # a view of one arange, not a stack


def test_small_steps_run_on_one_thread_and_the_thread_count_comes_back(monkeypatch):
    """A step of 5 runs x 256 rows x 32 dims is tiny: its ops run on one thread (a second one only waits at
    barriers, and under load for a descheduled thread); the caller's thread count is restored afterwards, and
    a step at least SMALL_STEP elements large keeps the caller's threads."""
    seen: list[int] = []
    real_train = linear._train_group

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_train(*args, **kwargs)

    monkeypatch.setattr(linear, "_train_group", spy)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 32, generator=g), torch.randint(3, (300,), generator=g)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        linear.fit_linear_probe((x, y), (x, y), 3, linear.LinearProbeConfig(max_steps=20), {"val": (x, y)})
        assert seen == [1] and torch.get_num_threads() == 2
        monkeypatch.setattr(linear, "SMALL_STEP", 1)
        linear.fit_linear_probe((x, y), (x, y), 3, linear.LinearProbeConfig(max_steps=20), {"val": (x, y)})
        assert seen == [1, 2]
    finally:
        torch.set_num_threads(before)
