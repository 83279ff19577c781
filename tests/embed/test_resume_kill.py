"""A real ``kill -9`` in the middle of `evalkit predict`, then a rerun: the cache equals an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from helpers import CRC_TASK, DATA, RESNET_RANDOM, assert_same_cache, cli_env, evalkit_cmd

TRAIN_BATCHES = 13  # 25 training tiles in batches of 2
ARGS = ["predict", "--config", CRC_TASK, "--config", RESNET_RANDOM, "--model.init_args.model_name", "resnet18",
        "--model.init_args.preprocessing.input_size", "112", "--data_root", DATA,
        "--embed.batch_size", "2", "--embed.num_workers", "0", "--embed.accelerator", "cpu"]


def _start(root: Path, log: Path) -> subprocess.Popen:
    out = open(log, "w")  # a file, not a pipe: a full pipe would stall the run
    return subprocess.Popen(evalkit_cmd(*ARGS, "--embeddings_root", root), cwd=root.parent, env=cli_env(),
                            stdout=out, stderr=subprocess.STDOUT)


def _wait(proc: subprocess.Popen, log: Path, timeout: float = 300) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return log.read_text()


def test_sigkill_then_rerun_equals_an_uninterrupted_run(tmp_path):
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    ref_proc = _start(reference, tmp_path / "reference.log")  # runs alongside, into another root
    proc = _start(killed, tmp_path / "killed.log")
    try:
        deadline = time.monotonic() + 240
        batches: list[Path] = []
        while not batches:
            assert proc.poll() is None, "predict ended before the kill:\n" + (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "no batch file appeared in time"
            batches = list(killed.glob("crc_demo/*/train-*.partial/batch-*.npz"))
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # Killed mid-split: some batches saved, no cache file that a reader could take as complete.
    model_dir = batches[0].parents[1]
    saved = list(model_dir.glob("train-*.partial/batch-*.npz"))
    assert 1 <= len(saved) < TRAIN_BATCHES
    assert not list(model_dir.glob("*.h5"))

    rerun = subprocess.run(evalkit_cmd(*ARGS, "--embeddings_root", killed), cwd=tmp_path, env=cli_env(),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    reference_log = _wait(ref_proc, tmp_path / "reference.log")
    assert ref_proc.returncode == 0, reference_log

    files = sorted(p.relative_to(killed) for p in killed.rglob("*.h5"))
    assert [f.name.split("-")[0] for f in files] == ["train", "val"]
    assert files == sorted(p.relative_to(reference) for p in reference.rglob("*.h5"))
    for file in files:
        assert_same_cache(killed / file, reference / file)
    assert not list(killed.rglob("*.partial")) and not list(killed.rglob("*.tmp"))


def test_ctrl_c_says_how_to_resume(tmp_path):
    """Ctrl+C (SIGINT) mid-embedding: the saved batches stay, and the user is told to rerun, in one line."""
    root = tmp_path / "emb"
    proc = _start(root, tmp_path / "interrupted.log")
    try:
        deadline = time.monotonic() + 240
        while not list(root.glob("crc_demo/*/train-*.partial/batch-*.npz")):
            assert proc.poll() is None, "predict ended before it could be interrupted"
            assert time.monotonic() < deadline, "no batch file appeared in time"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        output = _wait(proc, tmp_path / "interrupted.log", timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "Traceback" not in output
    assert list(root.glob("crc_demo/*/train-*.partial/batch-*.npz")), "saved batches must survive"
    assert not list(root.rglob("*.h5"))
    errors = [line for line in output.splitlines() if line.startswith("evalkit: error:")]
    assert len(errors) == 1 and "rerun" in errors[0], output
