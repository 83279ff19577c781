"""The adapter contract every backbone family obeys.

A :class:`ModelSpec` is the cheap, configurable description of a backbone (what the
config file names); :meth:`ModelSpec.build` makes the frozen network. Keeping the two
apart lets ``fit`` find a model's cache from its config alone, without building it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from evalkit.errors import EvalkitError
from evalkit.paths import checked_name, safe_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's InterpolationMode values. torchvision is imported in transform() alone (not even under
# TYPE_CHECKING, which jsonargparse executes): it costs a second (torch._dynamo), and a predict whose caches
# are complete never transforms an image.
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class Preprocessing:
    """How images are turned into the backbone's input: resize shorter side, centre crop, normalise.

    The defaults reproduce eva's ``ResizeAndCrop`` (resize to 224, crop 224, ImageNet
    statistics). The transform is derived from this, never retyped per task.
    """

    input_size: int = 224
    resize_size: int | None = None  # shorter side before the crop; None: input_size
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # torchvision's Resize default, which eva's ResizeAndCrop uses

    def __post_init__(self) -> None:
        # Checked here: a bad value would otherwise surface inside a DataLoader worker, mid-embedding.
        if self.input_size < 1 or (self.resize_size is not None and self.resize_size < 1):
            raise EvalkitError(f"preprocessing sizes must be at least 1, got input_size {self.input_size}, "
                               f"resize_size {self.resize_size}")
        if self.interpolation not in _INTERPOLATIONS:
            raise EvalkitError(f"preprocessing.interpolation '{self.interpolation}' is not one of "
                               f"{', '.join(_INTERPOLATIONS)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise EvalkitError(f"preprocessing mean and std take 3 values (RGB), std > 0; got mean {list(self.mean)}, "
                               f"std {list(self.std)}")

    def transform(self) -> nn.Module:
        """The input transform: a torchvision ``v2.Compose`` (an ``nn.Module``) from image to normalised tensor."""
        from torchvision.transforms import v2 as T

        return T.Compose([
            T.ToImage(),
            T.Resize(self.resize_size or self.input_size, interpolation=T.InterpolationMode(self.interpolation),
                     antialias=True),
            T.CenterCrop(self.input_size),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean=list(self.mean), std=list(self.std)),
        ])

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


class Backbone(nn.Module):
    """A frozen network returning ``{"cls": [B, D], "patch": [B, N, D]}`` ("patch" when it has one)."""

    def __init__(self, embed_dim: int, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.preprocessing = preprocessing

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def dense(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps ``[B, C, h, w]`` for dense prediction, finest first.

        The default reshapes the ``patch`` output to its grid (ViT patch tokens without the
        class and register tokens; a CNN's last map), which every adapter provides; adapters
        that can give several CNN stages override it.
        """
        patch = self(images).get("patch")
        if patch is None:
            raise EvalkitError("this model returns no patch features, so it cannot feed a segmentation decoder; "
                               "use a ViT or CNN backbone")
        height, width = images.shape[-2:]
        stride = math.isqrt(height * width // patch.shape[1])
        if stride * stride * patch.shape[1] != height * width or height % stride or width % stride:
            raise EvalkitError(f"cannot lay {patch.shape[1]} patch tokens out on a grid for a {height}x{width} input; "
                               "check the model's num_prefix_tokens")
        return [patch.transpose(1, 2).reshape(len(patch), -1, height // stride, width // stride)]


class ModuleBackbone(Backbone):
    """Wraps any module whose output :func:`pool_features` understands."""

    def __init__(self, net: nn.Module, preprocessing: Preprocessing, num_prefix_tokens: int = 1) -> None:
        with torch.inference_mode():
            probe = net.eval()(torch.zeros(1, 3, preprocessing.input_size, preprocessing.input_size))
        super().__init__(pool_features(probe, num_prefix_tokens)["cls"].shape[-1], preprocessing)
        self.net = net
        self.num_prefix_tokens = num_prefix_tokens
        self.eval().requires_grad_(False)  # frozen: every evaluation reads the weights as loaded

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return pool_features(self.net(images), self.num_prefix_tokens)

    def dense(self, images: torch.Tensor) -> list[torch.Tensor]:
        """ResNet-style nets (``layer1``..``layer4``) give every stage and nets with a ``features``
        block its output map, caught by forward hooks; anything else its patch grid."""
        stages = [getattr(self.net, f"layer{i}") for i in range(1, 5) if isinstance(getattr(self.net, f"layer{i}", None), nn.Module)]
        if not stages and isinstance(getattr(self.net, "features", None), nn.Module):
            stages = [self.net.features]
        if not stages:
            return super().dense(images)
        maps: list[torch.Tensor] = []
        hooks = [stage.register_forward_hook(lambda _m, _i, out: maps.append(out)) for stage in stages]
        try:
            self.net(images)
        finally:
            for hook in hooks:
                hook.remove()
        return [m for m in maps if m.ndim == 4]


class ModelSpec:
    """Base of every model adapter: a name, a fingerprint and a way to build the frozen backbone.

    Subclasses list in ``weight_files`` the init arguments that point at weight files or
    folders: their contents enter the fingerprint, so new weights at the same path get a
    new cache key.
    """

    weight_files: ClassVar[tuple[str, ...]] = ()
    missing_weights_hint: ClassVar[str] = "check the path in the model config"  # said when one is absent

    def __init__(self, name: str | None = None, preprocessing: Preprocessing | None = None) -> None:
        self._name = name
        self.preprocessing_override = preprocessing

    @property
    def name(self) -> str:
        """Display name, used in result paths and tables: a given name must be a safe folder name, a
        derived one (from a file name or a hub id) is encoded into one."""
        return checked_name(self._name, "model name") if self._name else safe_name(self.default_name())

    def default_name(self) -> str:
        raise NotImplementedError

    def build(self) -> Backbone:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The arguments that decide the weights and the transform (used by :meth:`fingerprint`)."""
        raise NotImplementedError

    def _payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"adapter": type(self).__name__, "config": self.config()}
        if self.preprocessing_override is not None:
            payload["preprocessing"] = self.preprocessing_override.as_dict()
        else:  # what the adapter falls back to: new defaults in evalkit must not reuse old caches
            payload["preprocessing_defaults"] = Preprocessing().as_dict()
        return payload

    def missing_weights(self) -> list[str]:
        """The weight paths of this config that are not on disk."""
        return [str(path) for attr in self.weight_files if (path := getattr(self, attr, None)) and not Path(path).exists()]

    def fingerprint(self) -> str:
        """A content address of the weights and transform, computed without building the model."""
        payload = self._payload()
        for attr in self.weight_files:
            path = getattr(self, attr, None)
            if path:
                if not Path(path).exists():
                    raise EvalkitError(f"weights not found: {path}; {self.missing_weights_hint}")
                payload[f"sha256:{attr}"] = path_sha256(path)
        return _sha256_json(payload)

    def config_key(self) -> str:
        """The config alone (weight files by the path the config gives, not by content): how ``fit`` finds,
        in the index ``predict`` writes, the fingerprint of a model whose weights are not on this machine
        (a relative path, so that a project copied elsewhere with its embeddings still finds it)."""
        payload = self._payload()
        for attr in self.weight_files:
            path = getattr(self, attr, None)
            if path:
                payload[f"path:{attr}"] = os.path.normpath(str(path))
        return _sha256_json(payload)


def package_version(package: str) -> str:
    """The installed version of ``package`` without its local part (``0.29.1+cu130`` -> ``0.29.1``), as the
    fingerprint of a random-init model records it; read from the package's metadata, because importing timm
    or torchvision to ask would cost seconds in a predict whose caches are complete."""
    return metadata.version(package).split("+")[0]


def _sha256_json(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


_HASHES: dict[tuple[str, int, int], str] = {}


def path_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of every file under a folder (names and bytes); memoised per size/mtime."""
    p = Path(path)
    if not p.exists():
        from evalkit.errors import EvalkitError

        raise EvalkitError(f"weights not found: {p}; check the path in the model config")
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        key = (str(f.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _HASHES:
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
            _HASHES[key] = h.hexdigest()
        digest.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        digest.update(_HASHES[key].encode())
    return digest.hexdigest()


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 of the actual tensors, recorded in the cache for provenance."""
    h = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes() if tensor.dtype != torch.bfloat16
                 else tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def pool_features(features: torch.Tensor, num_prefix_tokens: int = 1) -> dict[str, torch.Tensor]:
    """Split a generic backbone output into the ``cls``/``patch`` contract.

    ``[B, D]`` is already pooled; ``[B, C, H, W]`` (CNN maps) is average-pooled with its
    positions as patches; ``[B, N, D]`` (tokens) takes token 0 as ``cls`` and drops the
    ``num_prefix_tokens`` prefix tokens from the patches.
    """
    if features.ndim == 2:
        return {"cls": features}
    if features.ndim == 4:
        patch = features.flatten(2).transpose(1, 2)
        return {"cls": patch.mean(dim=1), "patch": patch}
    if features.ndim == 3:
        return {"cls": features[:, 0], "patch": features[:, num_prefix_tokens:]}
    raise ValueError(f"expected backbone output of 2, 3 or 4 dimensions, got shape {tuple(features.shape)}")
