"""SimCLR's NT-Xent loss (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations", arXiv:2002.05709), over the same multi-crop views LeJEPA uses.

Each of the V·B projected views is L2-normalised and compared by cosine similarity / τ with
every other view in the batch. For an anchor, its positives are the other views of the same
image; every view of another image is a negative. The loss of an anchor is the mean, over its
positives p, of ``-log softmax(sim / τ)[p]`` (the anchor itself excluded from the softmax), and
the total is the mean over anchors. With two views (V = 2) this is exactly SimCLR's NT-Xent;
with more views it is the multi-positive form (SupCon's "L_out" with instance labels), which lets
SimCLR see the same global and local crops LeJEPA sees, so the two are compared on equal terms.
SimCLR has no stop-gradient and no predictor either; what prevents collapse is the negatives.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from evalkit.errors import EvalkitError
from evalkit.pretrain.objectives import OBJECTIVES, Objective

SIMCLR_TEMPERATURE = 0.2  # τ: 0.1–0.5 in the paper; 0.2 for batches of a few hundred views


def nt_xent(proj: Tensor, temperature: float = SIMCLR_TEMPERATURE) -> Tensor:
    """The multi-positive NT-Xent of ``proj`` [V, B, K] (views of the same B images), as a float32 scalar."""
    if proj.ndim != 3 or proj.shape[0] < 2:
        raise EvalkitError(f"SimCLR needs at least 2 views per image as [V, B, K], got shape {tuple(proj.shape)}")
    views, batch, _ = proj.shape
    with torch.autocast(device_type=proj.device.type, enabled=False):
        z = F.normalize(proj.float().reshape(views * batch, -1), dim=1)
        logits = z @ z.T / temperature
        image = torch.arange(batch, device=z.device).repeat(views)
        self_mask = torch.eye(views * batch, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_mask, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        positive = (image[:, None] == image[None, :]) & ~self_mask
        return -(log_prob.masked_fill(~positive, 0.0).sum(1) / positive.sum(1)).mean()


@OBJECTIVES.register("simclr")
class SimCLRLoss(Objective):
    """NT-Xent over all views of the batch (see the module docstring).

    Args:
        temperature: τ, the softmax temperature of the cosine similarities.
    """

    name = "simclr"

    def __init__(self, temperature: float = SIMCLR_TEMPERATURE) -> None:
        super().__init__()
        if temperature <= 0:
            raise EvalkitError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, proj: Tensor, num_global: int, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise EvalkitError("the SimCLR objective draws its negatives from one device's batch; run it on one "
                               "device (--trainer.devices 1)")
        loss = nt_xent(proj, self.temperature)
        return loss, {"nt_xent": loss.detach()}
