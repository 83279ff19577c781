"""Classification metrics for the linear probe (torchmetrics), batched over runs where it pays.

Balanced accuracy is the mean recall over the classes present in the targets, as in
scikit-learn's ``balanced_accuracy_score``: a class that a small validation split lacks
does not count as a zero.
"""

from __future__ import annotations

import warnings

import torch

# name -> higher is better
METRICS: dict[str, bool] = {"balanced_accuracy": True, "accuracy": True, "f1_macro": True, "auroc_macro": True}
PRIMARY_METRIC = "balanced_accuracy"


def balanced_accuracy_runs(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Balanced accuracy of ``R`` runs at once: ``preds`` [R, N] class indices, ``target`` [N] -> [R].

    Used every epoch for early stopping, so it is one scatter-add, not a loop over runs.
    """
    runs = preds.shape[0]
    correct = (preds == target).to(torch.float64)
    hits = torch.zeros(runs, num_classes, dtype=torch.float64, device=preds.device)
    hits.scatter_add_(1, target.expand(runs, -1), correct)
    support = torch.bincount(target, minlength=num_classes).to(torch.float64)
    present = support > 0
    return (hits[:, present] / support[present]).mean(dim=1)


def classification_metrics(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[str, float]:
    """All reported metrics of one run: ``logits`` [N, C], ``target`` [N]."""
    # Imported here: torchmetrics takes seconds to import, which every CLI command would pay.
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_auroc,
        multiclass_f1_score,
        multiclass_recall,
    )

    probs = logits.float().softmax(dim=-1)
    preds = probs.argmax(dim=-1)
    recall = multiclass_recall(preds, target, num_classes=num_classes, average="none")
    present = torch.bincount(target, minlength=num_classes) > 0
    out = {
        "balanced_accuracy": float(recall[present].mean()),
        "accuracy": float(multiclass_accuracy(preds, target, num_classes=num_classes, average="micro")),
        "f1_macro": float(multiclass_f1_score(preds, target, num_classes=num_classes, average="macro")),
    }
    if int(present.sum()) == num_classes:
        out["auroc_macro"] = float(multiclass_auroc(probs, target, num_classes=num_classes, average="macro"))
    else:  # AUROC of an absent class is undefined: average over the present ones
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            auroc = multiclass_auroc(probs, target, num_classes=num_classes, average="none")
        out["auroc_macro"] = float(auroc[present].mean())
    return out
