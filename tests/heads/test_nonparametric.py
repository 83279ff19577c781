"""kNN against scikit-learn, SimpleShot against its formula written out in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from evalkit.errors import EvalkitError
from evalkit.heads.nonparametric import knn, simpleshot


def data(n_train: int = 300, n_eval: int = 200, classes: int = 5, dim: int = 16, seed: int = 0, spread: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g)
    train_y = torch.arange(n_train) % classes
    eval_y = torch.randint(0, classes, (n_eval,), generator=g)
    train_x = centers[train_y] + spread * torch.randn(n_train, dim, generator=g)
    eval_x = centers[eval_y] + spread * torch.randn(n_eval, dim, generator=g)
    return train_x, train_y, eval_x, eval_y


# ---- kNN ----

def _sklearn_votes(train_x, train_y, eval_x, k, classes):
    """sklearn's prediction and, per row, the vote counts and summed cosine similarity per class."""
    model = KNeighborsClassifier(n_neighbors=k, metric="cosine").fit(train_x.numpy(), train_y.numpy())
    distance, idx = model.kneighbors(eval_x.numpy())
    labels = train_y.numpy()[idx]
    votes = np.stack([(labels == c).sum(1) for c in range(classes)], 1)
    similarity = np.stack([((1 - distance) * (labels == c)).sum(1) for c in range(classes)], 1)
    return model.predict(eval_x.numpy()), votes, similarity


@pytest.mark.parametrize("k", [1, 7, 20])
def test_knn_matches_sklearn(k):
    train_x, train_y, eval_x, _ = data()
    probs = knn(train_x, train_y, eval_x, 5, k=k)
    predicted, votes, similarity = _sklearn_votes(train_x, train_y, eval_x, k, 5)
    top = votes.max(1, keepdims=True)
    unique = (votes == top).sum(1) == 1
    assert unique.mean() > 0.6, "too many vote ties: this test would prove little"
    ours = probs.argmax(1).numpy()
    np.testing.assert_array_equal(ours[unique], predicted[unique])
    # A tie goes to the tied class with the larger summed similarity (sklearn: the lowest class id).
    tied_winner = np.where(votes == top, similarity, -np.inf).argmax(1)
    np.testing.assert_array_equal(ours[~unique], tied_winner[~unique])
    # Probabilities are the vote shares, up to the tie-break's 1e-2 of a vote.
    np.testing.assert_allclose(probs.numpy(), votes / k, atol=1e-2 / k)
    assert (probs.numpy()[votes == 0] == 0).all()


@pytest.mark.parametrize("k, classes", [(2, 2), (4, 3), (6, 4), (10, 5)])
def test_knn_lowest_class_tie_break_matches_sklearn(k, classes):
    """``tie_break="lowest_class"``: every prediction is sklearn's, ties included (uniform weights, cosine)."""
    train_x, train_y, eval_x, _ = data(n_train=240, n_eval=400, classes=classes, seed=k, spread=3.0)
    model = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights="uniform").fit(train_x.numpy(),
                                                                                       train_y.numpy())
    _, votes, similarity = _sklearn_votes(train_x, train_y, eval_x, k, classes)
    tied = (votes == votes.max(1, keepdims=True)).sum(1) > 1
    by_similarity = np.where(votes == votes.max(1, keepdims=True), similarity, -np.inf).argmax(1)
    assert tied.mean() > 0.1, "too few vote ties: this test would prove little"
    assert (by_similarity[tied] != model.predict(eval_x.numpy())[tied]).any(), "the two rules should differ here"
    probs = knn(train_x, train_y, eval_x, classes, k=k, tie_break="lowest_class")
    np.testing.assert_array_equal(probs.argmax(1).numpy(), model.predict(eval_x.numpy()))
    # the vote shares, up to the tie-break addends (each below 1e-2 of a vote, C of them in the sum)
    np.testing.assert_allclose(probs.numpy(), model.predict_proba(eval_x.numpy()), atol=1e-2 * classes / k)
    # the default rule is unchanged: it differs from sklearn's exactly on the tied rows it breaks otherwise
    np.testing.assert_array_equal(knn(train_x, train_y, eval_x, classes, k=k).argmax(1).numpy(), np.where(
        tied, by_similarity, model.predict(eval_x.numpy())))


def test_knn_bad_tie_break():
    train_x, train_y, eval_x, _ = data()
    with pytest.raises(EvalkitError, match="tie_break must be one of similarity, lowest_class, got 'nearest'"):
        knn(train_x, train_y, eval_x, 5, tie_break="nearest")


