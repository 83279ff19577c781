"""The HDF5 embedding cache: content-addressed, DESIGN.md schema, reused without a forward pass, resumable."""

from __future__ import annotations

import csv
import json
import re
import shutil

import h5py
import numpy as np
import pytest
import torch

from evalkit import __version__
from evalkit.data import read_rgb
from evalkit.embed import PooledRows, cache_key, cache_path, embed_task, feature_file, read_embeddings
from evalkit.embed.cache import SCHEMA_VERSION, PartialCache, open_cache
from evalkit.errors import EvalkitError
from evalkit.models import TimmModel
from helpers import (CRC_CLASSES, CRC_DEMO, CRC_TASK, DATA, assert_same_cache, copy_crc_demo, cpu_embed, h5_tree,
                     load_task, read_h5, small_timm, write_foreign_h5, write_schema1_h5)


def _csv_rows(split: str) -> list[dict[str, str]]:
    with open(CRC_DEMO / "split.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["split"] == split]


# ---- the key -------------------------------------------------------------------------------------

def test_cache_key_is_content_addressed():
    key = cache_key("fp", "dataset", "train")
    assert key == cache_key("fp", "dataset", "train")
    assert len({key, cache_key("fp2", "dataset", "train"), cache_key("fp", "dataset2", "train"),
                cache_key("fp", "dataset", "val"), cache_key("fp", "dataset", "train", {"kind": "grid"}),
                cache_key("fp", "dataset", "train", {"kind": "grid", "stride": 194})}) == 6
    assert cache_key("fp", "d", "train", {"a": 1, "b": 2}) == cache_key("fp", "d", "train", {"b": 2, "a": 1})


def test_cache_path_names_task_model_split_kind_and_key(tmp_path):
    key = cache_key("fp", "dataset", "train")
    assert cache_path(tmp_path, "crc", "m", "train", key) == tmp_path / "crc" / "m" / f"train-rows-{key[:16]}.h5"
    assert cache_path(tmp_path, "consep", "m", "test", key, "grid") == tmp_path / "consep" / "m" / f"test-grid-{key[:16]}.h5"


def test_cache_path_changes_with_model_dataset_and_split(tmp_path):
    task, model = load_task(), small_timm()

    def path(task, model, split):
        return feature_file(tmp_path, task, model.name, model.fingerprint(), split, PooledRows())[1]

    base = path(task, model, "train")
    assert base == path(load_task(), small_timm(), "train")  # new instances, same inputs
    assert base.parent == tmp_path / "crc_demo" / model.name and base.suffix == ".h5"
    assert base.name.startswith("train-rows-")
    assert path(task, small_timm(seed=1), "train") != base
    assert path(task, small_timm(input_size=96), "train") != base
    assert path(load_task(CRC_TASK, "--task.dataset.init_args.csv_file", "other.csv"), model, "train") != base
    assert path(task, model, "val") != base


# ---- the file --------------------------------------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "val"])
def test_cache_file_has_the_design_schema(crc_cache, split):
    cache = crc_cache.caches[split]
    n = len(_csv_rows(split))
    assert cache.path.is_file() and not cache.reused
    with h5py.File(cache.path, "r") as f:
        assert f["embeddings"].shape == (n, 512)
        assert f["embeddings"].dtype == np.float32
        assert f["labels"].shape == (n,) and f["labels"].dtype == np.int64
        assert f["ids"].shape == (n,)
        assert h5py.check_string_dtype(f["ids"].dtype).encoding == "utf-8"
        attrs = dict(f.attrs)
    assert attrs["model"] == crc_cache.model.name == "resnet18-random"
    assert attrs["model_fingerprint"] == crc_cache.model.fingerprint()
    assert attrs["dataset"] == "crc_demo"
    assert attrs["split"] == split
    assert json.loads(attrs["transform"])["input_size"] == 64
    assert attrs["complete"] == True and isinstance(attrs["complete"], (bool, np.bool_))  # noqa: E712
    assert attrs["evalkit_version"] == __version__
    assert attrs["schema_version"] == SCHEMA_VERSION == 2
    assert attrs["kind"] == "rows"
    assert cache.path.name.startswith(f"{split}-rows-")


@pytest.mark.parametrize("split", ["train", "val"])
def test_rows_are_in_dataset_order_with_their_labels_and_ids(crc_cache, split):
    rows = _csv_rows(split)
    data = read_embeddings(crc_cache.caches[split].path)
    assert data.ids == [r["path"] for r in rows]
    assert data.labels.tolist() == [CRC_CLASSES.index(r["label"]) for r in rows]
    assert data.labels.dtype == torch.int64 and data.embeddings.dtype == torch.float32
    assert data.classes == CRC_CLASSES


def test_each_row_is_the_embedding_of_its_own_image(crc_cache):
    """Recompute a few rows one image at a time: a shuffled or shifted cache would not match."""
    data = read_embeddings(crc_cache.caches["train"].path)
    backbone = crc_cache.model.build().eval()
    transform = backbone.preprocessing.transform()
    for row in (0, 9, len(data.ids) - 1):
        with torch.no_grad():
            expected = backbone(transform(read_rgb(CRC_DEMO / data.ids[row]))[None])["cls"][0]
        torch.testing.assert_close(data.embeddings[row], expected, rtol=1e-4, atol=1e-4)
    assert not torch.equal(data.embeddings[0], data.embeddings[1])


def test_complete_cache_is_reused_without_a_forward_pass(crc_cache, monkeypatch):
    before = {s: c.path.read_bytes() for s, c in crc_cache.caches.items()}
    monkeypatch.setattr(TimmModel, "build", lambda self: pytest.fail("a complete cache needs no model"))
    log: list[str] = []
    again = embed_task(load_task(), small_timm(), DATA, crc_cache.root, cpu_embed(), log.append)
    assert [c.split for c in again] == ["train", "val"]
    assert all(c.reused for c in again)
    assert {c.split: c.path for c in again} == {s: c.path for s, c in crc_cache.caches.items()}
    assert sum("reusing cache" in line for line in log) == 2
    assert not any(re.search(r"embedding \d+ images", line) for line in log)
    assert {s: c.path.read_bytes() for s, c in crc_cache.caches.items()} == before


def test_read_embeddings_rejects_another_schema(tmp_path):
    foreign = write_foreign_h5(tmp_path / "foreign.h5")
    with pytest.raises(EvalkitError, match="foreign.h5") as info:
        read_embeddings(foreign)
    assert "\n" not in str(info.value) and "not an evalkit feature cache" in str(info.value)
    (tmp_path / "text.h5").write_text("not hdf5 at all")
    with pytest.raises(EvalkitError, match="text.h5"):
        read_embeddings(tmp_path / "text.h5")
    with pytest.raises(EvalkitError, match="missing.h5"):
        read_embeddings(tmp_path / "missing.h5")


def test_a_schema_1_cache_is_refused_with_how_to_regenerate_it(tmp_path):
    old = write_schema1_h5(tmp_path / "old.h5")
    with pytest.raises(EvalkitError) as info:
        read_embeddings(old)
    message = str(info.value)
    assert "\n" not in message and "old.h5" in message
    assert "schema 1" in message and f"schema {SCHEMA_VERSION}" in message and "evalkit predict" in message


def test_a_cache_of_a_future_schema_is_refused(crc_cache, tmp_path):
    newer = tmp_path / "newer.h5"
    shutil.copy(crc_cache.caches["val"].path, newer)
    with h5py.File(newer, "a") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(EvalkitError, match=f"schema {SCHEMA_VERSION + 1}"):
        read_embeddings(newer)


def test_a_cache_of_another_kind_is_refused(crc_cache):
    path = crc_cache.caches["val"].path
    with pytest.raises(EvalkitError, match="holds 'rows' features, not the 'grid'"):
        open_cache(path, "grid")
    open_cache(path, "rows").close()


def test_read_embeddings_rejects_an_incomplete_file(crc_cache, tmp_path):
    copy = tmp_path / "copy.h5"
    shutil.copy(crc_cache.caches["val"].path, copy)
    with h5py.File(copy, "a") as f:
        f.attrs["complete"] = False
    with pytest.raises(EvalkitError, match="incomplete"):
        read_embeddings(copy)


def test_a_foreign_file_at_the_cache_path_is_an_error_and_left_alone(tmp_path):
    task, model = load_task(), small_timm()
    _, target = feature_file(tmp_path, task, model.name, model.fingerprint(), "train", PooledRows())
    target.parent.mkdir(parents=True)
    write_foreign_h5(target)
    before = target.read_bytes()
    with pytest.raises(EvalkitError, match=target.name):
        embed_task(task, model, DATA, tmp_path, cpu_embed())
    assert target.read_bytes() == before


def test_float16_storage(tmp_path):
    caches = embed_task(load_task(), small_timm(input_size=32), DATA, tmp_path, cpu_embed(dtype="float16"))
    data = read_h5(caches[1].path)
    assert data["embeddings_dtype"] == np.float16
    assert data["embeddings"].shape == (16, 512)


# ---- resuming ----------------------------------------------------------------------------------------

def _batches(n: int, batch_size: int, dim: int = 6) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(np.arange(lo, min(n, lo + batch_size)), rng.standard_normal((min(n, lo + batch_size) - lo, dim))
             .astype(np.float32)) for lo in range(0, n, batch_size)]


