"""The Lightning loop of the embedding stage: batches not yet saved go through the backbone, and each
batch's outputs are written to the split's partial cache as it finishes (:mod:`evalkit.embed.cache`).

A module of its own so that :mod:`evalkit.embed.predict` imports Lightning (seconds) only when some
split must be embedded: a predict whose caches are complete never does.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from typing import Iterator

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import BasePredictionWriter

from evalkit.embed.cache import PartialCache
from evalkit.embed.config import EmbedConfig
from evalkit.embed.features import FeatureSet
from evalkit.errors import EvalkitError, one_line
from evalkit.models.base import Backbone
from evalkit.runtime import on_gpu, progress_bars


class _EmbedModule(L.LightningModule):
    def __init__(self, backbone: Backbone, features: FeatureSet) -> None:
        super().__init__()
        self.backbone = backbone
        self.features = features

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> tuple[dict[str, torch.Tensor], ...]:
        images, indices, readable = batch
        outputs = {name: value.float() for name, value in self.features.outputs(self.backbone, images).items()}
        return outputs, indices, readable


class _BatchWriter(BasePredictionWriter):
    def __init__(self, partial: PartialCache, dtypes: dict[str, str]) -> None:
        super().__init__(write_interval="batch")
        self.partial = partial
        self.dtypes = dtypes

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        outputs, indices, readable = prediction
        arrays = {name: value.cpu().numpy().astype(self.dtypes[name]) for name, value in outputs.items()}
        self.partial.write_batch(indices.cpu().numpy(), arrays, readable.cpu().numpy())


class _PendingBatches(torch.utils.data.Sampler[list[int]]):
    """The batches not yet saved, with fixed boundaries ``[k*B, (k+1)*B)``, split round-robin over ranks.

    The rank is read when iteration starts, after Lightning has set up the process group.
    """

    def __init__(self, n: int, batch_size: int, done: set[int]) -> None:
        self.batch_size = batch_size
        self.n = n
        self.pending = [k for k in range(math.ceil(n / batch_size)) if k not in done]

    def _mine(self) -> list[int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
            # Lightning refuses a rank with an empty loader, so with fewer batches than ranks the
            # spare ranks embed a batch again: batch files are per batch and replaced atomically.
            return self.pending[rank::world] or [self.pending[rank % len(self.pending)]]
        return self.pending

    def __iter__(self) -> Iterator[list[int]]:
        for k in self._mine():
            yield list(range(k * self.batch_size, min(self.n, (k + 1) * self.batch_size)))

    def __len__(self) -> int:
        return len(self._mine())


def _precision(accelerator: str) -> str:
    return "bf16-mixed" if on_gpu(accelerator) else "32-true"


def run_predict(backbone: Backbone, dataset: torch.utils.data.Dataset, features: FeatureSet, n: int,
                 partial: PartialCache, cfg: EmbedConfig) -> None:
    """Embed the batches of ``dataset`` that ``partial`` has not saved yet, each saved as it finishes."""
    pending = _PendingBatches(n, partial.batch_size, partial.done_batches())
    if not pending.pending:
        return
    workers = cfg.num_workers if cfg.num_workers is not None else min(4, os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=pending, num_workers=workers,
                                         pin_memory=torch.cuda.is_available(), persistent_workers=False)
    # Lightning's banner lines and tips are noise in a CLI that prints its own progress.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*custom batch sampler.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    try:
        trainer = L.Trainer(
            accelerator=cfg.accelerator, devices=cfg.devices, precision=_precision(cfg.accelerator),
            logger=False, enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress_bars(),
            use_distributed_sampler=False, callbacks=[_BatchWriter(partial, features.dtypes(cfg))],
            inference_mode=True,
        )
    except MisconfigurationException as exc:  # e.g. accelerator gpu on a machine without one
        raise EvalkitError(f"--embed.accelerator {cfg.accelerator} --embed.devices {cfg.devices}: "
                           f"{one_line(exc)}; use --embed.accelerator auto or cpu") from None
    try:
        trainer.predict(_EmbedModule(backbone, features), dataloaders=loader, return_predictions=False)
    except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into SystemExit(1)
        raise EvalkitError("interrupted; the finished batches are saved: rerun the same command to resume") from None
    trainer.strategy.barrier()
