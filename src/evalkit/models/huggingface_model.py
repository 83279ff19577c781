"""Hugging Face ``AutoModel`` backbones from a local directory."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Literal

import torch

from evalkit.errors import EvalkitError
from evalkit.models.base import Backbone, ModelSpec, Preprocessing, pool_features, pool_tokens, pooled_width
from evalkit.models.checkpoint import first_unreadable, no_code_loads
from evalkit.models.registry import MODELS
from evalkit.models.trust import TRUST_CODE_ENV, code_trusted


class _HFBackbone(Backbone):
    def __init__(self, net: torch.nn.Module, preprocessing: Preprocessing, pooling: str, num_prefix_tokens: int):
        hidden = getattr(net.config, "hidden_size", None)  # None: a CNN, whose widths are hidden_sizes
        feature_map = hidden is None
        width = pooled_width(net.config.hidden_sizes[-1] if feature_map else hidden, pooling, feature_map,
                             f"this {type(net).__name__}")
        super().__init__(width, preprocessing)
        self.net = net
        self.pooling = pooling
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(pixel_values=images)
        features = pool_features(out.last_hidden_state, self.num_prefix_tokens)
        if self.pooling == "pooler":
            features["cls"] = out.pooler_output.flatten(1)
        elif "patch" in features or self.pooling == "cls_mean":  # a [B, D] output is already pooled
            features["cls"] = pool_tokens(out.last_hidden_state, self.pooling, self.num_prefix_tokens)
        return features


@MODELS.register("huggingface")
class HuggingFaceModel(ModelSpec):
    """A Hugging Face model saved in a local directory (``config.json`` + weights), loaded by ``AutoModel``.

    Args:
        path: the local directory (``huggingface-cli download REPO --local-dir PATH`` makes one).
        pooling: ``cls`` (token 0), ``mean`` (mean of the patch tokens, prefix tokens excluded), ``cls_mean``
            (the two concatenated, class token first) or ``pooler`` (the model's pooler); see docs/models.md, Pooling.
        num_prefix_tokens: tokens before the patches (1 for a CLS token; 5 with 4 registers).
        trust_remote_code: allow model code shipped in the directory; it runs only if the user also sets
            ``EVALKIT_TRUST_CODE=1`` (a config cannot opt itself in, see :mod:`evalkit.models.trust`).
        name: display name in results; defaults to the directory name.
        preprocessing: overrides the transform read from ``preprocessor_config.json``.
    """

    weight_files = ("path",)

    def __init__(
        self,
        path: str,
        pooling: Literal["cls", "mean", "cls_mean", "pooler"] = "cls",
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

    def resolved_preprocessing(self) -> Preprocessing:
        """The config's ``preprocessing``, else the one ``preprocessor_config.json`` in ``path`` describes."""
        return self.preprocessing_override or _hf_preprocessing(Path(self.path))

    def _key_preprocessing(self) -> Preprocessing | None:
        return self.preprocessing_override  # the processor file lies in the weights folder, absent where fit reads the index

    def build(self) -> Backbone:
        from transformers import AutoModel

        path = Path(self.path)
        if not (path / "config.json").is_file():
            raise EvalkitError(
                f"Hugging Face model directory {path} has no config.json; download the model with "
                f"`huggingface-cli download <repo> --local-dir {path}` and set model path to it"
            )
        if self.trust_remote_code and not code_trusted():
            raise EvalkitError(f"the model config sets trust_remote_code, which runs the Python files in {path}; "
                               f"set {TRUST_CODE_ENV}=1 in the environment if you trust them")
        # Remote code, once allowed, runs as written (its own torch.load calls included).
        guard = contextlib.nullcontext() if self.trust_remote_code else no_code_loads()
        try:
            with guard:
                net = AutoModel.from_pretrained(path, local_files_only=True, trust_remote_code=self.trust_remote_code)
        except Exception as exc:
            # transformers reads .bin weights with weights_only; a refused or damaged file surfaces as an
            # UnpicklingError, EOFError or OSError without its name, so find it and name it.
            # Only the weight files transformers reads: a folder may also hold e.g. a pickled training_args.bin.
            weights = sorted(path.glob("model*.safetensors")) + sorted(path.glob("pytorch_model*.bin"))
            problem = first_unreadable(weights)
            if problem is not None:
                raise EvalkitError(problem.message("download the model again")) from None
            if isinstance(exc, (OSError, ValueError)):
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise EvalkitError(f"cannot load Hugging Face model from {path}: {first}") from exc
            raise
        return _HFBackbone(net.eval(), self.resolved_preprocessing(), self.pooling, self.num_prefix_tokens)


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
    resize = int(resize) if isinstance(resize, int) and resize != int(size) else None  # equal: no resize before the crop
    return Preprocessing(
        input_size=int(size),
        resize_size=resize,
        mean=tuple(cfg.get("image_mean", Preprocessing.mean)),
        std=tuple(cfg.get("image_std", Preprocessing.std)),
        interpolation={2: "bilinear", 3: "bicubic", 0: "nearest"}.get(cfg.get("resample", 3), "bicubic"),
    )
