"""Heads with nothing to train: k-nearest neighbours and SimpleShot prototypes on cached embeddings.

They are the few-shot and label-efficiency baselines because they have no hyperparameters to
tune on a validation set and no optimiser noise: the training subset alone decides the answer.
Both are pure tensor functions ``(train_x, train_y, eval_x, num_classes, **options) -> probs``
with probs ``[N_eval, num_classes]`` in float32 on the inputs' device, rows summing to 1. The
evaluation rows are processed in chunks so that memory holds at most ``chunk_size`` rows of
``N_train`` similarities (4,096 x 100,000 float32 is 1.6 GB; lower it for larger training sets).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

from evalkit.errors import EvalkitError

# What the similarity tie-break may add to one class's vote count, at most. It must stay below
# one vote so it can only decide ties. The addend is a class's rank by summed similarity times
# _TIE_BREAK / C, not the similarity itself: two tied classes then differ by at least
# _TIE_BREAK / C votes, which float32 keeps (a step is 2e-6 at 20 votes), however close their
# similarities. Adding the similarity (scaled below a vote) loses the tie-break to rounding
# whenever the summed cosines differ by less than about 0.04, as they often do.
_TIE_BREAK = 1e-2

TieBreak = Literal["similarity", "lowest_class"]
TIE_BREAKS: tuple[str, ...] = get_args(TieBreak)


def check_head_inputs(train_x: torch.Tensor, train_y: torch.Tensor, eval_x: torch.Tensor,
                      num_classes: int) -> None:
    """The shared checks of every few-shot head, so each fails with the same one-line message."""
    if train_x.dim() != 2 or eval_x.dim() != 2:
        raise EvalkitError(f"features must be [N, D] tensors, got train {tuple(train_x.shape)} "
                           f"and eval {tuple(eval_x.shape)}")
    if train_x.shape[1] != eval_x.shape[1]:
        raise EvalkitError(f"train and eval features differ in width ({train_x.shape[1]} vs {eval_x.shape[1]}); "
                           "were they embedded by the same model?")
    if train_y.dim() != 1 or train_y.shape[0] != train_x.shape[0]:
        raise EvalkitError(f"expected one label per training row ({train_x.shape[0]}), got shape {tuple(train_y.shape)}")
    if train_x.shape[0] == 0:
        raise EvalkitError("the training set is empty; check the split or the subset drawn from it")
    if num_classes < 1:
        raise EvalkitError(f"num_classes must be at least 1, got {num_classes}")
    low, high = int(train_y.min()), int(train_y.max())
    if low < 0 or high >= num_classes:
        raise EvalkitError(f"training labels must lie in [0, {num_classes}), got [{low}, {high}]; "
                           "check num_classes against the task's class list")


def _rows(chunk_size: int) -> int:
    if chunk_size < 1:
        raise EvalkitError(f"chunk_size must be at least 1, got {chunk_size}")
    return chunk_size


def _tie_ranks(similarity: torch.Tensor, tie_break: TieBreak) -> torch.Tensor:
    """Per row, each class's rank in the tie-break, C-1 for the class a tie goes to first and 0 for the last.

    ``similarity``: the summed similarity of each class's neighbours [rows, C], float64.
    """
    num_classes = similarity.shape[1]
    if tie_break == "lowest_class":
        return torch.arange(num_classes - 1, -1, -1, device=similarity.device).expand_as(similarity)
    # C-1 for the most similar class, 0 for the least; equal sums favour the lower class id
    return num_classes - 1 - (-similarity).argsort(dim=1, stable=True).argsort(dim=1)


def knn(train_x: torch.Tensor, train_y: torch.Tensor, eval_x: torch.Tensor, num_classes: int, *,
        k: int = 20, center: bool = False, tie_break: TieBreak = "similarity", chunk_size: int = 4096) -> torch.Tensor:
    """Cosine k-nearest-neighbour vote: class probabilities are the neighbours' vote shares.

    Conventions and their sources:

    - Cosine similarity on L2-normalised features, plain majority vote, as THUNDER
      (Marza et al. 2025; ``thunder/tasks/image_retrieval.py::topk_retrieval``: normalise,
      dot product, ``np.bincount(labels[:k]).argmax()``). THUNDER picks k from
      {1, 3, 5, 10, 20, 30, 40, 50} on validation F1; evalkit fixes k = 20, UNI's default.
    - UNI (Chen et al., Nat. Med. 2024; ``uni/downstream/eval_patch_features/fewshot.py::eval_knn``)
      uses k = 20 with sklearn's Euclidean ``KNeighborsClassifier`` on features first *centred*
      on the training mean and then L2-normalised: the same neighbours as cosine similarity of
      centred features. ``center=True`` reproduces that; the default follows THUNDER.
    - k = min(k, N_train), so a few-shot training set smaller than k votes with all of it.
    - Ties in the vote go, by default (``tie_break="similarity"``, evalkit's choice), to the
      class whose tied neighbours have the larger summed cosine similarity; with
      ``tie_break="lowest_class"`` they go to the lowest class id among the tied classes, as
      scikit-learn's ``KNeighborsClassifier(weights="uniform")`` and THUNDER's ``bincount(...).argmax()`` do.
      The score of a class with votes is ``votes_c + 0.01 * rank_c / C``, where ``rank_c``
      (0 to C-1) orders the classes by summed cosine similarity of their neighbours (float64;
      exactly equal sums favour the lower class id, as sklearn does), or by class id
      (``lowest_class``: ``rank_c = C-1-c``); the addend never
      outweighs a whole vote, and survives float32. Scores are then divided
      by their sum, so the probabilities are the vote shares to within 1%. A class with no
      neighbour among the k gets exactly 0.
    - With k >= N_train (a 1-shot or 2-shot set of a binary task, say) every training
      sample votes, the vote is tied by construction, and the summed similarity decides:
      at 1 shot per class this is the nearest neighbour.

    Args:
        k: neighbours that vote (20, UNI's ``n_neighbors``).
        center: subtract the training mean before normalising, as UNI's ``eval_knn`` does.
        tie_break: ``similarity`` (the default) or ``lowest_class`` (scikit-learn's rule).
        chunk_size: evaluation rows per similarity matrix of ``chunk_size x N_train``.
    """
    check_head_inputs(train_x, train_y, eval_x, num_classes)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise EvalkitError(f"knn k must be an integer of at least 1, got {k!r}")
    if tie_break not in TIE_BREAKS:
        raise EvalkitError(f"knn tie_break must be one of {', '.join(TIE_BREAKS)}, got {tie_break!r}")
    rows = _rows(chunk_size)
    train = train_x.float()
    mean = train.mean(dim=0, keepdim=True) if center else None
    if mean is not None:
        train = train - mean
    train = F.normalize(train, dim=1)
    labels = train_y.to(train.device, torch.long)
    k = min(k, train.shape[0])

    out = torch.empty(eval_x.shape[0], num_classes, dtype=torch.float32, device=train.device)
    for lo in range(0, eval_x.shape[0], rows):
        query = eval_x[lo:lo + rows].to(train.device, torch.float32)
        if mean is not None:
            query = query - mean
        sims, idx = torch.topk(F.normalize(query, dim=1) @ train.T, k, dim=1)
        neighbour_labels = labels[idx]
        scores = torch.zeros(query.shape[0], num_classes, dtype=torch.float32, device=train.device)
        scores.scatter_add_(1, neighbour_labels, torch.ones_like(sims))
        similarity = torch.zeros(scores.shape, dtype=torch.float64, device=train.device)
        similarity.scatter_add_(1, neighbour_labels, 1.0 + sims.clamp(-1.0, 1.0).double())
        rank = _tie_ranks(similarity, tie_break)
        scores += torch.where(scores > 0, rank.float() * (_TIE_BREAK / num_classes), 0.0)
        out[lo:lo + rows] = scores / scores.sum(dim=1, keepdim=True)
    return out


def simpleshot(train_x: torch.Tensor, train_y: torch.Tensor, eval_x: torch.Tensor, num_classes: int, *,
               temperature: float = 1.0, chunk_size: int = 4096) -> torch.Tensor:
    """SimpleShot with CL2N features: nearest class prototype by Euclidean distance.

    Wang et al. 2019, "SimpleShot: Revisiting Nearest-Neighbor Classification for Few-Shot
    Learning" (arXiv:1911.04623), CL2N: subtract the mean of the *training* (support) features,
    L2-normalise, average the normalised training features of each class into a prototype, and
    predict the prototype nearest in Euclidean distance. UNI's ``ProtoNet`` and ``eval_fewshot``
    (``uni/downstream/eval_patch_features/protonet.py``, ``fewshot.py``) do exactly this.
    (THUNDER's ``simple_shot`` differs: it averages centred but unnormalised features and
    matches prototypes by cosine similarity.)

    Probabilities are ``softmax(-distance / temperature)`` over the classes present in the
    training set; a class absent from it gets exactly 0. The temperature (evalkit's choice,
    default 1) changes only their sharpness, never the argmax. Distances between unit
    vectors and prototypes lie in [0, 2], so at temperature 1 the probabilities are soft.

    Args:
        temperature: divides the negative distances before the softmax; must be > 0.
        chunk_size: evaluation rows per distance computation.
    """
    check_head_inputs(train_x, train_y, eval_x, num_classes)
    if not temperature > 0:
        raise EvalkitError(f"simpleshot temperature must be > 0, got {temperature}")
    rows = _rows(chunk_size)
    train = train_x.float()
    device = train.device
    mean = train.mean(dim=0, keepdim=True)
    support = F.normalize(train - mean, dim=1)
    labels = train_y.to(device, torch.long)
    counts = torch.bincount(labels, minlength=num_classes)
    present = counts > 0
    sums = torch.zeros(num_classes, support.shape[1], dtype=torch.float32, device=device)
    sums.index_add_(0, labels, support)
    prototypes = sums[present] / counts[present].unsqueeze(1).float()  # [C_present, D]

    out = torch.zeros(eval_x.shape[0], num_classes, dtype=torch.float32, device=device)
    for lo in range(0, eval_x.shape[0], rows):
        query = F.normalize(eval_x[lo:lo + rows].to(device, torch.float32) - mean, dim=1)
        # Exact differences, not cdist's |q|^2 + |p|^2 - 2qp shortcut, which loses digits near ties.
        distance = torch.cdist(query, prototypes, compute_mode="donot_use_mm_for_euclid_dist")
        out[lo:lo + rows, present] = torch.softmax(-distance / temperature, dim=1)
    return out