ATTRS = {"kind": "rows", "model": "m", "model_fingerprint": "f", "dataset": "d", "split": "train", "transform": "{}"}


def test_partial_cache_resume_equals_an_uninterrupted_write(tmp_path):
    n, ids = 18, np.array([f"img-{i}.png" for i in range(18)], dtype=object)
    per_sample = {"labels": np.arange(18) % 3, "ids": ids}
    batches = _batches(n, 4)

    whole = PartialCache(tmp_path / "a" / "train-x.h5", batch_size=4)
    for indices, emb in batches:
        whole.write_batch(indices, emb)
    whole.assemble(n, {"embeddings": "float32"}, ATTRS, per_sample)

    first = PartialCache(tmp_path / "b" / "train-x.h5", batch_size=4)
    for indices, emb in [batches[3], batches[0]]:  # out of order, as DDP ranks finish
        first.write_batch(indices, emb)
    del first  # the process dies here
    resumed = PartialCache(tmp_path / "b" / "train-x.h5", batch_size=7)  # a new --embed.batch_size is ignored
    assert resumed.batch_size == 4
    assert resumed.done_batches() == {0, 3}
    for k in sorted({0, 1, 2, 3, 4} - resumed.done_batches()):
        resumed.write_batch(*batches[k])
    resumed.assemble(n, {"embeddings": "float32"}, ATTRS, per_sample)

    assert_same_cache(tmp_path / "a" / "train-x.h5", tmp_path / "b" / "train-x.h5")
    assert not (tmp_path / "b" / "train-x.partial").exists()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["train-x.h5"]
    data = read_embeddings(tmp_path / "b" / "train-x.h5")
    assert np.array_equal(data.embeddings.numpy(), np.concatenate([e for _, e in batches]))
    assert data.ids == list(ids) and data.attrs["schema_version"] == SCHEMA_VERSION and data.attrs["kind"] == "rows"


