"""Segmentation features go through the one cache writer: a ``kill -9`` in the middle of `evalkit predict`
(in the crop pool, then in the test grid), then a rerun, gives caches equal to an uninterrupted run's.

The kills are deterministic: ``EVALKIT_FAULT_AFTER_BATCHES=2`` makes the process SIGKILL itself right
after it saved the 2nd batch file of a split (embed/cache.py ``FAULT_HOOK``).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from consep_fixture import build_learnable_consep
from evalkit.embed.cache import FAULT_HOOK, SCHEMA_VERSION
from helpers import CONSEP_TASK, VIT_TINY, assert_same_cache, background_cli, h5_tree, run_cli, run_in_process

# 3 training images x 2 crops = 6 crops = 3 batches of 2; 2 test images of 288 px = 2 x 4 grid tiles = 4 batches.
ARGS = ["predict", "--config", CONSEP_TASK, "--config", VIT_TINY, "--task.dataset.init_args.allow_subset", "true",
        "--seg.crops_per_image", "2", "--seg.overlays", "1", "--embed.batch_size", "2", "--embed.num_workers", "0",
        "--embed.accelerator", "cpu"]


def _predict(data: Path, root: Path, **env: str) -> subprocess.CompletedProcess:
    return run_cli(*ARGS, "--data_root", data, "--embeddings_root", root, cwd=root.parent, **env)


def _batch_files(root: Path, pattern: str) -> list[str]:
    return sorted(p.name for p in root.glob(f"consep/*/{pattern}/batch-*.npz"))


def test_kill_9_in_the_crop_pool_and_in_the_grid_then_rerun_equals_an_uninterrupted_run(tmp_path):
    data = tmp_path / "data"
    build_learnable_consep(data)
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    # 1: killed after 2 of the 3 batches of the training crop pool; the uninterrupted run, in this process meanwhile.
    log = tmp_path / "first.log"
    with background_cli(*ARGS, "--data_root", data, "--embeddings_root", killed, cwd=tmp_path, log=log,
                        **{FAULT_HOOK: "2"}) as proc:
        uninterrupted = run_in_process(*ARGS, "--data_root", data, "--embeddings_root", reference, cwd=tmp_path)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    assert proc.returncode == -signal.SIGKILL, log.read_text()
    assert _batch_files(killed, "train-crop_pool-*.partial") == ["batch-00000000.npz", "batch-00000001.npz"]
    assert not list(killed.rglob("*.h5")) and not list(killed.rglob("*.h5.tmp"))

    # 2: the pool's last batch is embedded (1 saved: no kill) and the pool assembled; killed in the grid.
    second = _predict(data, killed, **{FAULT_HOOK: "2"})
    assert second.returncode == -signal.SIGKILL, second.stderr
    assert [p.name.split("-")[:2] for p in killed.rglob("*.h5")] == [["train", "crop_pool"]]
    assert not list(killed.rglob("train-*.partial"))
    assert _batch_files(killed, "test-grid-*.partial") == ["batch-00000000.npz", "batch-00000001.npz"]

    # 3: without the hook the grid is finished (in this process: the resume needs no process of its own).
    third = run_in_process(*ARGS, "--data_root", data, "--embeddings_root", killed, cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert "reusing cache" in third.stderr  # the crop pool is not embedded again

    files = sorted(p.relative_to(killed) for p in killed.rglob("*.h5"))
    assert files == sorted(p.relative_to(reference) for p in reference.rglob("*.h5"))
    assert [f.name.split("-")[:2] for f in files] == [["test", "grid"], ["train", "crop_pool"]]
    for file in files:
        assert_same_cache(killed / file, reference / file)
    assert not list(killed.rglob("*.partial")) and not list(killed.rglob("*.tmp"))

    # What was compared: every array of both kinds, the grid's whole-image masks included.
    pool = h5_tree(killed / files[1])
    grid = h5_tree(killed / files[0])
    assert pool["/"]["kind"] == "crop_pool" and grid["/"]["kind"] == "grid"
    assert pool["/"]["schema_version"] == grid["/"]["schema_version"] == SCHEMA_VERSION
    assert pool["features/0"][:2] == ("float16", (6, 192, 14, 14))  # ViT-Ti/16: one level of 14 x 14 patches
    assert grid["features/0"][:2] == ("float16", (8, 192, 14, 14))
    assert pool["masks"][:2] == ("uint8", (6, 224, 224)) and grid["masks"][:2] == ("uint8", (8, 224, 224))
    assert {name for name in grid if name.startswith(("full_masks/", "overlay_images/"))} == {
        "full_masks/0", "full_masks/1", "overlay_images/0"}
    assert grid["full_masks/0"][:2] == ("uint8", (288, 288))
    assert json.loads(grid["/"]["ids"]) == ["Test/Images/test_1.png", "Test/Images/test_2.png"]
    assert json.loads(pool["/"]["ids"]) == [f"Train/Images/train_{k}.png" for k in (1, 2, 3)]


def test_the_seg_options_that_decide_what_is_embedded_enter_the_cache_key(tmp_path):
    """--seg.* options that decide what is embedded enter the cache key: a new pool never reuses an old one."""
    from evalkit.cli import build_parser
    from evalkit.preparse import chosen_evaluation
    from evalkit.embed.features import feature_file
    from evalkit.evaluations.segmentation import Segmentation
    from evalkit.segmentation.protocol import SegmentationConfig

    argv = ["--config", str(CONSEP_TASK), "--config", str(VIT_TINY), "--task.dataset.init_args.allow_subset", "true"]
    assert chosen_evaluation(argv) is Segmentation
    parser = build_parser("predict", Segmentation)
    objects = parser.instantiate_classes(parser.parse_args(argv))
    fingerprint = objects.model.fingerprint()

    def paths(**seg) -> dict[str, Path]:
        evaluation = Segmentation(seg=SegmentationConfig(**seg))
        return {split: feature_file(tmp_path, objects.task, objects.model.name, fingerprint, split, features)[1]
                for split, features in evaluation.features(objects.task).items()}

    base = paths(crops_per_image=2)
    assert base["train"].name.startswith("train-crop_pool-") and base["test"].name.startswith("test-grid-")
    assert paths(crops_per_image=2) == base
    assert paths(crops_per_image=3)["train"] != base["train"]
    assert paths(crops_per_image=3)["test"] == base["test"]  # the grid does not depend on the pool
    assert paths(crops_per_image=2, test_stride=100)["test"] != base["test"]
    assert paths(crops_per_image=2, seed=1)["train"] != base["train"]
    assert paths(crops_per_image=2, n_runs=1, max_steps=5) == base  # decoder settings are fit's only


@pytest.mark.slow
def test_two_ranks_write_the_feature_maps_one_rank_does(tmp_path):
    """Multi-device embedding of the crop pool and the grid (Lightning DDP over gloo): the same files.

    Slow (about 20 s); the default suite runs the same writer on two ranks with pooled rows
    (tests/embed/test_ddp.py), and `make test-all` runs this one too."""
    data = tmp_path / "data"
    build_learnable_consep(data)
    one, two = tmp_path / "one", tmp_path / "two"
    assert _predict(data, one).returncode == 0
    proc = run_cli(*ARGS, "--embed.devices", "2", "--data_root", data, "--embeddings_root", two, cwd=tmp_path,
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    files = sorted(one.rglob("*.h5"))
    assert [p.name for p in files] == [p.name for p in sorted(two.rglob("*.h5"))] and len(files) == 2
    for path in files:
        assert_same_cache(path, two / path.relative_to(one))
    assert not list(two.rglob("*.partial"))
