"""``evalkit pretrain``: data, views, model and Lightning Trainer from one config.

Checkpoints go to ``<output_dir>/checkpoints/``: ``epoch=NNN.ckpt`` every ``checkpoint_every``
epochs, all kept, for the checkpoint sweep, and ``last.ckpt`` every epoch, each written atomically;
rerunning the same command resumes from ``last.ckpt`` (from the newest whole ``epoch=NNN.ckpt`` when
``last.ckpt`` is damaged, see :func:`evalkit.pretrain.checkpoints.resume_checkpoint`). Metrics go
to ``<output_dir>/metrics.csv`` (CSVLogger) and optionally TensorBoard or wandb (offline unless
configured otherwise).
"""

from __future__ import annotations

import csv
import importlib.util
import inspect
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.fabric.utilities.exceptions import MisconfigurationException

from evalkit.data.wsi import WSIPatches
from evalkit.errors import EvalkitError, one_line
from evalkit.pretrain.checkpoints import AtomicCheckpointIO, resume_checkpoint
from evalkit.pretrain.data import TileImages, ViewsOf, collate_views
from evalkit.pretrain.module import ModelConfig, OptimConfig, module_from
from evalkit.pretrain.objectives import Objective, create_objective
from evalkit.pretrain.views import MultiCropViews, ViewsConfig
from evalkit.runtime import on_gpu, progress_bars


INITIAL_CHECKPOINT = "init.ckpt"


@dataclass
class DataConfig:
    """Args:
        tile_folders: folders of tile images (searched recursively).
        wsi: whole-slide images patched online (paths, magnification, patch size, tissue
            fraction, patches per epoch; see :class:`evalkit.data.wsi.WSIPatches`).
        batch_size: images per step per device; num_workers: DataLoader workers per device.
    """

    tile_folders: list[str] = field(default_factory=list)
    wsi: WSIPatches | None = None
    batch_size: int = 64
    num_workers: int = 4


@dataclass
class TrainerConfig:
    """Args:
        output_dir: checkpoints, metrics.csv and logs.
        max_epochs: epochs of the data above.
        accelerator, devices, num_nodes, strategy: Lightning's (``ddp`` for several GPUs or nodes).
        precision: ``bf16-mixed`` on GPU and ``32-true`` on CPU when null.
        logger: ``csv``, ``tensorboard`` or ``wandb`` (offline unless WANDB_MODE says otherwise).
        resume: continue from ``<output_dir>/checkpoints/last.ckpt`` when it exists (a damaged one is set
            aside and the newest whole ``epoch=NNN.ckpt`` used).
        checkpoint_every: epochs between the kept checkpoints ``epoch=NNN.ckpt`` (the checkpoint
            sweep); ``last.ckpt`` (for resume) is rewritten every epoch.
        seed: seeds model init, sampling and augmentations.
        log_every_n_steps: logging interval.
    """

    output_dir: str = "runs/pretrain"
    max_epochs: int = 100
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str | None = None
    logger: str = "csv"
    resume: bool = True
    seed: int = 0
    log_every_n_steps: int = 10
    checkpoint_every: int = 1


def _dataset(data: DataConfig, views: MultiCropViews) -> torch.utils.data.Dataset:
    parts: list[torch.utils.data.Dataset] = []
    if data.tile_folders:
        parts.append(TileImages(data.tile_folders, views))
    if data.wsi is not None and data.wsi.paths:
        parts.append(ViewsOf(data.wsi.random_dataset(), views))
    if not parts or sum(len(p) for p in parts) == 0:  # type: ignore[arg-type]
        raise EvalkitError("no pretraining images: set data.tile_folders and/or data.wsi.paths")
    return parts[0] if len(parts) == 1 else torch.utils.data.ConcatDataset(parts)


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _logger(trainer: TrainerConfig, output: Path):
    from lightning.pytorch import loggers

    if trainer.logger not in ("csv", "tensorboard", "wandb"):
        raise EvalkitError(f"unknown trainer.logger '{trainer.logger}'; use csv, tensorboard or wandb")
    csv_logger = loggers.CSVLogger(output, name="", version="")
    if trainer.logger == "csv":
        return csv_logger
    # Optional packages, not evalkit dependencies: say which one to install before training starts.
    needs = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}[trainer.logger]
    if not any(map(_installed, needs)):
        raise EvalkitError(f"trainer.logger {trainer.logger} needs the package {needs[0]}: "
                           f"pip install {needs[0]} (or use --trainer.logger csv)")
    if trainer.logger == "tensorboard":
        return [csv_logger, loggers.TensorBoardLogger(output, name="tb")]
    return [csv_logger, loggers.WandbLogger(save_dir=output, offline=True)]


def _checkpointing(folder: Path, every: int) -> list:
    """``epoch=NNN.ckpt`` every ``every`` epochs, all kept; ``last.ckpt`` after every epoch (resume).

    Lightning's ``save_last`` writes ``last.ckpt`` only in epochs that write a kept checkpoint (and at
    the end), so between those a top-1 checkpoint named ``last`` rewrites it every epoch."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    kept = ModelCheckpoint(dirpath=folder, filename="epoch={epoch:03d}", auto_insert_metric_name=False,
                           every_n_epochs=every, save_top_k=-1, save_last=every == 1)
    if every == 1:
        return [kept, _InitialCheckpoint(folder)]
    return [kept, ModelCheckpoint(dirpath=folder, filename="last", every_n_epochs=1, save_top_k=1,
                                  enable_version_counter=False), _InitialCheckpoint(folder)]


class _InitialCheckpoint(Callback):
    """``init.ckpt``: the weights before the first step, the sweep's epoch-0 (random init) row."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / INITIAL_CHECKPOINT

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0 and not self.path.exists():
            trainer.save_checkpoint(self.path, weights_only=True)


