"""What a model config may make evalkit run: model classes and factories, other code only on opt-in (issue 17)."""

from __future__ import annotations

import re
import sys

import pytest
import timm
import torch
import torchvision

from evalkit.errors import EvalkitError
from evalkit.models import HuggingFaceModel, LocalCheckpointModel, Preprocessing
from evalkit.models.trust import TRUST_CODE_ENV

SMALL = Preprocessing(input_size=64)


@pytest.fixture(autouse=True)
def _not_trusted(monkeypatch):
    monkeypatch.delenv(TRUST_CODE_ENV, raising=False)


def _refusal(builder: str) -> str:
    return (f"builder '{builder}' is not a model class or model factory of evalkit, torch.nn, torchvision.models, "
            "timm, transformers, and a model config may run other code only with EVALKIT_TRUST_CODE=1 in the "
            "environment: set it if you trust this config, or name e.g. timm.create_model")


@pytest.fixture
def own_module(tmp_path, monkeypatch):
    """A module outside the trusted namespaces whose import leaves the file ``imported``; returns its name."""
    name = "builders_" + re.sub(r"\W", "_", tmp_path.name)
    (tmp_path / f"{name}.py").write_text(
        f"open({str(tmp_path / 'imported')!r}, 'w').close()\n"
        "import torchvision\n\n"
        "def build():\n    return torchvision.models.resnet18()\n\n"
        "def not_a_model():\n    return {'fc': 1}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


@pytest.fixture
def resnet18_weights(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    return str(tmp_path / "r18.pth")


@pytest.mark.parametrize("builder", ["builtins.open", "os.system", "torch.load", "torch.hub.load", "torch.hub:load",
                                     "timm.models.load_checkpoint", "torch.nn.init.zeros_", "evalkit.cli.main"])
def test_a_builder_that_is_no_model_factory_is_refused_before_it_runs(builder, tmp_path, resnet18_weights):
    spec = LocalCheckpointModel(builder=builder, checkpoint_path=resnet18_weights,
                                builder_kwargs={"file": str(tmp_path / "opened"), "mode": "w"})
    with pytest.raises(EvalkitError) as info:
        spec.build()
    assert str(info.value) == _refusal(builder)
    assert not (tmp_path / "opened").exists()


def test_a_builder_module_outside_the_trusted_namespaces_is_not_even_imported(own_module, tmp_path, resnet18_weights):
    with pytest.raises(EvalkitError) as info:
        LocalCheckpointModel(builder=f"{own_module}.build", checkpoint_path=resnet18_weights).build()
    assert str(info.value) == _refusal(f"{own_module}.build")
    assert not (tmp_path / "imported").exists() and own_module not in sys.modules


def test_with_the_opt_in_any_builder_runs_and_must_return_a_module(own_module, tmp_path, resnet18_weights,
                                                                      monkeypatch):
    monkeypatch.setenv(TRUST_CODE_ENV, "1")
    backbone = LocalCheckpointModel(builder=f"{own_module}:build", checkpoint_path=resnet18_weights,
                                    identity_modules=["fc"], preprocessing=SMALL).build()
    assert backbone.embed_dim == 512 and (tmp_path / "imported").exists()
    with pytest.raises(EvalkitError) as info:
        LocalCheckpointModel(builder=f"{own_module}.not_a_model", checkpoint_path=resnet18_weights).build()
    assert str(info.value) == (f"builder '{own_module}.not_a_model' returned a dict, expected a torch.nn.Module; "
                               "name a function or class that builds the network")


def _weights_of(net: torch.nn.Module, path) -> str:
    torch.save(net.state_dict(), path)
    return str(path)


@pytest.mark.parametrize(("builder", "kwargs", "net"), [
    ("timm.create_model", {"model_name": "resnet18", "num_classes": 0}, lambda: timm.create_model("resnet18",
                                                                                                    num_classes=0)),
    ("timm.models.resnet18", {"num_classes": 0}, lambda: timm.create_model("resnet18", num_classes=0)),
    ("torchvision.models.get_model", {"name": "resnet18"}, torchvision.models.resnet18),
    ("torch.nn.Identity", {}, torch.nn.Identity),
], ids=["timm.create_model", "timm-registered", "torchvision.get_model", "nn.Module-class"])
def test_model_classes_and_factories_need_no_opt_in(builder, kwargs, net, tmp_path):
    weights = _weights_of(net(), tmp_path / "w.pth")
    spec = LocalCheckpointModel(builder=builder, builder_kwargs=kwargs, checkpoint_path=weights, preprocessing=SMALL)
    assert spec.build()(torch.zeros(1, 3, 64, 64))["cls"].ndim == 2


def test_huggingface_remote_code_needs_the_opt_in(tmp_path, monkeypatch):
    from test_adapters import save_hf_vit

    folder = save_hf_vit(tmp_path / "hf")
    with pytest.raises(EvalkitError) as info:
        HuggingFaceModel(str(folder), trust_remote_code=True).build()
    assert str(info.value) == (f"the model config sets trust_remote_code, which runs the Python files in {folder}; "
                               "set EVALKIT_TRUST_CODE=1 in the environment if you trust them")
    monkeypatch.setenv(TRUST_CODE_ENV, "1")
    assert HuggingFaceModel(str(folder), trust_remote_code=True).build().embed_dim == 32