def test_knn_center_reproduces_uni():
    """UNI's eval_knn: centre on the training mean, L2-normalise, sklearn's Euclidean kNN, k = 20."""
    train_x, train_y, eval_x, _ = data(seed=1)
    train_x, eval_x = train_x + 3.0, eval_x + 3.0  # an offset the centring matters for
    mean = train_x.mean(0, keepdim=True)
    source = torch.nn.functional.normalize(train_x - mean, dim=1).numpy()
    query = torch.nn.functional.normalize(eval_x - mean, dim=1).numpy()
    model = KNeighborsClassifier(n_neighbors=20).fit(source, train_y.numpy())
    labels = train_y.numpy()[model.kneighbors(query)[1]]
    votes = np.stack([(labels == c).sum(1) for c in range(5)], 1)
    unique = (votes == votes.max(1, keepdims=True)).sum(1) == 1
    ours = knn(train_x, train_y, eval_x, 5, center=True).argmax(1).numpy()
    np.testing.assert_array_equal(ours[unique], model.predict(query)[unique])
    assert (knn(train_x, train_y, eval_x, 5).argmax(1).numpy() != ours).any(), "centring should matter here"


def test_knn_tie_break_by_similarity():
    # Two neighbours each: class 1's are closer to the query than class 0's; class 2 never votes.
    train_x = torch.tensor([[1.0, 0.5], [1.0, -0.5], [1.0, 0.1], [1.0, -0.1], [-1.0, 0.0]])
    train_y = torch.tensor([0, 0, 1, 1, 2])
    probs = knn(train_x, train_y, torch.tensor([[1.0, 0.0]]), 4, k=4)
    assert probs.argmax(1).item() == 1
    assert probs[0, 1] > probs[0, 0] and probs[0, 0] == pytest.approx(0.5, abs=1e-3)
    assert probs[0, 2] == 0 and probs[0, 3] == 0


def test_knn_tie_break_survives_float32_on_close_similarities():
    """Uncentred features of a foundation model: cosines near 0.9 that differ in the third decimal.
    At 5 shots of a binary task all 10 samples vote, every vote is 5:5, and the tie-break alone
    decides; it must follow the summed similarity, as the rule computed in float64 does."""
    g = torch.Generator().manual_seed(0)
    shared, shift = 4.0 * torch.randn(768, generator=g), 0.15 * torch.randn(2, 768, generator=g)
    y = torch.arange(2).repeat_interleave(5)
    train_x = shared + shift[y] + torch.randn(10, 768, generator=g)
    eval_y = torch.arange(2).repeat_interleave(200)
    eval_x = shared + shift[eval_y] + torch.randn(400, 768, generator=g)
    _, votes, similarity = _sklearn_votes(train_x, y, eval_x, 10, 2)
    assert (votes == 5).all()
    expected = similarity.argmax(1)
    assert np.abs(similarity[:, 0] - similarity[:, 1]).min() < 1e-3  # close enough to have failed in float32
    np.testing.assert_array_equal(knn(train_x, y, eval_x, 2).argmax(1).numpy(), expected)


def test_knn_k_larger_than_train_set():
    train_x, train_y, eval_x, _ = data(n_train=6, classes=3)  # two per class
    train_y = torch.tensor([0, 0, 0, 1, 1, 2])
    probs = knn(train_x, train_y, eval_x, 4, k=20)
    expected = torch.tensor([3, 2, 1, 0]) / 6
    torch.testing.assert_close(probs, expected.expand_as(probs), atol=1e-2 / 6, rtol=0)  # tie-break < 1e-2 vote
    assert (probs.argmax(1) == 0).all()
    assert torch.equal(probs, knn(train_x, train_y, eval_x, 4, k=6))


def test_knn_chunking_changes_nothing():
    train_x, train_y, eval_x, _ = data(n_eval=101)
    whole = knn(train_x, train_y, eval_x, 5)
    for chunk_size in (1, 7, 100):
        assert torch.equal(knn(train_x, train_y, eval_x, 5, chunk_size=chunk_size), whole)


def test_knn_output_contract():
    train_x, train_y, eval_x, _ = data()
    probs = knn(train_x.double(), train_y, eval_x.double(), 7)
    assert probs.shape == (200, 7) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(1), torch.ones(200))
    assert (probs[:, 5:] == 0).all()


@pytest.mark.parametrize("k", [0, -3, 2.5])
def test_knn_bad_k(k):
    train_x, train_y, eval_x, _ = data()
    with pytest.raises(EvalkitError, match="k"):
        knn(train_x, train_y, eval_x, 5, k=k)


# ---- SimpleShot ----

