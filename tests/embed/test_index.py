"""``fit`` without the model's weights: ``predict`` records the fingerprint of each model config under
``EMBEDDINGS_ROOT/.models/``; ``fit`` hashes the weights when they are there (rewritten weights never reuse
stale embeddings) and reads that index only when they are absent, and results.json says which it did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

from evalkit.cli import main
from evalkit.embed import read_embeddings
from evalkit.embed.index import INDEX_DIR, model_fingerprint, record_fingerprint
from evalkit.errors import EvalkitError
from evalkit.models import Preprocessing, TimmModel
from helpers import CRC_TASK, DATA, model_yaml


def _save_weights(path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), path)


def _model(weights: Path, input_size: int = 32) -> TimmModel:
    return TimmModel("resnet18", checkpoint_path=str(weights), preprocessing=Preprocessing(input_size=input_size))


def test_the_index_is_read_only_when_the_weights_are_absent(tmp_path):
    weights = tmp_path / "w.pth"
    _save_weights(weights, 0)
    model = _model(weights)
    assert model_fingerprint(tmp_path / "emb", model) == (model.fingerprint(), "weights")
    record_fingerprint(tmp_path / "emb", model, "recorded")
    assert model_fingerprint(tmp_path / "emb", model) == (model.fingerprint(), "weights")  # weights win
    [entry] = (tmp_path / "emb" / INDEX_DIR).glob("*.json")
    assert json.loads(entry.read_text()) == {"model": model.name, "model_fingerprint": "recorded"}
    weights.unlink()
    assert model_fingerprint(tmp_path / "emb", model) == ("recorded", "index")
    assert model_fingerprint(tmp_path / "emb", _model(weights)) == ("recorded", "index")  # keyed by the config
    other = _model(weights, 64)
    with pytest.raises(EvalkitError, match="weights not found") as info:
        model_fingerprint(tmp_path / "emb", other)  # another config: its fingerprint was never recorded
    assert "\n" not in str(info.value) and "evalkit predict" in str(info.value)


def test_fit_without_weights_then_with_rewritten_weights(tmp_path, capsys):
    weights = tmp_path / "weights" / "r18.pth"
    _save_weights(weights, 0)
    original = weights.read_bytes()
    config = model_yaml(tmp_path / "model.yaml", "evalkit.models.TimmModel", model_name="resnet18",
                        checkpoint_path=str(weights), preprocessing={"input_size": 64})
    emb, res = tmp_path / "emb", tmp_path / "res"
    common = ["--config", str(CRC_TASK), "--config", str(config), "--embeddings_root", str(emb)]
    assert main(["predict", *common, "--data_root", str(DATA), "--embed.batch_size", "16",
                 "--embed.num_workers", "0", "--embed.accelerator", "cpu"]) == 0
    caches = sorted(emb.rglob("*.h5"))
    assert [c.name.split("-")[0] for c in caches] == ["train", "val"]
    predicted = read_embeddings(caches[0]).attrs["model_fingerprint"]
    assert predicted == _model(weights, 64).fingerprint() != _model(weights, 32).fingerprint()
    fit = ["fit", *common, "--results_root", str(res), "--head.n_runs", "1", "--head.max_steps", "20",
           "--stats.n_resamples", "100"]

    # 1. The weights are gone (fit runs where only the embeddings are): the index says which files to read.
    weights.unlink()
    capsys.readouterr()
    assert main(fit) == 0, capsys.readouterr().err
    [first] = sorted(res.rglob("results.json"))
    results = json.loads(first.read_text())
    assert results["provenance"]["fingerprint_source"] == "index"
    assert results["model_fingerprint"] == predicted
    assert sorted(results["provenance"]["cache_files"].values()) == [str(c) for c in caches]

    # 2. Other weights at the same path: a new fingerprint, for which no cache exists; never the stale one.
    _save_weights(weights, 1)
    assert weights.read_bytes() != original
    capsys.readouterr()
    assert main(fit) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("evalkit: error: no feature cache ")
    assert "evalkit predict" in err and not any(str(c) in err for c in caches)
    assert sorted(res.rglob("results.json")) == [first]

    # 3. The original weights back: hashed, and their cache found again.
    weights.write_bytes(original)
    assert main(fit) == 0
    [third] = set(res.rglob("results.json")) - {first}  # run ids of one second do not sort by time
    newest = json.loads(third.read_text())
    assert newest["provenance"]["fingerprint_source"] == "weights" and newest["model_fingerprint"] == predicted

    # 4. No weights and no record of this config under another embeddings root: one line that says what to do.
    weights.unlink()
    capsys.readouterr()
    other_root = ["--embeddings_root", str(tmp_path / "elsewhere")]
    assert main([*fit, *other_root]) == 1
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "weights not found" in err and str(weights) in err
