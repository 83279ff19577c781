"""What a segmentation run leaves for people to look at: overlays, the training curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from evalkit.plotting import pyplot

# background transparent; other, inflammatory, epithelial, spindle-shaped as in HoVer-Net's figures
PALETTE = np.array([[0, 0, 0], [255, 255, 0], [255, 0, 0], [0, 160, 255], [0, 200, 0]], dtype=np.float32)


def blend(rgb: np.ndarray, classes: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with every non-background pixel tinted by its class colour."""
    colours = PALETTE[np.clip(classes, 0, len(PALETTE) - 1)]
    out = rgb.astype(np.float32)
    foreground = classes > 0
    out[foreground] = (1 - alpha) * out[foreground] + alpha * colours[foreground]
    return out.clip(0, 255).astype(np.uint8)


def write_overlay(path: Path, rgb: np.ndarray, target: torch.Tensor, prediction: torch.Tensor,
                  class_names: list[str], title: str) -> Path:
    """Image | ground truth | prediction, side by side, with a legend."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax, (name, image) in zip(axes, (("image", rgb), ("ground truth", blend(rgb, target.numpy())),
                                        ("prediction", blend(rgb, prediction.numpy())))):
        ax.imshow(image)
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=PALETTE[k] / 255) for k in range(1, len(class_names))]
    fig.legend(handles, class_names[1:], loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_curve(path: Path, curves: list[list[dict[str, float]]], start_dice: float) -> Path:
    """Training loss per epoch and test Dice at each evaluation, one line per run."""
    plt = pyplot()
    fig, (loss_ax, dice_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    for r, curve in enumerate(curves):
        loss_ax.plot([p["epoch"] for p in curve], [p["loss"] for p in curve], label=f"run {r}")
        scored = [p for p in curve if "dice" in p]
        dice_ax.plot([0] + [p["epoch"] for p in scored], [start_dice] + [p["dice"] for p in scored], marker="o",
                     ms=3, label=f"run {r}")
    loss_ax.set(xlabel="epoch", ylabel="training loss", yscale="log", title="decoder loss")
    dice_ax.set(xlabel="epoch", ylabel="Dice (foreground classes)", title="test Dice (epoch 0: untrained)")
    dice_ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
