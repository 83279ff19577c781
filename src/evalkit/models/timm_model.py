"""timm backbones: any model name, random init by default, local weights by path."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch

from evalkit.errors import EvalkitError
from evalkit.models.base import Backbone, ModelSpec, Pooling, Preprocessing, package_version, pool_tokens, pooled_width
from evalkit.models.checkpoint import load_strict, no_code_loads, read_state_dict, remap_keys, unreadable
from evalkit.models.registry import MODELS


class TimmBackbone(Backbone):
    """A timm network: ``cls`` is timm's pooled pre-logits feature (``pooling=None``) or :func:`pool_tokens` of
    ``forward_features``; ``patch`` the tokens without class and register tokens, or a CNN map's positions."""

    def __init__(self, net: torch.nn.Module, preprocessing: Preprocessing, pooling: Pooling | None = None) -> None:
        tokens = isinstance(getattr(net, "num_prefix_tokens", None), int)  # ViT-like; timm's CNNs have no such field
        width = pooled_width(net.num_features, pooling, not tokens, f"timm model {type(net).__name__}")
        if pooling in ("cls", "cls_mean") and tokens and not _has_class_token(net):
            raise EvalkitError(f"pooling '{pooling}' needs a class token, and this timm {type(net).__name__} has none; "
                               "use pooling 'mean'")
        super().__init__(width, preprocessing)
        self.net = net
        self.pooling = pooling
        self.num_prefix_tokens = getattr(net, "num_prefix_tokens", 0)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.net.forward_features(images)
        if self.pooling is None:
            pooled = self.net.forward_head(features, pre_logits=True)
        else:
            pooled = pool_tokens(features, self.pooling, self.num_prefix_tokens)
        if features.ndim == 4:  # CNN: [B, C, H, W] -> positions as patches
            patch = features.flatten(2).transpose(1, 2)
        else:  # ViT: drop class and register tokens
            patch = features[:, self.num_prefix_tokens:]
        return {"cls": pooled, "patch": patch}

    def dense(self, images: torch.Tensor) -> list[torch.Tensor]:
        """CNNs: every stage from stride 4 on (timm's ``forward_intermediates``); ViTs: the patch grid."""
        if self.num_prefix_tokens or not hasattr(self.net, "forward_intermediates"):
            return super().dense(images)
        maps = self.net.forward_intermediates(images, intermediates_only=True)
        return [m for m in maps if images.shape[-1] // m.shape[-1] >= 4]


@MODELS.register("timm")
class TimmModel(ModelSpec):
    """A ``timm`` model by name, as a frozen feature extractor (classifier removed).

    Args:
        model_name: any name ``timm.list_models()`` knows, optionally with a pretrained tag
            (``vit_small_patch16_224.dino``).
        pretrained: timm's published weights, read from the Hugging Face cache when they are there (no
            network then); otherwise downloaded, which needs network access (offline: an error at once).
        checkpoint_path: local weights file loaded strictly after creation; wins over ``pretrained``.
        checkpoint_key: nested entry of the checkpoint that holds the weights (e.g. ``teacher``).
        prefix_map: key-prefix renames, a prefix mapped to null is dropped (``{"backbone.": ""}``).
        model_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. ``img_size``).
        pooling: how ``cls`` is made: null (timm's own pooled feature: the class token of most ViTs, the
            global average of CNNs), ``cls``, ``mean`` (patch tokens, register tokens excluded) or
            ``cls_mean`` (both, concatenated); see docs/models.md, Pooling.
        seed: seed of the random initialisation, so random-init baselines are reproducible.
        name: display name in results; defaults to ``model_name`` (+ ``-random`` without weights,
            + ``-<checkpoint file stem>`` with a checkpoint).
        preprocessing: overrides the input transform that timm's pretrained config implies.
    """

    weight_files = ("checkpoint_path",)

    def __init__(
        self,
        model_name: str,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        checkpoint_key: str | None = None,
        prefix_map: dict[str, str | None] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        pooling: Pooling | None = None,
        seed: int = 0,
        name: str | None = None,
        preprocessing: Preprocessing | None = None,
    ) -> None:
        super().__init__(name, preprocessing)
        self.model_name = model_name
        self.pretrained = pretrained
        self.checkpoint_path = checkpoint_path
        self.checkpoint_key = checkpoint_key
        self.prefix_map = dict(prefix_map or {})
        self.model_kwargs = dict(model_kwargs or {})
        self.pooling = pooling
        self.seed = seed

    def default_name(self) -> str:
        if self.checkpoint_path:  # two checkpoints of one architecture must not share a results folder
            return f"{self.model_name}-{Path(self.checkpoint_path).stem}"
        return self.model_name + ("" if self.pretrained else "-random")

    def config(self) -> dict[str, Any]:
        cfg = {"model_name": self.model_name, "pretrained": self.pretrained and not self.checkpoint_path,
               "checkpoint_key": self.checkpoint_key, "prefix_map": self.prefix_map,
               "model_kwargs": self.model_kwargs}
        if self.pooling is not None:  # only then: the default keeps the fingerprints made before the option existed
            cfg["pooling"] = self.pooling
        if not cfg["pretrained"] and not self.checkpoint_path:
            cfg.update(seed=self.seed, timm=package_version("timm"), torch=torch.__version__.split("+")[0])
        return cfg

    def resolved_preprocessing(self) -> Preprocessing:
        """The config's ``preprocessing``, else timm's pretrained config of ``model_name`` (read from timm's registry,
        without building the network) at the ``img_size`` of ``model_kwargs`` when given."""
        if self.preprocessing_override is not None:
            return self.preprocessing_override
        cfg = _pretrained_cfg(self.model_name)
        size = self.model_kwargs.get("img_size")
        return _preprocessing(cfg.to_dict() if cfg is not None else {},
                              size if isinstance(size, int) else size[-1] if size else None)

    def build(self) -> Backbone:
        import timm

        base_name = self.model_name.split(".")[0]
        if base_name not in timm.list_models():
            raise EvalkitError(
                f"unknown timm model '{self.model_name}'; see `python -c \"import timm; print(timm.list_models('*vit*'))\"`"
            )
        if "checkpoint_path" in self.model_kwargs:  # timm would load it leniently, without prefix_map
            raise EvalkitError(f"timm model '{self.model_name}': set checkpoint_path on the model config, not in "
                               "model_kwargs; evalkit then loads it strictly, with checkpoint_key and prefix_map")
        preprocessing = self.resolved_preprocessing()  # first: an unknown pretrained tag is one line
        use_hub = self.pretrained and not self.checkpoint_path
        hub = _hub_weights_offline(self.model_name) if use_hub else contextlib.nullcontext()
        with torch.random.fork_rng(devices=[]), no_code_loads(), hub:
            torch.manual_seed(self.seed)
            try:
                net = timm.create_model(self.model_name, pretrained=use_hub, num_classes=0, **self.model_kwargs)
            except TypeError as exc:  # a model_kwargs key the architecture does not take
                raise EvalkitError(f"timm model '{self.model_name}' refused model_kwargs "
                                   f"{self.model_kwargs}: {exc}") from None
            except Exception as exc:  # a damaged or refused file in the weights cache, or a failed download
                if not use_hub:
                    raise
                problem = unreadable(f"the cached weights file of timm model '{self.model_name}'", exc)
                if problem.refused:
                    raise EvalkitError(problem.message()) from None
                raise EvalkitError(
                    f"cannot load pretrained weights for timm model '{self.model_name}' ({problem.detail}): offline, "
                    "or a damaged download in the cache; download them elsewhere and set model checkpoint_path to "
                    "the local file"
                ) from None
        if self.checkpoint_path:
            state = remap_keys(read_state_dict(self.checkpoint_path, self.checkpoint_key), self.prefix_map)
            load_strict(net, state, self.checkpoint_path)
        built = _preprocessing(getattr(net, "pretrained_cfg", None) or {}, _img_size(net))
        if self.preprocessing_override is None and built != preprocessing:  # the registry and the network disagree
            raise EvalkitError(f"timm model '{self.model_name}' expects the transform {built.as_dict()}, not the "
                               f"{preprocessing.as_dict()} its registry entry implies; set preprocessing in the model "
                               "config")
        _check_input_size(net, self.model_name, preprocessing.input_size)
        return TimmBackbone(net.eval(), preprocessing, self.pooling)


def _check_input_size(net: torch.nn.Module, model_name: str, size: int) -> None:
    """A ViT built for a fixed input size refuses another one mid-embedding with timm's assertion; say it here,
    in one line, before any image is read."""
    patch_embed = getattr(net, "patch_embed", None)
    fixed = getattr(patch_embed, "img_size", None)
    if fixed and getattr(patch_embed, "strict_img_size", False) and tuple(fixed) != (size, size):
        raise EvalkitError(f"timm model '{model_name}' takes {fixed[0]}x{fixed[1]} inputs, the preprocessing gives "
                           f"{size}x{size}; set preprocessing.input_size {fixed[0]}, or build the model for {size} px "
                           f"with model_kwargs: {{img_size: {size}}} (or {{dynamic_img_size: true}})")


def _pretrained_cfg(model_name: str) -> Any:
    """timm's registry entry of ``model_name`` (its default tag without one): a ``PretrainedCfg``, or ``None`` for a
    name timm does not know (:meth:`TimmModel.build` says so); an unknown tag is one line listing the known ones."""
    import timm
    from timm.models import get_pretrained_cfg

    try:
        return get_pretrained_cfg(model_name)
    except RuntimeError:  # "Invalid pretrained tag"
        base, _, tag = model_name.partition(".")
        known = ", ".join(name.partition(".")[2] for name in timm.list_pretrained(f"{base}.*")) or "none"
        raise EvalkitError(f"timm model '{base}' has no pretrained tag '{tag}'; known tags: {known}") from None


def _has_class_token(net: torch.nn.Module) -> bool:
    """Whether token 0 of a timm ViT is a class token (not a register or a patch)."""
    if hasattr(net, "cls_token"):
        return net.cls_token is not None
    return getattr(net, "num_prefix_tokens", 0) > 0


def _img_size(net: torch.nn.Module) -> int | None:
    """The input side a ViT was built for (``img_size=...``), ``None`` for networks that take any size."""
    img_size = getattr(getattr(net, "patch_embed", None), "img_size", None)
    return img_size[-1] if img_size else None


def _preprocessing(cfg: dict[str, Any], img_size: int | None) -> Preprocessing:
    """The transform of timm's pretrained config ``cfg``; a ViT built at ``img_size`` gets that size."""
    interpolation = cfg.get("interpolation", "bicubic")
    return Preprocessing(
        input_size=img_size or cfg.get("input_size", (3, 224, 224))[-1],
        mean=tuple(cfg.get("mean", Preprocessing.mean)),
        std=tuple(cfg.get("std", Preprocessing.std)),
        interpolation=interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bicubic",
    )


@contextlib.contextmanager
def _hub_weights_offline(model_name: str) -> Iterator[None]:
    """Around ``timm.create_model(pretrained=True)``: where timm's weights come from the Hugging Face hub, the
    hub client runs in offline mode when the cache holds them (no network at all), and where it does not and
    the hub cannot be reached (``HF_HUB_OFFLINE``, or one request without retries fails to connect) the build
    stops at once, instead of after the client's minute of retries."""
    import huggingface_hub
    from huggingface_hub import constants

    cfg = _pretrained_cfg(model_name)
    repo = cfg.hf_hub_id if cfg is not None and cfg.source != "local-dir" and not cfg.file else None
    if not repo:  # weights from a URL (torch.hub's cache) or none: timm's own path
        yield
        return
    repo, _, revision = repo.partition("@")
    wanted = cfg.hf_hub_filename or "pytorch_model.bin"
    files = [wanted] + (["model.safetensors"] if wanted == "pytorch_model.bin" else [])
    cached = any(isinstance(huggingface_hub.try_to_load_from_cache(repo, f, revision=revision or None), str) for f in files)
    if not cached and not _hub_reachable(repo, files[-1], revision or None):
        raise EvalkitError(
            f"timm model '{model_name}': its pretrained weights ({repo} on the Hugging Face hub) are not in the "
            f"Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub cannot be reached (offline"
            f"{', HF_HUB_OFFLINE is set' if constants.HF_HUB_OFFLINE else ''}); run `hf download {repo}` "
            "where there is network (with HF_HUB_CACHE pointing at the cache used here), or download the weights "
            "file elsewhere and set model checkpoint_path to it"
        )
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or cached  # read at each request: a cached file is used without asking the hub
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _hub_reachable(repo: str, filename: str, revision: str | None) -> bool:
    """Whether the Hugging Face hub answers (any answer, even 'not found'), asked once, without retries."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_hf_file_metadata(hf_hub_url(repo, filename, revision=revision), timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except HfHubHTTPError:  # an answer (401, 404, ...): the hub is there, and timm's download reports the problem
        return True
    except Exception:  # no connection, a timeout, a refused proxy: the client's retries would only wait
        return False
    return True
