"""Checkpoint files of ``evalkit pretrain``: atomic writes, and which file a rerun resumes from (or refuses)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evalkit.errors import EvalkitError
from evalkit.pretrain.checkpoints import AtomicCheckpointIO, resume_checkpoint


def _save(path: Path, step: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.full((4,), float(step))}}, path)


def test_an_interrupted_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    last = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, last)
    before = last.read_bytes()

    def killed_midway(obj, fh):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2}, last)
    assert last.read_bytes() == before
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]  # no partial file left behind
    monkeypatch.undo()
    assert torch.load(last, weights_only=True) == {"global_step": 1}


def test_a_whole_last_ckpt_is_used_and_a_missing_one_falls_back_to_the_newest_epoch(tmp_path):
    folder = tmp_path / "checkpoints"
    assert resume_checkpoint(tmp_path, print) is None  # a fresh run
    for epoch in (1, 3):
        _save(folder / f"epoch={epoch:03d}.ckpt", epoch)
    _save(folder / "last.ckpt", 4)
    assert resume_checkpoint(tmp_path, print) == folder / "last.ckpt"
    (folder / "last.ckpt").unlink()  # e.g. killed between writing epoch=003.ckpt and last.ckpt
    said: list[str] = []
    assert resume_checkpoint(tmp_path, said.append) == folder / "epoch=003.ckpt"
    assert said == [f"no last.ckpt in {folder}; resuming from epoch=003.ckpt, the newest kept checkpoint"]


def test_damaged_newer_checkpoints_are_set_aside_down_to_the_newest_whole_one(tmp_path):
    folder = tmp_path / "checkpoints"
    for epoch in (1, 3):
        _save(folder / f"epoch={epoch:03d}.ckpt", epoch)
    (folder / "epoch=003.ckpt").write_bytes(b"")
    (folder / "last.ckpt").write_bytes(b"\x00not a checkpoint" * 8)
    said: list[str] = []
    assert resume_checkpoint(tmp_path, said.append) == folder / "epoch=001.ckpt"
    assert sorted(p.name.split(".damaged-")[0] for p in folder.glob("*.damaged-*")) == ["epoch=003.ckpt", "last.ckpt"]
    assert not (folder / "last.ckpt").exists() and not (folder / "epoch=003.ckpt").exists()
    assert said == [f"last.ckpt and epoch=003.ckpt are damaged (UnpicklingError: Unsupported operand 0), set aside "
                    f"as *.damaged-<time> in {folder}; resuming from epoch=001.ckpt, the newest whole checkpoint"]


def test_several_damaged_checkpoints_and_none_whole_are_refused_without_renaming(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"")
    (folder / "epoch=001.ckpt").write_bytes(b"")
    with pytest.raises(EvalkitError) as info:
        resume_checkpoint(tmp_path, print)
    assert str(info.value) == (f"cannot resume: 2 checkpoints in {folder} are truncated, empty or not checkpoints "
                               f"({folder / 'last.ckpt'}: EOFError), more than an interrupted write leaves; check the "
                               "disk or copy, or train into another --trainer.output_dir")
    assert sorted(p.name for p in folder.iterdir()) == ["epoch=001.ckpt", "last.ckpt"]


class _Marker:
    """Unpickling this creates the file ``path``: the stand-in for a payload."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_last_ckpt_holding_a_pickled_object_is_refused_without_unpickling_it(tmp_path):
    folder = tmp_path / "checkpoints"
    _save(folder / "epoch=001.ckpt", 1)
    marker = tmp_path / "code-ran"
    torch.save({"global_step": 2, "payload": _Marker(marker)}, folder / "last.ckpt")
    with pytest.raises(EvalkitError) as info:
        resume_checkpoint(tmp_path, print)
    assert str(info.value) == (f"cannot resume from {folder / 'last.ckpt'}: it holds a non-tensor pickle object "
                               "(io.open) that evalkit refuses to unpickle, so evalkit did not write it; move it "
                               f"out of {folder} or train into another --trainer.output_dir")
    assert not marker.exists()
    assert (folder / "last.ckpt").is_file()  # not set aside: it is whole, and not ours to move
