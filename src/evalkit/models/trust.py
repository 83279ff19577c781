"""What a model config may make evalkit run: model classes and factories by default, other code on opt-in.

A model config can name code: ``LocalCheckpointModel.builder`` is a dotted path that evalkit imports
and calls, and ``HuggingFaceModel.trust_remote_code`` runs the Python files of a model folder. A
config file shared with you should not be able to do more than build a network, so anything else
needs ``EVALKIT_TRUST_CODE=1`` in the environment of whoever runs evalkit. The opt-in is an
environment variable, not a config field, on purpose: a field would sit in the very file being
vetted, so a config could opt itself in.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from torch import nn

from evalkit.errors import EvalkitError

TRUST_CODE_ENV = "EVALKIT_TRUST_CODE"

# Namespaces a builder path may start with without the opt-in, checked on the text before anything is
# imported (importing a module runs its code). Not all of ``torch``: ``torch.load`` unpickles and
# ``torch.hub.load`` downloads and runs a repository's hubconf.py; not all of ``evalkit``'s functions either.
# Importing these installed libraries is harmless; what may then be called is narrowed by _builds_a_model.
TRUSTED_NAMESPACES = ("evalkit", "torch.nn", "torchvision.models", "timm", "transformers")


def code_trusted() -> bool:
    """Whether the person running evalkit allowed configs to run any code (``EVALKIT_TRUST_CODE=1``)."""
    return os.environ.get(TRUST_CODE_ENV, "").strip().lower() in ("1", "true", "yes")


def _in_trusted_namespace(module: str) -> bool:
    return any(module == space or module.startswith(space + ".") for space in TRUSTED_NAMESPACES)


def _builds_a_model(obj: Any) -> bool:
    """An ``nn.Module`` class (constructing one builds layers and reads no file), or a function whose only
    job is to build one: ``timm.create_model``, ``torchvision.models.get_model``, the model functions that
    timm and torchvision register by name, and ``evalkit.pretrain.model.build_backbone``. Everything else
    in those namespaces (``timm.models.load_checkpoint``, ``torch.nn.init.*``, ...) is excluded."""
    if isinstance(obj, type):
        return issubclass(obj, nn.Module)
    package = (getattr(obj, "__module__", None) or "").split(".")[0]
    name = getattr(obj, "__name__", "")
    if package == "timm":
        import timm.models

        return obj is timm.create_model or (timm.models.is_model(name) and timm.models.model_entrypoint(name) is obj)
    if package == "torchvision":
        import torchvision.models

        return obj is torchvision.models.get_model or (
            name in torchvision.models.list_models() and torchvision.models.get_model_builder(name) is obj)
    from evalkit.pretrain.model import build_backbone

    return obj is build_backbone


def _refuse(path: str) -> EvalkitError:
    return EvalkitError(f"builder '{path}' is not a model class or model factory of {', '.join(TRUSTED_NAMESPACES)}, "
                        f"and a model config may run other code only with {TRUST_CODE_ENV}=1 in the environment: "
                        "set it if you trust this config, or name e.g. timm.create_model")


def import_builder(path: str) -> Any:
    """The callable ``path`` names (``package.module.function`` or ``package.module:function``), imported only
    if it lies in a trusted namespace or the user opted in, and returned only if it builds a model (or opted in)."""
    module_name, _, attr = path.replace(":", ".").rpartition(".")
    trusted = code_trusted()
    if not trusted and not _in_trusted_namespace(module_name):
        raise _refuse(path)  # before the import: importing runs the module's code
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise EvalkitError(f"cannot import builder '{path}'; expected 'package.module.function'") from None
    if not trusted and not _builds_a_model(obj):
        raise _refuse(path)
    return obj