def run_pretraining(model: ModelConfig, views: ViewsConfig, data: DataConfig, optim: OptimConfig,
                    trainer: TrainerConfig, objective: Objective | None = None,
                    log: Callable[[str], None] = print) -> Path:
    """Train with ``objective`` (default: LeJEPA with its defaults); returns the checkpoint folder."""
    objective = objective if objective is not None else create_objective("lejepa")
    from lightning.pytorch.callbacks import LearningRateMonitor

    L.seed_everything(trainer.seed, workers=True, verbose=False)
    output = Path(trainer.output_dir)
    checkpoints = output / "checkpoints"
    dataset = _dataset(data, MultiCropViews(views))
    if len(dataset) < data.batch_size:  # type: ignore[arg-type]
        raise EvalkitError(f"{len(dataset)} pretraining images for a batch of {data.batch_size}: lower "
                           "data.batch_size or add data")
    loader = torch.utils.data.DataLoader(dataset, batch_size=data.batch_size, shuffle=True, drop_last=True,
                                         num_workers=data.num_workers, collate_fn=collate_views,
                                         persistent_workers=data.num_workers > 0,
                                         pin_memory=torch.cuda.is_available())
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    resume = resume_checkpoint(output, log) if trainer.resume else None  # checked to load, without running code
    ckpt_path = str(resume) if resume else None
    if ckpt_path:  # a resumed run keeps its checkpoints and earlier metrics rows, whatever Lightning says
        warnings.filterwarnings("ignore", message=".*Previous log files in this directory will be deleted.*")
        warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    try:
        pl_trainer = L.Trainer(
            max_epochs=trainer.max_epochs, accelerator=trainer.accelerator, devices=trainer.devices,
            num_nodes=trainer.num_nodes, strategy=trainer.strategy,
            precision=trainer.precision or ("bf16-mixed" if on_gpu(trainer.accelerator) else "32-true"),
            logger=_logger(trainer, output), log_every_n_steps=trainer.log_every_n_steps,
            callbacks=_checkpointing(checkpoints, trainer.checkpoint_every) + [LearningRateMonitor(logging_interval="step")],
            plugins=[AtomicCheckpointIO()],
            enable_model_summary=False, enable_progress_bar=progress_bars(),
        )
    except MisconfigurationException as exc:  # e.g. accelerator gpu on a machine without one
        raise EvalkitError(f"trainer settings (accelerator {trainer.accelerator}, devices {trainer.devices}, strategy "
                           f"{trainer.strategy}): {one_line(exc)}") from None
    if ckpt_path:
        log(f"resuming from {resume}")
    log(f"pretraining {model.backbone} with {objective.name} ({objective.settings()}) on {len(dataset)} images per "  # type: ignore[arg-type]
        "epoch, "
        f"{views.n_global}x{views.global_size}px + {views.n_local}x{views.local_size}px views -> {output}")
    # Lightning's CSVLogger starts metrics.csv afresh; a resumed run keeps the earlier rows.
    earlier = output / "metrics.csv"
    kept = output / f"metrics-before-resume-{len(list(output.glob('metrics-before-resume-*.csv')))}.csv"
    if ckpt_path and earlier.is_file():
        earlier.rename(kept)
    try:
        pl_trainer.fit(module_from(model, optim, views.n_global, objective), loader, ckpt_path=ckpt_path,
                       **_weights_only(pl_trainer))
    except (KeyboardInterrupt, SystemExit):
        raise EvalkitError(f"interrupted; rerun the same command to resume from {checkpoints}/last.ckpt") from None
    except MisconfigurationException as exc:  # e.g. resuming a run that already has more than max_epochs
        if not ckpt_path:
            raise EvalkitError(f"Lightning refused the trainer settings: {one_line(exc)}") from None
        raise EvalkitError(f"cannot resume from {resume}: {one_line(exc)}; raise --trainer.max_epochs, choose "
                           "another --trainer.output_dir or pass --trainer.resume false") from None
    finally:
        if kept.is_file() and pl_trainer.is_global_zero:
            _prepend_rows(kept, earlier)
    return checkpoints


def _weights_only(pl_trainer: L.Trainer) -> dict[str, bool]:
    """``weights_only=True`` for ``fit`` where Lightning takes it (2.6 on): it then loads the checkpoint the way
    :func:`resume_checkpoint` already checked it loads, unpickling no objects; older Lightning loads it as it does."""
    return {"weights_only": True} if "weights_only" in inspect.signature(pl_trainer.fit).parameters else {}


def _prepend_rows(kept: Path, metrics: Path) -> None:
    """``metrics`` := the rows of ``kept`` then its own, under the union of both headers."""
    tables = [list(csv.DictReader(path.open(newline=""))) for path in (kept, metrics) if path.is_file()]
    rows = [row for table in tables for row in table]
    fields = sorted({key for row in rows for key in row})
    tmp = metrics.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(metrics)
    kept.unlink()