def test_partial_cache_writes_named_arrays_skips_unreadable_rows_and_keeps_extras(tmp_path):
    """Any kind of feature goes through the one writer: several named arrays per batch (feature maps of
    several levels), per-sample arrays that lose the skipped rows, extra arrays stored as they are."""
    n, rng = 10, np.random.default_rng(1)
    level0 = rng.standard_normal((n, 3, 4, 4)).astype(np.float32)
    level1 = rng.standard_normal((n, 5, 2, 2)).astype(np.float32)
    readable = np.ones(n, dtype=bool)
    readable[[2, 7]] = False
    ids = np.array([f"s{i}" for i in range(n)], dtype=object)
    masks = {f"full_masks/{j}": rng.integers(0, 5, (6 + j, 9)).astype(np.uint8) for j in range(3)}
    dtypes = {"features/0": "float16", "features/1": "float16"}

    def write(root, order):
        partial = PartialCache(root / "test-grid-x.h5", batch_size=3)
        for k in order:
            lo, hi = 3 * k, min(n, 3 * k + 3)
            partial.write_batch(np.arange(lo, hi), {"features/0": level0[lo:hi].astype(np.float16),
                                                    "features/1": level1[lo:hi].astype(np.float16)}, readable[lo:hi])
        return partial

    write(tmp_path / "a", [0, 1, 2, 3]).assemble(n, dtypes, {**ATTRS, "kind": "grid"}, {"ids": ids}, masks)
    write(tmp_path / "b", [3, 1])  # killed after two batches
    skipped = write(tmp_path / "b", [0, 2]).assemble(n, dtypes, {**ATTRS, "kind": "grid"}, {"ids": ids}, masks)
    assert skipped.tolist() == [2, 7]
    assert_same_cache(tmp_path / "a" / "test-grid-x.h5", tmp_path / "b" / "test-grid-x.h5")
    tree = h5_tree(tmp_path / "b" / "test-grid-x.h5")
    keep = readable
    assert np.array_equal(tree["features/0"][2], level0[keep].astype(np.float16))
    assert tree["features/1"][:2] == ("float16", (8, 5, 2, 2))
    assert tree["ids"][2] == [f"s{i}" for i in range(n) if i not in (2, 7)]
    for name, mask in masks.items():
        assert np.array_equal(tree[name][2], mask)
    assert json.loads(tree["/"]["skipped_ids"]) == ["s2", "s7"]
    assert tree["/"]["kind"] == "grid" and tree["/"]["schema_version"] == SCHEMA_VERSION
    with pytest.raises(EvalkitError, match="holds 'grid' features"):
        read_embeddings(tmp_path / "b" / "test-grid-x.h5")


