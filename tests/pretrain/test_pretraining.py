"""LeJEPA pretraining end to end on the shipped tiles: views, the network, a short run whose
loss falls, resume from last.ckpt, and the checkpoint read back through the model adapter."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Callable

import pytest
import torch
from jsonargparse import ArgumentParser
from PIL import Image

from evalkit.cli import main
from evalkit.errors import EvalkitError
from evalkit.models import LeJEPAModel, Preprocessing
from evalkit.pretrain import sweep
from evalkit.pretrain.lejepa_loss import LeJEPALoss
from evalkit.pretrain.model import LeJEPANetwork
from evalkit.pretrain.module import ModelConfig, OptimConfig, PretrainingModule
from evalkit.pretrain.objectives import Objective
from evalkit.pretrain.simclr_loss import SimCLRLoss
from evalkit.pretrain.run import DataConfig, TrainerConfig, run_pretraining
from evalkit.pretrain.views import HEDJitter, MultiCropViews, ViewsConfig
from helpers import CRC_TASK, DATA

TINY_VIEWS = ViewsConfig(global_size=64, local_size=32, n_global=2, n_local=2)
# timm's 0.4M-parameter test ResNet (96 features): the runs below test the training loop, its checkpoints and
# resume, not what a real backbone learns (the shipped ResNet-18 run is `make pretrained-checkpoint`).
BACKBONE = "test_resnet"


def test_views_are_global_first_with_the_configured_sizes():
    image = Image.open(next((DATA / "crc_demo").rglob("*.png"))).convert("RGB")
    views = MultiCropViews(ViewsConfig(hed_jitter=0.05))(image)
    assert [v.shape for v in views] == [(3, 224, 224)] * 2 + [(3, 96, 96)] * 8
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)


def test_stain_jitter_of_zero_strength_is_the_identity():
    image = torch.rand(3, 16, 16) * 0.9 + 0.05
    assert torch.allclose(HEDJitter(0.0)(image), image, atol=1e-4)
    assert not torch.allclose(HEDJitter(0.2)(image), image, atol=1e-3)


@pytest.mark.parametrize("backbone", ["resnet18", "vit_tiny_patch16_224"])
def test_network_embeds_views_of_two_sizes(backbone):
    net = LeJEPANetwork(backbone, proj_hidden_dim=64, proj_dim=16)
    views = [torch.randn(3, 3, 64, 64)] * 2 + [torch.randn(3, 3, 32, 32)] * 3
    emb, proj = net(views)
    assert emb.shape == (5, 3, net.embed_dim) and proj.shape == (5, 3, 16)


def _train(output: Path, epochs: int, every: int = 2, log: Callable[[str], None] = lambda _: None,
           objective: Objective | None = None) -> Path:
    return run_pretraining(ModelConfig(BACKBONE, 256, 32), TINY_VIEWS,
                           DataConfig(tile_folders=[str(DATA / "crc_demo")], batch_size=16, num_workers=0),
                           OptimConfig(lr=2e-3, warmup_steps=2),
                           TrainerConfig(output_dir=str(output), max_epochs=epochs, accelerator="cpu", devices=1,
                                         log_every_n_steps=1, checkpoint_every=every),
                           objective=objective or LeJEPALoss(num_directions=64), log=log)


def _epoch_losses(output: Path) -> list[float]:
    with open(output / "metrics.csv", newline="") as fh:
        return [float(row["train/loss_epoch"]) for row in csv.DictReader(fh) if row.get("train/loss_epoch")]


def test_simclr_trains_through_the_same_pipeline_and_its_checkpoint_loads(tmp_path):
    """The objective is the only difference: same data, views, network, optimiser and checkpoints."""
    checkpoints = _train(tmp_path / "simclr", epochs=3, every=3, objective=SimCLRLoss(temperature=0.2))
    losses = _epoch_losses(tmp_path / "simclr")
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    hparams = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["objective"] == {"name": "simclr", "settings": {"temperature": 0.2}}
    backbone = LeJEPAModel(checkpoint_path=str(checkpoints / "last.ckpt"), preprocessing=Preprocessing(input_size=64)).build()
    assert backbone(torch.zeros(2, 3, 64, 64))["cls"].shape == (2, 96)


def test_a_short_run_lowers_the_loss_resumes_and_loads_through_the_adapter(tmp_path):
    checkpoints = _train(tmp_path / "run", epochs=6)
    losses = _epoch_losses(tmp_path / "run")
    assert len(losses) == 6 and losses[-1] < losses[0], losses
    assert {p.name for p in checkpoints.iterdir()} == {"init.ckpt", "epoch=001.ckpt", "epoch=003.ckpt",
                                                       "epoch=005.ckpt", "last.ckpt"}
    _train(tmp_path / "run", epochs=7)  # resumes from last.ckpt: one more epoch, not seven
    assert len(_epoch_losses(tmp_path / "run")) == 7

    spec = LeJEPAModel(checkpoint_path=str(checkpoints / "last.ckpt"), preprocessing=Preprocessing(input_size=64))
    assert spec.name == "lejepa-run-last"
    backbone = spec.build()
    state = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    net = LeJEPANetwork(BACKBONE, 256, 32)
    net.load_state_dict({k[len("network."):]: v for k, v in state.items() if k.startswith("network.")})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(backbone(x)["cls"], net.eval().backbone(x), atol=1e-5)
    assert not any(p.requires_grad for p in backbone.parameters())

    # the checkpoint sweep: the random init, then one row per kept epoch with its loss, RankMe/ODCorr and
    # probe accuracy; the init row's network is the one the run started from
    init = torch.load(checkpoints / "init.ckpt", map_location="cpu", weights_only=True)
    assert init["global_step"] == 0 and init["epoch"] == 0
    parser = ArgumentParser(exit_on_error=False)
    sweep.add_arguments(parser)
    sweep.run(parser.parse_args([str(tmp_path / "run"), "--task", str(CRC_TASK), "--input_size", "64", "--n_runs", "2"]),
              log=lambda _: None)
    with open(tmp_path / "run" / "sweep.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epochs"]) for r in rows] == [0, 2, 4, 6]
    assert rows[0]["loss"] == "" and rows[0]["checkpoint"] == "init.ckpt"
    assert all(float(r["loss"]) == pytest.approx(losses[int(r["epochs"]) - 1]) for r in rows[1:])
    assert all(0 <= float(r["val_balanced_accuracy"]) <= 1 and float(r["rankme"]) >= 1 for r in rows)
    assert (tmp_path / "run" / "loss_curve.png").stat().st_size > 10_000


def test_adapter_refuses_a_missing_or_foreign_checkpoint(tmp_path):
    with pytest.raises(EvalkitError, match="not found"):
        LeJEPAModel(checkpoint_path=str(tmp_path / "none.ckpt")).build()
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(EvalkitError, match="not a checkpoint of `evalkit pretrain`"):
        LeJEPAModel(checkpoint_path=str(tmp_path / "other.ckpt")).build()
    (tmp_path / "metrics.csv").write_text("epoch,step\n0,1\n")  # a file of the run, but not a checkpoint
    with pytest.raises(EvalkitError, match="metrics.csv is truncated, empty or not a weights file"):
        LeJEPAModel(checkpoint_path=str(tmp_path / "metrics.csv")).build()


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_adapter_does_not_run_code_from_a_checkpoint(tmp_path, capsys):
    torch.save({"hyper_parameters": {"model": {"backbone": "resnet18"}}, "payload": _Payload()}, tmp_path / "x.ckpt")
    with pytest.raises(EvalkitError, match="x.ckpt holds a non-tensor pickle object \\(print\\) that evalkit "
                                           "refuses to unpickle") as info:
        LeJEPAModel(checkpoint_path=str(tmp_path / "x.ckpt")).build()
    assert "\n" not in str(info.value)
    assert "code ran" not in capsys.readouterr().out


def test_pretrain_without_data_is_one_line(tmp_path, capsys):
    assert main(["pretrain", "--trainer.output_dir", str(tmp_path), "--trainer.max_epochs", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("evalkit: error:") and "data.tile_folders" in err and "\n" not in err


def test_a_logger_whose_package_is_missing_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("evalkit.pretrain.run._installed", lambda package: False)
    code = main(["pretrain", "--data.tile_folders", f"[{DATA / 'crc_demo'}]", "--data.batch_size", "4",
                 "--trainer.output_dir", str(tmp_path), "--trainer.logger", "wandb"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err == "evalkit: error: trainer.logger wandb needs the package wandb: pip install wandb (or use " \
                  "--trainer.logger csv)"


def test_fit_before_pretraining_says_to_pretrain(tmp_path, capsys):
    model = Path(__file__).resolve().parents[2] / "configs" / "models" / "lejepa_resnet18_cpu.yaml"
    assert main(["fit", "--config", str(CRC_TASK), "--config", str(model), "--model.init_args.checkpoint_path",
                 str(tmp_path / "run" / "checkpoints" / "last.ckpt"), "--embeddings_root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("evalkit: error: weights not found:") and "run `evalkit pretrain` first" in err


def _nan_loss_from(first: int):
    """LeJEPALoss.forward, NaN from optimiser step ``first`` on."""
    forward = LeJEPALoss.forward

    def nan_loss(self, proj, num_global, step):
        total, parts = forward(self, proj, num_global, step)
        return (total * math.nan if step >= first else total), parts

    return nan_loss


def _nan_weights(self):
    next(self.parameters()).data.fill_(math.nan)  # as an update from a NaN gradient would leave them


@pytest.mark.parametrize(("target", "replacement", "message"), [
    (LeJEPALoss, ("forward", _nan_loss_from(0)), "loss is not finite (NaN or inf) at step 2,"),
    (PretrainingModule, ("on_train_epoch_end", _nan_weights), "weights are not finite (NaN or inf) at step 4,"),
], ids=["loss", "weights"])
def test_training_that_goes_non_finite_stops_in_one_line_and_keeps_the_checkpoints(tmp_path, monkeypatch, target,
                                                                                    replacement, message):
    checkpoints = _train(tmp_path / "run", epochs=1)  # 41 tiles: 2 steps per epoch; writes last.ckpt only
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in checkpoints.iterdir()}
    assert set(before) == {"init.ckpt", "last.ckpt"}
    monkeypatch.setattr(target, *replacement)
    with pytest.raises(EvalkitError) as info:  # the resumed run would write last.ckpt and epoch=001.ckpt
        _train(tmp_path / "run", epochs=2)
    text = str(info.value)
    assert message in text and "--optim.lr" in text and "\n" not in text
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in checkpoints.iterdir()} == before


def test_last_ckpt_is_written_every_epoch_also_between_kept_ones(tmp_path, monkeypatch):
    """A run stopped in epoch 4 resumes from the end of epoch 3, not from the kept epoch=001.ckpt."""
    monkeypatch.setattr(LeJEPALoss, "forward", _nan_loss_from(6))
    with pytest.raises(EvalkitError, match="at step 6,"):
        _train(tmp_path / "run", epochs=4)  # checkpoint_every=2: kept after the 2nd epoch (step 4)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert {p.name for p in checkpoints.iterdir()} == {"init.ckpt", "epoch=001.ckpt", "last.ckpt"}
    assert torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 6


def _truncate(path: Path) -> bytes:
    """Cut ``path`` to a third, as a kill during its write leaves it; returns the bytes left."""
    data = path.read_bytes()[: path.stat().st_size // 3]
    path.write_bytes(data)
    return data


def test_a_truncated_last_ckpt_is_set_aside_and_the_newest_whole_epoch_resumes(tmp_path):
    checkpoints = _train(tmp_path / "run", epochs=1, every=1)  # writes epoch=000.ckpt, then last.ckpt
    left = _truncate(checkpoints / "last.ckpt")
    said: list[str] = []
    _train(tmp_path / "run", epochs=2, every=1, log=said.append)
    [aside] = checkpoints.glob("last.ckpt.damaged-*")
    assert aside.read_bytes() == left  # kept as it was, never deleted
    assert {p.name for p in checkpoints.glob("*.ckpt")} == {"init.ckpt", "epoch=000.ckpt", "epoch=001.ckpt", "last.ckpt"}
    assert torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 4
    assert len(_epoch_losses(tmp_path / "run")) == 2  # epoch 0 from before, epoch 1 resumed from epoch=000.ckpt
    line = next(s for s in said if "damaged" in s)
    assert line.startswith("last.ckpt is damaged (RuntimeError: PytorchStreamReader failed reading zip archive")
    assert line.endswith("; resuming from epoch=000.ckpt, the newest whole checkpoint") and "\n" not in line


def test_an_empty_last_ckpt_that_is_the_only_checkpoint_restarts_from_scratch(tmp_path):
    checkpoints = _train(tmp_path / "run", epochs=1)  # checkpoint_every=2: last.ckpt only
    (checkpoints / "last.ckpt").write_bytes(b"")
    earlier = (tmp_path / "run" / "metrics.csv").read_text()
    said: list[str] = []
    _train(tmp_path / "run", epochs=1, log=said.append)
    assert [p.stat().st_size for p in checkpoints.glob("last.ckpt.damaged-*")] == [0]
    [metrics_aside] = (tmp_path / "run").glob("metrics.csv.before-restart-*")
    assert metrics_aside.read_text() == earlier
    assert torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 2
    line = next(s for s in said if "damaged" in s)
    assert line.startswith("last.ckpt is damaged (EOFError), set aside as *.damaged-<time> in ")
    assert "no other checkpoint to fall back on, so training from scratch (the earlier metrics.csv is now " \
           "metrics.csv.before-restart-" in line
