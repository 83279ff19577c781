"""Hand-made runs with known differences, shared by the report tests: per task, ``best``, a
near-twin of it (noise-level difference) and a ``weak`` model, with schema-2 results.json and
predictions.h5."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from synthetic_runs import results, write_run

from evalkit.predictions import SplitPredictions, write_predictions
from evalkit.results import summarize
from evalkit.stats.bootstrap import bootstrap_ci, weighted_metrics

N, C, R = 400, 4, 3


def _probs(target: torch.Tensor, accuracy: float, seed: int) -> torch.Tensor:
    """[R, N, C] probabilities whose argmax is right on about ``accuracy`` of the samples."""
    g = torch.Generator().manual_seed(seed)
    runs = []
    for _ in range(R):
        wrong = torch.rand(N, generator=g) > accuracy
        pred = torch.where(wrong, (target + 1 + torch.randint(C - 1, (N,), generator=g)) % C, target)
        runs.append(torch.nn.functional.one_hot(pred, C).float() * 0.7 + 0.3 / C)
    return torch.stack(runs)


def _write_run(root: Path, task: str, model: str, probs: torch.Tensor, target: torch.Tensor, curves: bool) -> None:
    run_dir = root / task / model / "run-1"
    values = weighted_metrics(torch.ones(1, N, dtype=torch.float64), target, probs, C)
    cis = bootstrap_ci(target, probs, C, n_resamples=200)
    metrics = {name: {**summarize(v[0].tolist()), "ci_low": cis[name]["low"], "ci_high": cis[name]["high"]}
               for name, v in values.items()}
    ba = metrics["balanced_accuracy"]["mean"]
    body = results(task, model, {"test": metrics}, n_runs=R, num_classes=C,
                   representation={"test": {"rankme": 10 + 50 * ba, "odcorr": 0.8 - 0.5 * ba, "alpha_req": 1.0}})
    if curves:
        points = [{"value": k, "n_labels": k * C, "mean": ba * (0.5 + 0.1 * k), "std": 0.01, "draws": [ba] * 2,
                   "ci_low": ba * (0.4 + 0.1 * k), "ci_high": ba * (0.6 + 0.1 * k)} for k in (1, 2, 4)]
        body["curves"] = {"label_efficiency": {
            "metric": "balanced_accuracy", "draws": 2, "seed": 0, "heads": ["knn"], "subsets": [],
            "curves": {"knn": {"test": {"shots": points, "fraction": []}}}, "auc": {"knn": {"test": {"shots": 0.5}}}}}
    write_run(run_dir, body)
    ids = [f"s{i}" for i in range(N)]
    order = torch.randperm(N, generator=torch.Generator().manual_seed(len(model)))  # stored in another order
    write_predictions(run_dir, {"test": SplitPredictions([ids[i] for i in order], target[order], probs[:, order])})


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for t, task in enumerate(("task_a", "task_b")):
        target = torch.randint(C, (N,), generator=torch.Generator().manual_seed(100 + t))
        best = _probs(target, 0.9, seed=1 + t)
        # a near-twin of the best: the same predictions except on 4 samples, i.e. noise-level
        twin = best.clone()
        twin[:, :4] = torch.roll(best[:, :4], 1, dims=-1)
        _write_run(root, task, "best", best, target, curves=t == 0)
        _write_run(root, task, "twin", twin, target, curves=t == 0)
        _write_run(root, task, "weak", _probs(target, 0.5, seed=3 + t), target, curves=t == 0)
    return root