def test_partial_cache_with_missing_batches_never_becomes_a_cache_file(tmp_path):
    partial = PartialCache(tmp_path / "train-x.h5", batch_size=4)
    for k in (0, 1, 3):
        partial.write_batch(*_batches(18, 4)[k])
    with pytest.raises(EvalkitError, match="missing"):
        partial.assemble(18, {"embeddings": "float32"}, ATTRS,
                         {"ids": np.array([str(i) for i in range(18)], dtype=object),
                          "labels": np.zeros(18, dtype=np.int64)})
    assert not (tmp_path / "train-x.h5").exists()
    assert partial.done_batches() == {0, 1, 3}  # what was saved is kept


def test_embed_task_resumes_after_a_crash_and_redoes_only_missing_batches(crc_cache, tmp_path, monkeypatch):
    """Crash after 2 of the 4 train batches, rerun: 2 forward batches, and the file equals the uninterrupted one."""
    written: list[int] = []
    original = PartialCache.write_batch

    def crash_after_two(self, indices, embeddings, readable=None):
        if len(written) == 2:
            raise RuntimeError("simulated crash")
        original(self, indices, embeddings, readable)
        written.append(int(indices[0]))

    monkeypatch.setattr(PartialCache, "write_batch", crash_after_two)
    with pytest.raises(RuntimeError, match="simulated crash"):
        embed_task(load_task(), small_timm(), DATA, tmp_path, cpu_embed(batch_size=8))
    train = crc_cache.caches["train"].path.relative_to(crc_cache.root)
    assert not (tmp_path / train).exists()
    partial_dir = (tmp_path / train).with_suffix(".partial")
    assert sorted(p.name for p in partial_dir.glob("batch-*.npz")) == ["batch-00000000.npz", "batch-00000001.npz"]

    def counting(self, indices, embeddings, readable=None):
        original(self, indices, embeddings, readable)
        written.append(int(indices[0]))

    written.clear()
    monkeypatch.setattr(PartialCache, "write_batch", counting)
    # A different batch size on the rerun must not move the saved batch boundaries.
    caches = embed_task(load_task(), small_timm(), DATA, tmp_path, cpu_embed(batch_size=5))
    assert written == [16, 24, 0, 5, 10, 15]  # train batches 2 and 3, then all of val at the new size
    assert not any(c.reused for c in caches)
    assert_same_cache(crc_cache.caches["train"].path, tmp_path / train)
    val_ref, val = read_h5(crc_cache.caches["val"].path), read_h5(caches[1].path)
    assert val["ids"] == val_ref["ids"] and np.array_equal(val["labels"], val_ref["labels"])
    np.testing.assert_allclose(val["embeddings"], val_ref["embeddings"], rtol=1e-4, atol=1e-4)
    assert not partial_dir.exists()


def test_changed_data_is_not_served_from_a_stale_cache(tmp_path):
    """After a tile is added to the split, the old cache must not be reused as if it described the data."""
    data_root = tmp_path / "data"
    copy = copy_crc_demo(data_root)
    task, model = load_task(), small_timm(input_size=32)
    embed_task(task, model, data_root, tmp_path / "emb", cpu_embed())
    shutil.copy(copy / "ADI" / "ADI-AAQEFMRI.tif", copy / "ADI" / "ADI-COPY.tif")
    with open(copy / "split.csv", "a") as fh:
        fh.write("ADI/ADI-COPY.tif,ADI,train\n")
    try:
        caches = embed_task(load_task(), small_timm(input_size=32), data_root, tmp_path / "emb", cpu_embed())
    except EvalkitError as exc:  # refusing is fine, with a message that names the task and split
        assert "crc_demo" in str(exc) and "train" in str(exc)
    else:
        train = read_embeddings(caches[0].path)
        assert len(train.ids) == 26 and train.ids[-1] == "ADI/ADI-COPY.tif"


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_read_embeddings_gives_float32_rows_of_any_stored_type(tmp_path, dtype):
    """Rows are read straight into one float32 tensor (HDF5 converts chunk by chunk), equal to the stored values."""
    stored = np.random.default_rng(0).normal(size=(300, 5)).astype(dtype)
    path = tmp_path / "rows.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("embeddings", data=stored, chunks=(64, 5))
        f.create_dataset("labels", data=np.arange(300) % 3)
        f.create_dataset("ids", data=np.array([f"s{i}" for i in range(300)], dtype=object),
                         dtype=h5py.string_dtype("utf-8"))
        f.attrs.update({"schema_version": SCHEMA_VERSION, "kind": "rows", "model": "m", "model_fingerprint": "",
                        "dataset": "d", "split": "train", "transform": "", "complete": True,
                        "evalkit_version": "external"})
    data = read_embeddings(path)
    assert data.embeddings.dtype == torch.float32 and data.embeddings.is_contiguous()
    assert np.array_equal(data.embeddings.numpy(), stored.astype(np.float32))
    assert data.ids[:2] == ["s0", "s1"] and data.labels.tolist()[:4] == [0, 1, 2, 0]
