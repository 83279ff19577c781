"""Hugging Face ``AutoModel`` backbones from a local directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch

from evalkit.errors import EvalkitError
from evalkit.models.base import Backbone, ModelSpec, Preprocessing, pool_features
from evalkit.models.registry import MODELS


class _HFBackbone(Backbone):
    def __init__(self, net: torch.nn.Module, preprocessing: Preprocessing, pooling: str, num_prefix_tokens: int):
        hidden = getattr(net.config, "hidden_size", None) or net.config.hidden_sizes[-1]
        super().__init__(hidden, preprocessing)
        self.net = net
        self.pooling = pooling
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(pixel_values=images)
        features = pool_features(out.last_hidden_state, self.num_prefix_tokens)
        if self.pooling == "mean" and "patch" in features:
            features["cls"] = features["patch"].mean(dim=1)
        elif self.pooling == "pooler":
            features["cls"] = out.pooler_output.flatten(1)
        return features


@MODELS.register("huggingface")
class HuggingFaceModel(ModelSpec):
    """A Hugging Face model saved in a local directory (``config.json`` + weights), loaded by ``AutoModel``.

    Args:
        path: the local directory (``huggingface-cli download REPO --local-dir PATH`` makes one).
        pooling: ``cls`` (token 0), ``mean`` (mean of the patch tokens) or ``pooler`` (the model's pooler).
        num_prefix_tokens: tokens before the patches (1 for a CLS token; 5 with 4 registers).
        trust_remote_code: allow model code shipped in the directory.
        name: display name in results; defaults to the directory name.
        preprocessing: overrides the transform read from ``preprocessor_config.json``.
    """

    weight_files = ("path",)

    def __init__(
        self,
        path: str,
        pooling: Literal["cls", "mean", "pooler"] = "cls",
        num_prefix_tokens: int = 1,
        trust_remote_code: bool = False,
        name: str | None = None,
        preprocessing: Preprocessing | None = None,
    ) -> None:
        super().__init__(name, preprocessing)
        self.path = path
        self.pooling = pooling
        self.num_prefix_tokens = num_prefix_tokens
        self.trust_remote_code = trust_remote_code

    def default_name(self) -> str:
        return f"hf-{Path(self.path).name}-{self.pooling}"

    def config(self) -> dict[str, Any]:
        return {"pooling": self.pooling, "num_prefix_tokens": self.num_prefix_tokens}

    def build(self) -> Backbone:
        from transformers import AutoModel

        path = Path(self.path)
        if not (path / "config.json").is_file():
            raise EvalkitError(
                f"Hugging Face model directory {path} has no config.json; download the model with "
                f"`huggingface-cli download <repo> --local-dir {path}` and set model path to it"
            )
        try:
            net = AutoModel.from_pretrained(path, local_files_only=True, trust_remote_code=self.trust_remote_code)
        except (OSError, ValueError) as exc:
            raise EvalkitError(f"cannot load Hugging Face model from {path}: {str(exc).splitlines()[0]}") from exc
        return _HFBackbone(net.eval(), self.preprocessing_override or _hf_preprocessing(path),
                           self.pooling, self.num_prefix_tokens)


def _hf_preprocessing(path: Path) -> Preprocessing:
    file = path / "preprocessor_config.json"
    if not file.is_file():
        return Preprocessing()
    cfg = json.loads(file.read_text())
    size = cfg.get("crop_size") or cfg.get("size") or 224
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge") or 224
    resize = cfg.get("size")
    if isinstance(resize, dict):
        resize = resize.get("shortest_edge") or resize.get("height")
    return Preprocessing(
        input_size=int(size),
        resize_size=int(resize) if isinstance(resize, int) else None,
        mean=tuple(cfg.get("image_mean", Preprocessing.mean)),
        std=tuple(cfg.get("image_std", Preprocessing.std)),
        interpolation={2: "bilinear", 3: "bicubic", 0: "nearest"}.get(cfg.get("resample", 3), "bicubic"),
    )
