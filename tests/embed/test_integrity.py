"""A cache is reused only when its inputs are provably the same (docs/cache.md, "What is checked").

Each test builds the failure it guards against: a tile replaced by another of the same size (with
its mtime put back), a resume after such a replacement, a file changed during the run, an edited
cache, a clone of the data, two processes on one cache, and the leftovers of a kill.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from evalkit.embed import embed_task, read_embeddings
from evalkit.embed import manifest as manifest_module
from evalkit.embed.cache import PartialCache
from evalkit.embed.manifest import stat_record_path
from evalkit.errors import EvalkitError
from evalkit.locks import FileLock
from helpers import CRC_TASK, cli_env, copy_crc_demo, cpu_embed, evalkit_cmd, load_task, \
    model_yaml, small_timm

# Three training tiles of one size (152,228 bytes, uncompressed TIFF): train rows 4, 13 and 19, which are
# in batches 0, 1 and 2 at batch size 8.
SAME_SIZE = ("DEB/DEB-ACHGAMCT.tif", "MUS/MUS-AACVWIEK.tif", "STR/STR-AACRYYNQ.tif")
_WRITE_BATCH = PartialCache.write_batch


def _embed(data_root: Path, emb: Path, log: list[str] | None = None, **cfg):
    return embed_task(load_task(), small_timm(input_size=32), data_root, emb, cpu_embed(**cfg),
                      (log if log is not None else []).append)


def _replace_keeping_mtime(src: Path, dst: Path) -> None:
    """Overwrite ``dst`` with ``src``'s bytes (same size) and put ``dst``'s mtime back, as ``cp -p`` might."""
    st = dst.stat()
    assert src.stat().st_size == st.st_size
    dst.write_bytes(src.read_bytes())
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def _row(path: Path, sample_id: str) -> np.ndarray:
    rows = read_embeddings(path)
    return rows.embeddings[rows.ids.index(sample_id)].numpy()


@pytest.fixture
def crc_copy(tmp_path):
    return tmp_path / "data", copy_crc_demo(tmp_path / "data"), tmp_path / "emb"


def _count_batches(monkeypatch) -> list[int]:
    written: list[int] = []

    def counting(self, indices, arrays, readable=None):
        _WRITE_BATCH(self, indices, arrays, readable)
        written.append(int(indices[0]))

    monkeypatch.setattr(PartialCache, "write_batch", counting)
    return written


def test_a_same_size_replacement_with_its_mtime_put_back_is_re_embedded(crc_copy, monkeypatch):
    data_root, copy, emb = crc_copy
    first = _embed(data_root, emb)[0].path
    deb, mus = _row(first, SAME_SIZE[0]), _row(first, SAME_SIZE[1])
    before = read_embeddings(first)
    _replace_keeping_mtime(copy / SAME_SIZE[0], copy / SAME_SIZE[1])

    written, log = _count_batches(monkeypatch), []
    caches = _embed(data_root, emb, log)
    assert written == [8]  # only the batch that holds the replaced tile
    assert any("1 source file(s) changed since the cache was written" in line and SAME_SIZE[1] in line for line in log)
    assert caches[0].path == first and not caches[0].reused and caches[1].reused
    after = read_embeddings(first)
    np.testing.assert_allclose(_row(first, SAME_SIZE[1]), deb, rtol=1e-5, atol=1e-5)
    assert not np.allclose(deb, mus)
    keep = [i for i, sample in enumerate(after.ids) if sample != SAME_SIZE[1]]
    assert after.ids == before.ids and np.array_equal(after.embeddings[keep].numpy(), before.embeddings[keep].numpy())
    assert not first.with_name(first.name + ".stale").exists() and not first.with_suffix(".partial").exists()


def test_a_clone_with_new_mtimes_reuses_the_cache_after_one_hash_per_file(crc_copy, tmp_path, monkeypatch):
    data_root, copy, emb = crc_copy
    _embed(data_root, emb)
    clone_root = tmp_path / "clone"
    shutil.copytree(copy, clone_root / "crc_demo")  # new inodes, ctimes and mtimes: as a fresh checkout
    hashed: list[Path] = []
    original = manifest_module.file_sha256
    monkeypatch.setattr(manifest_module, "file_sha256", lambda p: hashed.append(p) or original(p))
    monkeypatch.setattr(PartialCache, "write_batch", lambda *a, **k: pytest.fail("a cloned tile was re-embedded"))
    log: list[str] = []
    assert all(c.reused for c in _embed(clone_root, emb, log))
    assert len(hashed) == len(set(hashed)) == 41  # every tile of train and val, once
    hashed.clear()
    assert all(c.reused for c in _embed(clone_root, emb))
    assert hashed == []  # the renewed stat record is the fast path now


def test_resume_rechecks_the_batches_already_saved(crc_copy, monkeypatch):
    data_root, copy, emb = crc_copy
    reference = _embed(data_root, tmp_emb := emb.with_name("reference"))[0].path
    original = _WRITE_BATCH
    saved: list[int] = []

    def crash_after_two(self, indices, arrays, readable=None):
        if len(saved) == 2:
            raise RuntimeError("simulated crash")
        original(self, indices, arrays, readable)
        saved.append(int(indices[0]))

    monkeypatch.setattr(PartialCache, "write_batch", crash_after_two)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _embed(data_root, emb)
    assert saved == [0, 8]
    _replace_keeping_mtime(copy / SAME_SIZE[2], copy / SAME_SIZE[0])  # a tile of the saved batch 0

    written, log = _count_batches(monkeypatch), []
    train = _embed(data_root, emb, log)[0].path
    assert written == [0, 16, 24, 0, 8]  # train: the dropped batch 0 and the missing 2 and 3; then val
    assert any("1 saved batch(es) hold images that changed" in line for line in log)
    np.testing.assert_allclose(_row(train, SAME_SIZE[0]), _row(reference, SAME_SIZE[2]), rtol=1e-5, atol=1e-5)
    assert tmp_emb.is_dir()


def test_a_file_changed_during_the_run_is_refused_and_re_embedded_by_the_next(crc_copy, monkeypatch):
    data_root, copy, emb = crc_copy
    original = _WRITE_BATCH
    target = copy / SAME_SIZE[0]

    def touch_after_first(self, indices, arrays, readable=None):
        original(self, indices, arrays, readable)
        if int(indices[0]) == 0:
            target.write_bytes(target.read_bytes())  # rewritten in place: a new ctime

    monkeypatch.setattr(PartialCache, "write_batch", touch_after_first)
    with pytest.raises(EvalkitError, match=r"1 source file\(s\) of crc_demo/train changed while being embedded"):
        _embed(data_root, emb)
    written = _count_batches(monkeypatch)
    train = _embed(data_root, emb)[0].path
    assert written == [0, 0, 8]  # train: only the batch of the file that moved; then val
    assert read_embeddings(train).embeddings.shape[0] == 25


def test_an_edited_cache_is_refused_by_fit_and_re_embedded_by_predict(crc_copy, tmp_path, monkeypatch):
    data_root, copy, emb = crc_copy
    train = _embed(data_root, emb)[0].path
    reference = tmp_path / "reference.h5"
    shutil.copy(train, reference)
    with h5py.File(train, "r+") as f:
        f["embeddings"][3, 0] += 1.0
    with pytest.raises(EvalkitError, match="'embeddings' array differs from what `evalkit predict` wrote"):
        read_embeddings(train)
    with pytest.raises(EvalkitError, match="'embeddings' array differs"):  # without the data nothing can redo it
        _embed(tmp_path / "no-data", emb)
    log: list[str] = []
    _embed(data_root, emb, log)
    assert any("'embeddings' array of" in line and "re-embedding the split" in line for line in log)
    read_embeddings(train)
    np.testing.assert_allclose(read_embeddings(train).embeddings, read_embeddings(reference).embeddings, atol=1e-5)


def test_edited_labels_are_caught_too(crc_copy):
    data_root, copy, emb = crc_copy
    train = _embed(data_root, emb)[0].path
    with h5py.File(train, "r+") as f:
        f["labels"][0] = 5
    with pytest.raises(EvalkitError, match="'labels' array differs"):
        read_embeddings(train)


def test_a_second_process_waits_for_the_lock_then_reuses_the_cache(crc_copy):
    data_root, copy, emb = crc_copy
    train = _embed(data_root, emb)[0].path
    holder = FileLock(train.with_name(train.name + ".lock"), "test")
    holder.acquire()
    log: list[str] = []
    waiting = threading.Event()
    result: dict = {}

    def second():
        def note(line):
            log.append(line)
            if "waiting for the cache" in line:
                waiting.set()
        result["caches"] = embed_task(load_task(), small_timm(input_size=32), data_root, emb, cpu_embed(), note)

    thread = threading.Thread(target=second)
    thread.start()
    assert waiting.wait(timeout=120), log
    assert thread.is_alive()  # it waits, it does not embed beside the holder
    holder.release()
    thread.join(timeout=120)
    assert [c.reused for c in result["caches"]] == [True, True]
    assert any(f"locked by pid {os.getpid()}" in line for line in log)


def test_two_predicts_on_one_cache_embed_it_once(tmp_path):
    """Started together: both exit 0, and each split is embedded by exactly one of them (whatever the timing)."""
    data_root = tmp_path / "data"
    copy_crc_demo(data_root)
    model = model_yaml(tmp_path / "m.yaml", "evalkit.models.TimmModel", model_name="resnet18",
                       preprocessing={"input_size": 32})
    cmd = evalkit_cmd("predict", "--config", CRC_TASK, "--config", model, "--embed.accelerator", "cpu",
                      "--embed.num_workers", "0")
    env = cli_env(DATA_ROOT=str(data_root), EMBEDDINGS_ROOT=str(tmp_path / "emb"))
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    logs = "".join(out + err for out, err in outs)
    assert logs.count("crc_demo/train: embedding") == 1 and logs.count("crc_demo/val: embedding") == 1
    assert "Traceback" not in logs


def test_leftovers_of_a_kill_after_the_final_rename_are_removed(crc_copy):
    data_root, copy, emb = crc_copy
    train = _embed(data_root, emb)[0].path
    partial = train.with_suffix(".partial")
    partial.mkdir()
    (partial / "batch-00000000.npz").write_bytes(b"left by a kill")
    train.with_suffix(".h5.tmp").write_bytes(b"half")
    train.with_name(train.name + ".stale").write_bytes(b"old")
    stat_tmp = train.with_name(train.name + ".stat.npz.12345.tmp.npz")
    stat_tmp.write_bytes(b"half")
    dead = subprocess.Popen(["true"])  # a writer that has exited
    dead.wait()
    index_tmp = emb / ".models" / f"0123.json.{dead.pid}.tmp"
    index_tmp.write_text("{")
    caches = _embed(data_root, emb)
    assert caches[0].reused
    assert not partial.exists() and not train.with_suffix(".h5.tmp").exists()
    assert not train.with_name(train.name + ".stale").exists() and not stat_tmp.exists() and not index_tmp.exists()


def test_a_cache_records_its_source_files(crc_copy):
    data_root, copy, emb = crc_copy
    train = _embed(data_root, emb)[0].path
    with h5py.File(train, "r") as f:
        paths = [p.decode() for p in f["source_files/path"][...]]
        assert paths[0] == "ADI/ADI-AAQEFMRI.tif" and len(paths) == 25
        assert f["source_files/sha256"][0].decode() == manifest_module.file_sha256(copy / paths[0])
        assert f["source_files/size"][0] == (copy / paths[0]).stat().st_size
    assert stat_record_path(train).is_file()


def test_the_pixel_limit_of_the_embed_options_applies_in_predict(crc_copy):
    data_root, copy, emb = crc_copy
    with pytest.raises(EvalkitError, match=r"more than the limit of 1,000 .*--embed.max_image_pixels"):
        _embed(data_root, emb, max_image_pixels=1000)
