"""``--embed.precision``: the forward pass in fp32, or bf16/fp16 autocast; each precision has its own cache file,
and fp32 keeps the key every cache had before the option existed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from evalkit.embed import EmbedConfig, PooledRows, embed_task, feature_file, read_embeddings
from evalkit.errors import EvalkitError
from evalkit.models import TimmModel
from helpers import CRC_TASK as CRC_TASK_YAML, DATA, cpu_embed, load_task, small_timm

# The crc_demo train file of a model with fingerprint "f" * 64, as evalkit named it before --embed.precision:
# shipped caches and baselines are found by these names, so fp32 must keep them.
FIXED_FINGERPRINT = "f" * 64
FP32_TRAIN_FILE = "crc_demo/m/train-rows-ceae8ff0577a7f48.h5"


def _file(root, precision=None, split="train"):
    extra = () if precision is None else (precision,)
    return feature_file(root, load_task(), "m", FIXED_FINGERPRINT, split, PooledRows(), *extra)[1]


def test_fp32_keeps_the_key_of_caches_written_before_the_option(tmp_path):
    assert _file(tmp_path) == tmp_path / FP32_TRAIN_FILE
    assert _file(tmp_path, "fp32") == tmp_path / FP32_TRAIN_FILE


def test_each_other_precision_has_its_own_file(tmp_path):
    paths = {p: _file(tmp_path, p) for p in ("fp32", "bf16", "fp16")}
    assert len(set(paths.values())) == 3
    for path in paths.values():  # same folder and naming scheme, another key
        assert path.parent == tmp_path / "crc_demo" / "m" and path.name.startswith("train-rows-")
    assert _file(tmp_path, "bf16", "val") not in paths.values()


def test_an_unknown_precision_is_a_one_line_error():
    with pytest.raises(EvalkitError, match="expected one of fp32, bf16, fp16, got 'fp64'") as info:
        EmbedConfig(precision="fp64")
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def bf16_and_fp32(tmp_path_factory):
    """The demo embedded in bf16 on the CPU, then in fp32 into the same root."""
    root = tmp_path_factory.mktemp("precision")
    bf16 = embed_task(load_task(), small_timm(input_size=32), DATA, root, cpu_embed(precision="bf16"))
    fp32 = embed_task(load_task(), small_timm(input_size=32), DATA, root, cpu_embed())
    return root, bf16, fp32


def test_bf16_on_the_cpu_writes_its_own_cache_that_says_bf16(bf16_and_fp32):
    root, bf16, fp32 = bf16_and_fp32
    model = small_timm(input_size=32)
    for b, f in zip(bf16, fp32):
        assert not b.reused and not f.reused  # the fp32 run did not take the bf16 file, nor the reverse
        assert b.path != f.path and b.path.parent == f.path.parent
        assert b.path == feature_file(root, load_task(), model.name, model.fingerprint(), b.split, PooledRows(),
                                      "bf16")[1]
        assert f.path == feature_file(root, load_task(), model.name, model.fingerprint(), f.split, PooledRows())[1]
        low, full = read_embeddings(b.path), read_embeddings(f.path)
        assert low.attrs["precision"] == "bf16" and full.attrs["precision"] == "fp32"
        assert json.loads(low.attrs["embedding_cost"])["precision"] == "bf16"
        assert json.loads(full.attrs["embedding_cost"])["precision"] == "fp32"
        assert low.embeddings.dtype == torch.float32  # stored as --embed.dtype says, whatever computed them
        # Really computed in bf16: not the fp32 numbers, yet the same embeddings to bf16's ~3 significant digits.
        assert not torch.equal(low.embeddings, full.embeddings)
        cosine = torch.nn.functional.cosine_similarity(low.embeddings, full.embeddings, dim=1)
        assert cosine.min() > 0.99, cosine.min()


def test_each_precision_reuses_only_its_own_cache(bf16_and_fp32, monkeypatch):
    root, bf16, fp32 = bf16_and_fp32
    monkeypatch.setattr(TimmModel, "build", lambda self: pytest.fail("a complete cache needs no model"))
    for cfg, first in ((cpu_embed(precision="bf16"), bf16), (cpu_embed(), fp32)):
        again = embed_task(load_task(), small_timm(input_size=32), DATA, root, cfg)
        assert all(c.reused for c in again) and [c.path for c in again] == [c.path for c in first]


def test_fp16_on_the_cpu_is_refused_before_the_model_is_built(tmp_path, monkeypatch):
    monkeypatch.setattr(TimmModel, "build", lambda self: pytest.fail("refused before building the model"))
    with pytest.raises(EvalkitError) as info:
        embed_task(load_task(), small_timm(input_size=32), DATA, tmp_path, cpu_embed(precision="fp16"))
    message = str(info.value)
    assert "\n" not in message and "--embed.precision fp16 needs a GPU" in message and "bf16" in message
    assert not list(tmp_path.rglob("*.partial")) and not list(tmp_path.rglob("*.h5"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast runs on a GPU")
def test_fp16_on_a_gpu_writes_a_cache_that_says_fp16(tmp_path):
    cfg = EmbedConfig(batch_size=8, num_workers=0, accelerator="gpu", devices=1, precision="fp16")
    caches = embed_task(load_task(), small_timm(input_size=32), DATA, tmp_path, cfg)
    data = read_embeddings(caches[0].path)
    assert data.attrs["precision"] == "fp16"
    cost = json.loads(data.attrs["embedding_cost"])
    assert cost["memory_kind"] == "cuda_max_allocated" and cost["device"].startswith("cuda:")
    assert np.isfinite(data.embeddings.numpy()).all()


def test_fit_finds_the_cache_of_the_precision_it_is_told(tmp_path):
    """predict_fit fits what it embedded; `fit --precision bf16` finds the bf16 cache, and results.json says bf16."""
    from helpers import VIT_TINY, run_in_process

    common = ["--config", str(CRC_TASK_YAML), "--config", str(VIT_TINY), "--data_root", str(DATA),
              "--embeddings_root", str(tmp_path / "emb"), "--results_root", str(tmp_path / "res"),
              "--head.n_runs", "1", "--head.max_steps", "20"]
    first = run_in_process("predict_fit", *common, "--embed.precision", "bf16", "--embed.accelerator", "cpu",
                           cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    refit = run_in_process("fit", *common, "--precision", "bf16", cwd=tmp_path)
    assert refit.returncode == 0, refit.stderr
    records = sorted((tmp_path / "res").rglob("results.json"))
    assert len(records) == 2
    assert {json.loads(r.read_text())["embedding"]["precision"] for r in records} == {"bf16"}


def test_fit_without_precision_points_at_the_cache_of_another_one(tmp_path):
    """Only a bf16 cache exists: a plain `fit` says to pass --precision bf16; `fit --embed.precision` says to use
    --precision."""
    from helpers import VIT_TINY, run_in_process

    common = ["--config", str(CRC_TASK_YAML), "--config", str(VIT_TINY), "--data_root", str(DATA),
              "--embeddings_root", str(tmp_path / "emb"), "--results_root", str(tmp_path / "res")]
    embedded = run_in_process("predict", *common[:-2], "--embed.precision", "bf16", "--embed.accelerator", "cpu",
                              cwd=tmp_path)
    assert embedded.returncode == 0, embedded.stderr
    plain = run_in_process("fit", *common, cwd=tmp_path)
    assert plain.returncode == 1 and "fit it with --precision bf16" in plain.stderr, plain.stderr
    wrong = run_in_process("fit", *common, "--embed.precision", "bf16", cwd=tmp_path)
    assert wrong.returncode == 1 and "fit the cache of another precision with --precision" in wrong.stderr
