"""Embedding on two CPU processes (Lightning DDP over gloo): the caches equal a one-process run's,
also when a split has fewer batches than ranks (the val split here is one batch)."""

from __future__ import annotations

from helpers import CRC_TASK, DATA, RESNET_RANDOM, assert_same_cache, background_cli, run_in_process

ARGS = ["predict", "--config", CRC_TASK, "--config", RESNET_RANDOM, "--model.init_args.model_name", "resnet18",
        "--model.init_args.preprocessing.input_size", "64", "--data_root", DATA, "--embed.num_workers", "0",
        "--embed.accelerator", "cpu", "--embed.batch_size", "16"]  # train: 25 tiles = 2 batches; val: 16 = 1


def test_two_ranks_embed_what_one_does_even_with_fewer_batches_than_ranks(tmp_path):
    # Two ranks need a process of their own (Lightning starts the second by rerunning the command line); the
    # one-process reference runs here meanwhile.
    log = tmp_path / "two.log"
    with background_cli(*ARGS, "--embed.devices", "2", "--embeddings_root", tmp_path / "two", cwd=tmp_path, log=log,
                        timeout=240) as two:
        one = run_in_process(*ARGS, "--embeddings_root", tmp_path / "one", cwd=tmp_path)
    two_err = log.read_text()  # stdout and stderr: predict prints its progress on stderr
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two_err
    assert "Traceback" not in two_err
    assert two_err.count(": embedding ") == 2  # one progress line per split, not one per rank
    caches = sorted((tmp_path / "one").rglob("*.h5"))
    assert [p.name for p in caches] == [p.name for p in sorted((tmp_path / "two").rglob("*.h5"))]
    assert len(caches) == 2
    for path in caches:
        assert_same_cache(path, tmp_path / "two" / path.relative_to(tmp_path / "one"))
    assert not list((tmp_path / "two").rglob("*.partial"))