def _simpleshot_numpy(train_x, train_y, eval_x, num_classes, temperature=1.0):
    """Wang et al. 2019, CL2N, written out: centre on the support mean, normalise, class means, distances."""
    x, y, q = train_x.double().numpy(), train_y.numpy(), eval_x.double().numpy()
    mean = x.mean(0)
    support = (x - mean) / np.linalg.norm(x - mean, axis=1, keepdims=True)
    query = (q - mean) / np.linalg.norm(q - mean, axis=1, keepdims=True)
    present = np.unique(y)
    prototypes = np.stack([support[y == c].mean(0) for c in present])
    distance = np.linalg.norm(query[:, None, :] - prototypes[None, :, :], axis=2)
    logits = -distance / temperature
    exp = np.exp(logits - logits.max(1, keepdims=True))
    probs = np.zeros((len(q), num_classes))
    probs[:, present] = exp / exp.sum(1, keepdims=True)
    return probs


@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_simpleshot_matches_formula(temperature):
    train_x, train_y, eval_x, _ = data(n_train=40, dim=32)
    probs = simpleshot(train_x, train_y, eval_x, 5, temperature=temperature)
    expected = _simpleshot_numpy(train_x, train_y, eval_x, 5, temperature)
    np.testing.assert_allclose(probs.numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(1).numpy(), expected.argmax(1))
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(1), torch.ones(len(eval_x)))


def test_simpleshot_absent_class_gets_zero():
    train_x, train_y, eval_x, _ = data(n_train=40, classes=4)
    keep = train_y != 2
    probs = simpleshot(train_x[keep], train_y[keep], eval_x, 6)
    assert probs.shape == (200, 6)
    assert (probs[:, [2, 4, 5]] == 0).all()
    np.testing.assert_allclose(probs.numpy(), _simpleshot_numpy(train_x[keep], train_y[keep], eval_x, 6), atol=1e-5)
    torch.testing.assert_close(probs.sum(1), torch.ones(200))


def test_simpleshot_ignores_a_constant_offset():
    train_x, train_y, eval_x, _ = data(n_train=40, dim=32)
    offset = 5.0 * torch.randn(32, generator=torch.Generator().manual_seed(9))
    plain = simpleshot(train_x, train_y, eval_x, 5)
    shifted = simpleshot(train_x + offset, train_y, eval_x + offset, 5)
    torch.testing.assert_close(shifted, plain, atol=1e-5, rtol=0)
    assert torch.equal(shifted.argmax(1), plain.argmax(1))


def test_simpleshot_chunking_changes_nothing():
    train_x, train_y, eval_x, _ = data(n_train=40, n_eval=53)
    whole = simpleshot(train_x, train_y, eval_x, 5)
    for chunk_size in (1, 10):
        torch.testing.assert_close(simpleshot(train_x, train_y, eval_x, 5, chunk_size=chunk_size), whole, atol=0, rtol=0)


def test_simpleshot_one_shot_is_nearest_centred_sample():
    train_x, _, eval_x, _ = data(n_train=5, classes=5)
    train_y = torch.tensor([3, 0, 4, 1, 2])
    probs = simpleshot(train_x, train_y, eval_x, 5)
    centred = torch.nn.functional.normalize(train_x - train_x.mean(0), dim=1)
    query = torch.nn.functional.normalize(eval_x - train_x.mean(0), dim=1)
    assert torch.equal(probs.argmax(1), train_y[(query @ centred.T).argmax(1)])


def test_simpleshot_bad_temperature():
    train_x, train_y, eval_x, _ = data()
    with pytest.raises(EvalkitError, match="temperature"):
        simpleshot(train_x, train_y, eval_x, 5, temperature=0.0)


# ---- shared input checks ----

@pytest.mark.parametrize("head", [knn, simpleshot])
def test_bad_inputs(head):
    train_x, train_y, eval_x, _ = data()
    with pytest.raises(EvalkitError, match="width"):
        head(train_x, train_y, eval_x[:, :8], 5)
    with pytest.raises(EvalkitError, match=r"\[0, 4\)"):
        head(train_x, train_y, eval_x, 4)
    with pytest.raises(EvalkitError, match="one label per training row"):
        head(train_x, train_y[:-1], eval_x, 5)
    with pytest.raises(EvalkitError, match="empty"):
        head(train_x[:0], train_y[:0], eval_x, 5)


def test_knn_exact_ties_go_to_the_lowest_class_id():
    # One neighbour of each class at the same angle from the query: votes and similarities tie.
    train_x = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    probs = knn(train_x, torch.tensor([1, 0]), torch.tensor([[1.0, 0.0]]), 3, k=2)
    assert probs.argmax(1).item() == 0 and probs[0, 2] == 0
