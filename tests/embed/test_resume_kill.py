"""A real ``kill -9`` in the middle of `evalkit predict`, then a rerun: the cache equals an uninterrupted run's.

The kill is deterministic: with ``EVALKIT_FAULT_AFTER_BATCHES=N`` the process SIGKILLs itself right after it
saved its N-th batch file (embed/cache.py ``FAULT_HOOK``), so no test races a timer against the embedding.
"""

from __future__ import annotations

import signal
import time

from evalkit.embed.cache import FAULT_HOOK
from helpers import CRC_TASK, DATA, RESNET_RANDOM, assert_same_cache, background_cli, run_in_process

TRAIN_BATCHES = 13  # 25 training tiles in batches of 2
ARGS = ["predict", "--config", CRC_TASK, "--config", RESNET_RANDOM, "--model.init_args.model_name", "resnet18",
        "--model.init_args.preprocessing.input_size", "112", "--data_root", DATA,
        "--embed.batch_size", "2", "--embed.num_workers", "0", "--embed.accelerator", "cpu"]


def test_sigkill_then_rerun_equals_an_uninterrupted_run(tmp_path):
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    log = tmp_path / "killed.log"
    with background_cli(*ARGS, "--embeddings_root", killed, cwd=tmp_path, log=log, **{FAULT_HOOK: "3"}) as proc:
        # the uninterrupted run, in this process meanwhile, into another root
        uninterrupted = run_in_process(*ARGS, "--embeddings_root", reference, cwd=tmp_path)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    assert proc.returncode == -signal.SIGKILL, log.read_text()

    # Killed mid-split right after its 3rd batch: those batches saved, no file a reader could take as complete.
    [partial] = killed.glob("crc_demo/*/train-rows-*.partial")
    assert sorted(p.name for p in partial.glob("batch-*.npz")) == [f"batch-{k:08d}.npz" for k in range(3)]
    assert not list(killed.rglob("*.h5")) and not list(killed.rglob("*.h5.tmp"))

    rerun = run_in_process(*ARGS, "--embeddings_root", killed, cwd=tmp_path)  # the resume needs no process of its own
    assert rerun.returncode == 0, rerun.stderr

    files = sorted(p.relative_to(killed) for p in killed.rglob("*.h5"))
    assert [f.name.split("-")[0] for f in files] == ["train", "val"]
    assert files == sorted(p.relative_to(reference) for p in reference.rglob("*.h5"))
    for file in files:
        assert_same_cache(killed / file, reference / file)
    assert not list(killed.rglob("*.partial")) and not list(killed.rglob("*.tmp"))


def test_ctrl_c_says_how_to_resume(tmp_path):
    """Ctrl+C (SIGINT) mid-embedding: the saved batches stay, and the user is told to rerun, in one line."""
    root, log = tmp_path / "emb", tmp_path / "interrupted.log"
    with background_cli(*ARGS, "--embeddings_root", root, cwd=tmp_path, log=log, timeout=120) as proc:
        deadline = time.monotonic() + 240
        while not list(root.glob("crc_demo/*/train-*.partial/batch-*.npz")):
            assert proc.poll() is None, "predict ended before it could be interrupted"
            assert time.monotonic() < deadline, "no batch file appeared in time"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
    output = log.read_text()
    assert proc.returncode != 0
    assert "Traceback" not in output
    assert list(root.glob("crc_demo/*/train-*.partial/batch-*.npz")), "saved batches must survive"
    assert not list(root.rglob("*.h5"))
    errors = [line for line in output.splitlines() if line.startswith("evalkit: error:")]
    assert len(errors) == 1 and "rerun" in errors[0], output
