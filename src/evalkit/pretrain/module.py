"""Pretraining as a LightningModule: Lightning gives devices, DDP over GPUs and nodes, bf16,
checkpoints with resume and logging; the module holds only the method: a backbone with a
projector, trained by one objective of :data:`evalkit.pretrain.objectives.OBJECTIVES`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import lightning as L
import torch

from evalkit.errors import EvalkitError
from evalkit.pretrain.model import LeJEPANetwork
from evalkit.pretrain.objectives import Objective, create_objective

# A resumed run restores the optimiser's learning rate, so a lower one needs a fresh run.
_WHAT_TO_DO = ("lower --optim.lr or raise --optim.warmup_steps and train afresh (another --trainer.output_dir), "
              "and check the data for blank or broken images")


@dataclass
class ModelConfig:
    """Args:
        backbone: any timm model name (``resnet50``, ``vit_small_patch16_224``, ...), random init.
        proj_hidden_dim, proj_dim: the projector's hidden and output widths.
    """

    backbone: str = "resnet50"
    proj_hidden_dim: int = 2048
    proj_dim: int = 128


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay, per step.

    Args:
        lr: peak learning rate; weight_decay: AdamW's.
        warmup_steps: linear warmup from 0; max_epochs: the cosine runs to the end of the last epoch.
    """

    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100


class PretrainingModule(L.LightningModule):
    """Backbone + projector trained by ``objective`` (``{"name": registry name, "settings": its arguments}``)."""

    def __init__(self, model: dict, optim: dict, num_global: int, objective: dict) -> None:
        super().__init__()
        self.save_hyperparameters()  # the checkpoint says which backbone and objective it holds
        self.network = LeJEPANetwork(model["backbone"], model["proj_hidden_dim"], model["proj_dim"])
        self.loss = create_objective(objective["name"], **objective["settings"])
        self.num_global = num_global

    def training_step(self, views: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        _, proj = self.network(views)
        with torch.autocast(device_type=proj.device.type, enabled=False):
            total, parts = self.loss(proj.float(), self.num_global, self.global_step)
        self._stop_unless_finite(total)
        self.log("train/loss", total, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True)
        for name, value in parts.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, sync_dist=True)
        return total

    def _stop_unless_finite(self, total: torch.Tensor) -> None:
        """Stop before backward, so the weights and the checkpoints stay as they were: one NaN step
        would spread NaN through every weight. Agreed over ranks, so that all stop together."""
        finite = bool(torch.isfinite(total.detach()))
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            raise EvalkitError(f"the {self.loss.name} loss is not finite (NaN or inf) at step {self.global_step}, stopped; "
                               f"the checkpoints so far are kept; {_WHAT_TO_DO}")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Refuse to save non-finite weights (an update from a NaN gradient with a finite loss), so that
        last.ckpt is never overwritten by a corrupt one. Every rank builds the checkpoint, so all agree."""
        finite = all(bool(torch.isfinite(p).all()) for p in self.parameters())
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            raise EvalkitError(f"the weights are not finite (NaN or inf) at step {self.global_step}, not "
                               f"saved; the checkpoints so far are kept; {_WHAT_TO_DO}")

    def configure_optimizers(self):
        optim = self.hparams.optim
        decay = [p for n, p in self.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.named_parameters() if p.ndim <= 1]  # biases and norms
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": optim["weight_decay"]},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=optim["lr"])
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(optim["warmup_steps"], total // 2)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def module_from(model: ModelConfig, optim: OptimConfig, num_global: int, objective: Objective) -> PretrainingModule:
    return PretrainingModule(asdict(model), asdict(optim), num_global,
                             {"name": objective.name, "settings": objective.settings()})
