"""predictions.h5 beside results.json: every run's class probabilities on every evaluated sample.

Paired statistics between two models (paired bootstrap, McNemar) need both models'
predictions on the same samples; keeping them in a file lets ``evalkit report`` compare
any two runs later, without the models or the embeddings.

Layout: one group per split. Classification: ``ids`` (utf-8, the cache's sample ids), ``target``
(int64 [N]) and ``probs`` (float32 [R, N, C], one slice per seeded run). Segmentation (group
attribute ``kind = "class_maps"``): ``ids`` (image ids) and, per image j, ``target/<j>`` [H, W] and
``class_maps/<j>`` [R, H, W] (uint8, every run's stitched prediction).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from evalkit.errors import EvalkitError

FILE_NAME = "predictions.h5"


@dataclass
class SplitPredictions:
    ids: list[str]
    target: torch.Tensor  # [N] int64
    probs: torch.Tensor  # [R, N, C] float32

    def aligned_to(self, ids: list[str]) -> "SplitPredictions":
        """The same predictions in the order of ``ids`` (which must be the same set of samples)."""
        if ids == self.ids:
            return self
        position = {sample: i for i, sample in enumerate(self.ids)}
        missing = [sample for sample in ids if sample not in position]
        if missing or len(ids) != len(self.ids):
            raise EvalkitError(f"the two runs were scored on different samples (e.g. {(missing or ids)[0]}); "
                               "compare runs of the same task and split")
        order = torch.tensor([position[sample] for sample in ids])
        return SplitPredictions(list(ids), self.target[order], self.probs[:, order])


@dataclass
class SplitClassMaps:
    """Segmentation: every run's stitched class map of every image of a split."""

    ids: list[str]
    target: list[torch.Tensor]  # per image [H, W]
    maps: list[torch.Tensor]  # per image [R, H, W]


def write_predictions(run_dir: Path, splits: dict[str, SplitPredictions | SplitClassMaps]) -> Path:
    path = run_dir / FILE_NAME
    tmp = run_dir / (FILE_NAME + ".tmp")
    with h5py.File(tmp, "w") as f:
        for split, pred in splits.items():
            group = f.create_group(split)
            group.create_dataset("ids", data=np.array(pred.ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
            if isinstance(pred, SplitClassMaps):
                group.attrs["kind"] = "class_maps"
                for j, (target, maps) in enumerate(zip(pred.target, pred.maps)):
                    group.create_dataset(f"target/{j}", data=target.numpy().astype(np.uint8), compression="gzip")
                    group.create_dataset(f"class_maps/{j}", data=maps.numpy().astype(np.uint8), compression="gzip")
                continue
            group.create_dataset("target", data=pred.target.numpy().astype(np.int64))
            group.create_dataset("probs", data=pred.probs.numpy().astype(np.float32), compression="gzip",
                                 compression_opts=4)
    os.replace(tmp, path)
    return path


def read_predictions(run_dir: Path) -> dict[str, SplitPredictions]:
    """The class probabilities of one run per split (the paired tests' input), or ``{}`` for a run that has
    none; segmentation class maps are not returned here."""
    path = Path(run_dir) / FILE_NAME
    if not path.is_file():
        return {}
    try:
        with h5py.File(path, "r") as f:
            return {split: SplitPredictions([s.decode() if isinstance(s, bytes) else s for s in f[split]["ids"][()]],
                                            torch.from_numpy(f[split]["target"][()]),
                                            torch.from_numpy(f[split]["probs"][()]))
                    for split in f if f[split].attrs.get("kind") != "class_maps"}
    except (OSError, KeyError) as exc:
        raise EvalkitError(f"{path} is not an evalkit predictions file ({exc}); rerun `evalkit fit`") from None
