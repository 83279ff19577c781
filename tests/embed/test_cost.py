"""What a cache cost to embed, recorded when it is written (``embedding_cost``), with the exact ``preprocessing``
and the ``precision``; a resumed cache sums its runs, a refreshed one counts what it copied, a reused one keeps
its record; and the decode workers and torch threads chosen from the cores."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from evalkit.embed import EmbedConfig, PooledRows, embed_task
from evalkit.embed import cost as cost_module
from evalkit.embed.cache import PartialCache
from evalkit.embed.cost import CostMeter, total_cost
from evalkit.embed.loop import parallelism
from helpers import DATA, copy_crc_demo, cpu_embed, load_task, small_timm

_WRITE_BATCH = PartialCache.write_batch
SPLIT_SIZES = {"train": 25, "val": 16}


def _cost(path) -> dict:
    return json.loads(PooledRows().read(path).attrs["embedding_cost"])


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_new_cache_records_its_cost_precision_and_preprocessing(crc_cache, split):
    """crc_cache: ResNet-18 at 64 px, batches of 8, no workers, CPU; train embedded first, then val."""
    path = crc_cache.caches[split].path
    attrs = PooledRows().read(path).attrs  # what `fit` sees as data[split].attrs
    assert attrs["precision"] == "fp32"
    assert json.loads(attrs["preprocessing"]) == crc_cache.model.build().preprocessing.as_dict()
    assert json.loads(attrs["preprocessing"])["input_size"] == 64
    cost = json.loads(attrs["embedding_cost"])
    n = SPLIT_SIZES[split]
    assert cost["images"] == n and cost["runs"] == 1 and cost["copied_images"] == 0
    assert 0 < cost["seconds"] < 600
    assert cost["images_per_s"] == pytest.approx(n / cost["seconds"], rel=1e-2)
    assert cost["steady_images_per_s"] > 0  # more than one batch: a rate after the first one
    assert 0 < cost["startup_s"] < 600
    # The model is built once, for the first split embedded; its build is that split's start-up.
    assert (cost["model_build_s"] > 0) == (split == "train")
    assert cost["startup_s"] >= cost["model_build_s"]
    assert cost["memory_kind"] == "process_peak_rss" and cost["peak_memory_bytes"] > 100 * 2**20
    assert cost["device"] == f"cpu ({cost['threads']} threads)"
    assert cost["precision"] == "fp32" and cost["num_workers"] == 0 and cost["batch_size"] == 8
    assert cost["devices"] == 1 and 1 <= cost["threads"] <= len(os.sched_getaffinity(0))


def test_a_reused_cache_is_not_timed_again(crc_cache):
    before = {s: c.path.read_bytes() for s, c in crc_cache.caches.items()}
    again = embed_task(load_task(), small_timm(), DATA, crc_cache.root, cpu_embed())
    assert all(c.reused and c.seconds == 0.0 for c in again)
    assert {c.split: c.path.read_bytes() for c in again} == before  # the record of the run that wrote it


def test_a_resumed_cache_sums_its_runs(tmp_path, monkeypatch):
    """Crash in the 3rd batch's save, rerun: both runs' images and seconds are in the record."""
    saves: list[int] = []

    def crash_in_third_save(self, indices, arrays, readable=None):
        if len(saves) == 2:
            raise RuntimeError("simulated crash")
        _WRITE_BATCH(self, indices, arrays, readable)
        saves.append(int(indices[0]))

    monkeypatch.setattr(PartialCache, "write_batch", crash_in_third_save)
    with pytest.raises(RuntimeError, match="simulated crash"):
        embed_task(load_task(), small_timm(input_size=32), DATA, tmp_path, cpu_embed())
    [partial] = tmp_path.rglob("train-rows-*.partial")
    [killed] = [json.loads(p.read_text()) for p in partial.glob("cost-*.json")]
    assert killed["images"] == 24  # 3 batches went through the model, the 3rd was lost in its save
    monkeypatch.setattr(PartialCache, "write_batch", _WRITE_BATCH)

    caches = embed_task(load_task(), small_timm(input_size=32), DATA, tmp_path, cpu_embed())
    cost = _cost(caches[0].path)
    assert cost["runs"] == 2
    assert cost["images"] == 24 + 9  # the rerun: batches 2 (8 images) and 3 (1 image)
    assert cost["seconds"] > killed["seconds"]
    assert cost["startup_s"] > killed["startup_s"]
    assert cost["peak_memory_bytes"] >= killed["peak_memory_bytes"]
    assert _cost(caches[1].path)["runs"] == 1  # val was embedded by the rerun alone


def test_a_refreshed_cache_counts_the_rows_it_copied(tmp_path):
    """One tile changes: its batch is embedded again, the other rows are copied and not timed again."""
    data_root = tmp_path / "data"
    copy = copy_crc_demo(data_root)
    emb = tmp_path / "emb"
    first = embed_task(load_task(), small_timm(input_size=32), data_root, emb, cpu_embed())[0].path
    target = copy / "MUS/MUS-AACVWIEK.tif"  # sample 8 of train: batch 1 of 4
    shutil.copyfile(copy / "DEB/DEB-ACHGAMCT.tif", target)
    caches = embed_task(load_task(), small_timm(input_size=32), data_root, emb, cpu_embed())
    assert caches[0].path == first and not caches[0].reused
    cost = _cost(first)
    assert cost["images"] == 8 and cost["copied_images"] == 25 - 8 and cost["runs"] == 1


def _meter(folder, run, rank, split_start, loop_start, build_s=0.0):
    settings = {"precision": "bf16", "num_workers": 1, "threads": 2, "batch_size": 8}
    return CostMeter(folder, run, rank, torch.device("cpu"), split_start, loop_start, build_s, settings)


def test_total_cost_adds_runs_one_after_another_and_ranks_side_by_side(tmp_path, monkeypatch):
    clock = iter([3.0, 5.0,  # run a, one rank: batches saved at 3 s and 5 s
                  104.0, 105.0, 106.0])  # run b, two ranks: rank 0 at 104 s and 106 s, rank 1 at 105 s
    monkeypatch.setattr(cost_module.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(cost_module, "_peak_rss_bytes", iter([10, 30, 20, 25, 22]).__next__)
    a = _meter(tmp_path, "aa", 0, split_start=0.0, loop_start=1.0, build_s=0.5)
    a.batch(8)
    a.batch(8)
    b0 = _meter(tmp_path, "bb", 0, split_start=100.0, loop_start=101.0, build_s=0.25)
    b1 = _meter(tmp_path, "bb", 1, split_start=100.0, loop_start=101.0, build_s=0.25)
    b0.batch(8)
    b1.batch(8)
    b0.batch(8)

    cost = total_cost(tmp_path, copied_images=3)
    threads = torch.get_num_threads()
    assert cost == {
        "images": 16 + 24,
        "seconds": 4.0 + 5.0,  # run b: its slowest rank, from its loop's start to its last batch
        "images_per_s": round(40 / 9, 3),
        # after each run's first batch (rank 0 at 3 s; run b's later rank at 105 s): 8 + 8 images in 2 + 1 s
        "steady_images_per_s": round(16 / 3, 3),
        "startup_s": 3.0 + 5.0,  # split start to first batch: run a 3 s, run b's later rank 5 s
        "model_build_s": 0.75,
        "peak_memory_bytes": 30,
        "memory_kind": "process_peak_rss",
        "device": [f"cpu ({threads} threads)", f"2 x cpu ({threads} threads)"],
        "devices": [1, 2],
        "precision": "bf16",
        "num_workers": 1,
        "threads": 2,
        "batch_size": 8,
        "runs": 2,
        "copied_images": 3,
    }


def test_no_timed_batch_means_no_cost(tmp_path):
    _meter(tmp_path, "cc", 0, 0.0, 0.0)  # started, killed before its first batch
    assert total_cost(tmp_path) is None
    assert total_cost(tmp_path / "absent") is None


@pytest.mark.parametrize("cores,gpu,devices,cfg,expected", [
    (2, False, 1, {}, (1, 2)),  # CPU: one mostly idle decode worker, the forward on every core
    (16, False, 1, {}, (2, 16)),
    (2, False, 2, {}, (1, 1)),  # two CPU ranks on two cores: a thread each
    (2, False, 1, {"num_workers": 0}, (0, 2)),
    (2, False, 1, {"num_workers": 2, "threads": 1}, (2, 1)),  # asked for: as asked
    (16, True, 1, {}, (8, 64)),  # a GPU: decoding is the work; torch's threads as they are
    (16, True, 4, {}, (3, 64)),
    (1, True, 1, {}, (1, 64)),
])
def test_workers_and_threads_come_from_the_cores(monkeypatch, cores, gpu, devices, cfg, expected):
    monkeypatch.setattr("evalkit.embed.loop.cores_available", lambda: cores)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)  # torch's own default, above every core count here
    assert parallelism(EmbedConfig(**cfg), gpu, devices) == expected


def test_threads_never_exceed_torchs_own_default(monkeypatch):
    monkeypatch.setattr("evalkit.embed.loop.cores_available", lambda: 16)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # e.g. OMP_NUM_THREADS=1 on a shared machine
    assert parallelism(EmbedConfig(), gpu=False) == (2, 1)


def test_the_threads_are_given_back_after_embedding(tmp_path):
    before = torch.get_num_threads()
    caches = embed_task(load_task(), small_timm(input_size=32), DATA, tmp_path, cpu_embed(threads=1))
    assert torch.get_num_threads() == before
    assert _cost(caches[0].path)["threads"] == 1 and _cost(caches[0].path)["device"] == "cpu (1 threads)"
