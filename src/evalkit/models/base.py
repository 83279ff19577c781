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
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from evalkit.errors import EvalkitError
from evalkit.paths import checked_name, safe_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# How a token sequence becomes one embedding (see pool_tokens and docs/models.md, Pooling).
Pooling = Literal["cls", "mean", "cls_mean"]
POOLINGS = ("cls", "mean", "cls_mean")
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
    """Wraps any module whose output :func:`pool_features` understands.

    ``pooling`` (``None``: :func:`pool_features`'s rule, token 0 or the global average) makes ``cls``
    :func:`pool_tokens` of the output instead; a ``[B, D]`` output is already pooled and takes none."""

    def __init__(self, net: nn.Module, preprocessing: Preprocessing, num_prefix_tokens: int = 1,
                 pooling: Pooling | None = None) -> None:
        with torch.inference_mode():
            probe = net.eval()(torch.zeros(1, 3, preprocessing.input_size, preprocessing.input_size))
        if pooling is not None and probe.ndim == 2:
            raise EvalkitError(f"pooling '{pooling}' needs token or feature-map outputs, but this module returns pooled "
                               f"[B, {probe.shape[-1]}] embeddings; remove pooling from the model config")
        embedding = (pool_tokens(probe, pooling, num_prefix_tokens) if pooling
                     else pool_features(probe, num_prefix_tokens)["cls"])
        super().__init__(embedding.shape[-1], preprocessing)
        self.net = net
        self.num_prefix_tokens = num_prefix_tokens
        self.pooling = pooling
        self.eval().requires_grad_(False)  # frozen: every evaluation reads the weights as loaded

    def _pool(self, output: torch.Tensor) -> dict[str, torch.Tensor]:
        features = pool_features(output, self.num_prefix_tokens)
        if self.pooling is not None:
            features["cls"] = pool_tokens(output, self.pooling, self.num_prefix_tokens)
        return features

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._pool(self.net(images))

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

    def resolved_preprocessing(self) -> Preprocessing:
        """The transform :meth:`build` gives the backbone (``build().preprocessing``), found without building it:
        the config's ``preprocessing``, else what the adapter derives from its weights (timm's pretrained config,
        ``preprocessor_config.json``, ...); this base class: evalkit's defaults."""
        return self.preprocessing_override or Preprocessing()

    def _key_preprocessing(self) -> Preprocessing | None:
        """The transform :meth:`config_key` records: the resolved one, unless resolving reads the weight files
        (then ``None``: the config alone, which is all ``fit`` has where the weights are absent)."""
        return self.resolved_preprocessing()

    def _payload(self, preprocessing: Preprocessing | None) -> dict[str, Any]:
        payload: dict[str, Any] = {"adapter": type(self).__name__, "config": self.config()}
        if self.preprocessing_override is not None:
            payload["preprocessing"] = self.preprocessing_override.as_dict()
        elif preprocessing is None or preprocessing == Preprocessing():
            # evalkit's defaults, recorded as such (so new defaults never reuse old caches); the key is the one
            # fingerprints had before the resolved transform entered them, so those caches keep their keys
            payload["preprocessing_defaults"] = Preprocessing().as_dict()
        else:  # the transform the adapter derives from its weights: the one the embeddings were made with
            payload["preprocessing"] = preprocessing.as_dict()
        return payload

    def weight_paths(self) -> dict[str, Path]:
        """The local weight files (or folders) whose bytes enter the fingerprint, by argument name; raises one
        line when one is absent."""
        paths = {attr: Path(path) for attr in self.weight_files if (path := getattr(self, attr, None))}
        for path in paths.values():
            if not path.exists():
                raise EvalkitError(f"weights not found: {path}; {self.missing_weights_hint}")
        return paths

    def missing_weights(self) -> list[str]:
        """The weight paths of this config that are not on disk."""
        return [str(path) for attr in self.weight_files if (path := getattr(self, attr, None)) and not Path(path).exists()]

    def fingerprint(self) -> str:
        """A content address of the weights and transform, computed without building the model."""
        payload = self._payload(self.resolved_preprocessing())
        for attr, path in self.weight_paths().items():
            payload[f"sha256:{attr}"] = path_sha256(path)
        return _sha256_json(payload)

    def config_key(self) -> str:
        """The config alone (weight files by the path the config gives, not by content): how ``fit`` finds,
        in the index ``predict`` writes, the fingerprint of a model whose weights are not on this machine
        (a relative path, so that a project copied elsewhere with its embeddings still finds it)."""
        return _sha256_json({**self._payload(self._key_preprocessing()), **self.weight_sources()})

    def weight_sources(self) -> dict[str, str]:
        """Where the weights come from, as the config says it: :meth:`config_key`'s stand-in for their bytes."""
        return {f"path:{attr}": os.path.normpath(str(path)) for attr in self.weight_files
                if (path := getattr(self, attr, None))}


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


def check_pooling(pooling: str) -> None:
    """Refuses, in one line, a pooling that is not one of :data:`POOLINGS`."""
    if pooling not in POOLINGS:
        raise EvalkitError(f"pooling '{pooling}' is not one of {', '.join(POOLINGS)}")


def pooled_width(width: int, pooling: Pooling | None, feature_map: bool, what: str = "this backbone") -> int:
    """The width of the pooled embedding of a backbone whose tokens (or channels) are ``width`` wide: twice
    that for ``cls_mean``, which is refused, in one line naming ``what``, for a CNN ``feature_map``."""
    if pooling == "cls_mean" and feature_map:
        raise EvalkitError(f"pooling 'cls_mean' needs a class token, and {what} gives a CNN feature map; use pooling "
                           "'mean' (the global average)")
    return width * (2 if pooling == "cls_mean" else 1)


def pool_tokens(features: torch.Tensor, pooling: Pooling, num_prefix_tokens: int = 1) -> torch.Tensor:
    """The image embedding ``[B, D]`` (``[B, 2D]`` for ``cls_mean``) of a backbone output.

    Tokens ``[B, T, D]`` hold the class token first, then ``num_prefix_tokens - 1`` register tokens, then
    the patches: ``cls`` is token 0, ``mean`` the mean of the patch tokens (class and register tokens
    excluded), ``cls_mean`` the two concatenated, class token first. A CNN map ``[B, C, H, W]`` has no class
    token: ``cls`` and ``mean`` are both its global average, ``cls_mean`` is refused.
    """
    check_pooling(pooling)
    if features.ndim == 4:
        pooled_width(features.shape[1], pooling, feature_map=True)  # refuses cls_mean
        return features.mean(dim=(2, 3))
    if features.ndim != 3:
        raise EvalkitError(f"pooling '{pooling}' expects tokens [B, T, D] or a feature map [B, C, H, W], got shape "
                           f"{tuple(features.shape)}")
    if pooling != "mean" and num_prefix_tokens < 1:
        raise EvalkitError(f"pooling '{pooling}' needs a class token, and this backbone has none (no prefix tokens); "
                           "use pooling 'mean'")
    if num_prefix_tokens >= features.shape[1]:
        raise EvalkitError(f"{num_prefix_tokens} prefix tokens leave no patch tokens in a sequence of {features.shape[1]}; "
                           "check num_prefix_tokens")
    cls, mean = features[:, 0], features[:, num_prefix_tokens:].mean(dim=1)
    return {"cls": cls, "mean": mean, "cls_mean": torch.cat([cls, mean], dim=-1)}[pooling]


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
