"""Ship a pretrained backbone: a slim copy of a ``evalkit pretrain`` checkpoint that the LeJEPA model
adapter reads like the original (same hyper-parameters, the backbone's weights), without the
projector and the optimiser state, stored in float16 to halve the file.

    python -m evalkit.pretrain.export runs/pretrain/lejepa_resnet18_pcam/checkpoints/last.ckpt \\
        data/models/lejepa_resnet18_pcam.ckpt
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from evalkit.errors import EvalkitError
from evalkit.models.checkpoint import load_weights_file

_BACKBONE = "network.backbone."


def export_backbone(source: str | Path, target: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write ``target`` (atomically): ``source``'s hyper-parameters and backbone weights as ``dtype``."""
    checkpoint = load_weights_file(Path(source), "use a whole checkpoint from <output_dir>/checkpoints/")
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise EvalkitError(f"{source} is not a checkpoint of `evalkit pretrain`; use a file from "
                           "<output_dir>/checkpoints/")
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in checkpoint["state_dict"].items()
             if k.startswith(_BACKBONE)}
    slim = {"hyper_parameters": hparams, "state_dict": state, "epoch": checkpoint.get("epoch"),
            "global_step": checkpoint.get("global_step"), "exported_from": str(source)}
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    torch.save(slim, tmp)
    os.replace(tmp, target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a checkpoint of `evalkit pretrain` (last.ckpt, epoch=NNN.ckpt)")
    parser.add_argument("target", help="the slim checkpoint to write")
    args = parser.parse_args()
    print(f"wrote {export_backbone(args.source, args.target)}")


if __name__ == "__main__":
    main()
