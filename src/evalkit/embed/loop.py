"""The Lightning loop of the embedding stage: batches not yet saved go through the backbone, and each
batch's outputs are written to the split's partial cache as it finishes (:mod:`evalkit.embed.cache`).

A module of its own so that :mod:`evalkit.embed.predict` imports Lightning (seconds) only when some
split must be embedded: a predict whose caches are complete never does.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
import warnings
from typing import Any, Callable, Iterator

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import BasePredictionWriter

from evalkit.embed.cache import PartialCache
from evalkit.embed.config import EmbedConfig
from evalkit.embed.cost import CostMeter
from evalkit.embed.features import FeatureSet
from evalkit.errors import EvalkitError, one_line
from evalkit.models.base import Backbone
from evalkit.runtime import on_gpu, progress_bars, torch_threads


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
    """Saves each batch as it finishes, and this rank's running cost record (:mod:`evalkit.embed.cost`)."""

    def __init__(self, partial: PartialCache, dtypes: dict[str, str],
                 meter: Callable[[L.Trainer, str], CostMeter]) -> None:
        super().__init__(write_interval="batch")
        self.partial = partial
        self.dtypes = dtypes
        self.new_meter = meter
        self.meter: CostMeter | None = None

    def on_predict_start(self, trainer, pl_module):
        # One id for the run, shared by its ranks: their records are summed as side by side, not one after another.
        self.meter = self.new_meter(trainer, trainer.strategy.broadcast(uuid.uuid4().hex[:12]))

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        outputs, indices, readable = prediction
        arrays = {name: value.cpu().numpy().astype(self.dtypes[name]) for name, value in outputs.items()}
        self.meter.batch(len(indices))  # before the save: a kill between the two has still spent the batch's time
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


_LIGHTNING_PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


def check_precision(cfg: EmbedConfig) -> None:
    """Refuse, before the model is built, a precision this machine cannot compute in. Lightning would run
    fp16 on the CPU as bf16 with a warning, and the cache would say fp16."""
    if cfg.precision == "fp16" and not on_gpu(cfg.accelerator):
        raise EvalkitError(f"--embed.precision fp16 needs a GPU (--embed.accelerator {cfg.accelerator} runs on the "
                           "CPU); use --embed.precision bf16 on the CPU, or run on a GPU")


def cores_available() -> int:
    """The CPU cores this process may run on (its affinity mask: a container's or ``taskset``'s share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parallelism(cfg: EmbedConfig, gpu: bool, devices: int = 1) -> tuple[int, int]:
    """``(decode workers, torch threads)`` of each of ``devices`` ranks, where ``cfg`` leaves them open.

    On the CPU the forward pass is the work: a 224 px tile decodes and transforms in about 2 ms on one core,
    against about 45 ms of ViT-S/16 forward in fp32 (17 ms in bf16), so a decode worker sleeps most of the
    time. One worker per 8 cores (at least one) decodes the next batch while the forward runs, and the
    forward keeps a thread on every core: on 2 cores this measured 2-10 % faster than decoding between
    batches in the main process, and halving the forward's threads to give the worker a core of its own
    would cost half the speed (docs/performance.md, "Embedding"). On a GPU decoding is the work: all cores
    but one per rank decode (at most 8), and torch's threads are left as they are.
    """
    per_rank = max(1, cores_available() // max(1, devices))
    if gpu:
        workers = cfg.num_workers if cfg.num_workers is not None else max(1, min(8, per_rank - 1))
        return workers, cfg.threads or torch.get_num_threads()
    workers = cfg.num_workers if cfg.num_workers is not None else max(1, per_rank // 8)
    return workers, cfg.threads or max(1, min(torch.get_num_threads(), per_rank))


def run_predict(backbone: Backbone, dataset: torch.utils.data.Dataset, features: FeatureSet, n: int,
                partial: PartialCache, cfg: EmbedConfig, split_start: float | None = None,
                model_build_s: float = 0.0) -> None:
    """Embed the batches of ``dataset`` that ``partial`` has not saved yet, each saved as it finishes, with a
    running cost record beside them (``split_start``: when this split's embedding began, for its start-up)."""
    loop_start = time.perf_counter()
    pending = _PendingBatches(n, partial.batch_size, partial.done_batches())
    if not pending.pending:
        return
    # Lightning's banner lines and tips are noise in a CLI that prints its own progress.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*custom batch sampler.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    settings: dict[str, Any] = {}

    def meter(trainer: L.Trainer, run: str) -> CostMeter:
        return CostMeter(partial.dir, run, trainer.global_rank, trainer.strategy.root_device,
                         loop_start if split_start is None else split_start, loop_start, model_build_s, settings)

    try:
        trainer = L.Trainer(
            accelerator=cfg.accelerator, devices=cfg.devices, precision=_LIGHTNING_PRECISION[cfg.precision],
            logger=False, enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress_bars(),
            use_distributed_sampler=False, callbacks=[_BatchWriter(partial, features.dtypes(cfg), meter)],
            inference_mode=True,
        )
    except MisconfigurationException as exc:  # e.g. accelerator gpu on a machine without one
        raise EvalkitError(f"--embed.accelerator {cfg.accelerator} --embed.devices {cfg.devices}: "
                           f"{one_line(exc)}; use --embed.accelerator auto or cpu") from None
    gpu = trainer.strategy.root_device.type == "cuda"
    if cfg.precision == "bf16" and gpu and not torch.cuda.is_bf16_supported():
        raise EvalkitError(f"--embed.precision bf16: {torch.cuda.get_device_name()} does not compute in bf16; use "
                           "--embed.precision fp16 or fp32")
    workers, threads = parallelism(cfg, gpu, trainer.num_devices)
    settings.update(precision=cfg.precision, num_workers=workers, threads=threads, batch_size=partial.batch_size)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=pending, num_workers=workers, pin_memory=gpu,
                                         persistent_workers=False)
    with torch_threads(threads):  # the workers set their own to 1
        try:
            trainer.predict(_EmbedModule(backbone, features), dataloaders=loader, return_predictions=False)
        except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into SystemExit(1)
            raise EvalkitError("interrupted; the finished batches are saved: rerun the same command to resume") \
                from None
    trainer.strategy.barrier()
