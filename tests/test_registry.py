from __future__ import annotations

import sys

import pytest

import evalkit.data
import evalkit.models
from evalkit.cli import main
from evalkit.data import DATASETS, DatasetSpec
from evalkit.errors import EvalkitError
from evalkit.heads import PROTOCOLS
from evalkit.models import MODELS, ModelSpec, TimmModel, create_model
from evalkit.registry import Registry


def test_register_and_get():
    reg: Registry[int] = Registry("widget")

    @reg.register("b")
    def b():
        return 2

    reg.add("a", 1)
    assert reg.get("a") == 1 and reg.get("b") is b
    assert reg.names() == ["a", "b"]
    assert [name for name, _ in reg.items()] == ["a", "b"]
    assert "a" in reg and "c" not in reg and len(reg) == 2


def test_duplicate_registration_raises():
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)
    with pytest.raises(Exception, match="'a'"):
        reg.add("a", 2)
    with pytest.raises(Exception, match="'a'"):
        reg.register("a")(3)
    assert reg.get("a") == 1  # the first registration survives


def test_unknown_name_lists_known_names():
    reg: Registry[int] = Registry("widget")
    reg.add("zeta", 1)
    reg.add("alpha", 2)
    with pytest.raises(EvalkitError, match="widget 'gamma'") as info:
        reg.get("gamma")
    assert "alpha" in str(info.value) and "zeta" in str(info.value)


def _widget_package(root, name: str) -> None:
    """A package ``name`` whose modules ``alpha`` and ``beta`` register ``alpha`` and ``b`` in its registry."""
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text(f"from evalkit.registry import Registry\nREG = Registry('widget', '{name}')\n")
    (package / "alpha.py").write_text(f"from {name} import REG\nREG.add('alpha', 1)\n")
    (package / "beta.py").write_text(f"from {name} import REG\nREG.add('b', 2)\n")


def test_a_package_registry_imports_its_modules_on_first_lookup(tmp_path, monkeypatch):
    """The CLI imports every registry; the modules that fill one (torch) are imported on its first lookup:
    a name that is also a module's imports that module alone, a listing or another name all of them."""
    _widget_package(tmp_path, "widgets_lazy")
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("widgets_lazy", "widgets_lazy.alpha", "widgets_lazy.beta"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    import widgets_lazy

    assert "widgets_lazy.alpha" not in sys.modules and "widgets_lazy.beta" not in sys.modules
    assert widgets_lazy.REG.get("alpha") == 1
    assert "widgets_lazy.alpha" in sys.modules and "widgets_lazy.beta" not in sys.modules
    assert widgets_lazy.REG.names() == ["alpha", "b"]
    with pytest.raises(EvalkitError, match="widget 'gamma'; known: alpha, b"):
        widgets_lazy.REG.get("gamma")


def test_a_package_registry_lookup_of_a_name_of_no_module_imports_them_all(tmp_path, monkeypatch):
    _widget_package(tmp_path, "widgets_all")
    monkeypatch.syspath_prepend(str(tmp_path))
    import widgets_all

    assert "b" in widgets_all.REG and len(widgets_all.REG) == 2


def test_empty_registry_unknown_name():
    with pytest.raises(EvalkitError, match="'x'"):
        Registry("widget").get("x")


@pytest.mark.parametrize(("registry", "package", "base"), [(MODELS, evalkit.models, ModelSpec),
                                                           (DATASETS, evalkit.data, DatasetSpec)])
def test_every_registered_class_is_exported_under_its_own_name(registry, package, base):
    """Configs and `evalkit models list` name them ``evalkit.models.<Class>`` / ``evalkit.data.<Class>``."""
    for name, cls in registry.items():
        assert issubclass(cls, base), name
        assert getattr(package, cls.__name__, None) is cls, f"export {cls.__name__} from {package.__name__}"


def test_unknown_model_adapter_lists_the_known_ones():
    with pytest.raises(EvalkitError) as info:
        create_model("no_such_family", model_name="resnet18")
    message = str(info.value)
    assert "no_such_family" in message
    for name in MODELS.names():
        assert name in message


def test_create_model_is_the_front_door():
    spec = create_model("timm", model_name="resnet18", seed=3)
    assert isinstance(spec, TimmModel) and spec.model_name == "resnet18" and spec.seed == 3


def test_protocol_registry_knows_its_entries():
    assert {"sgd_kaiko", "adamw_eva"} <= set(PROTOCOLS.names())
    with pytest.raises(EvalkitError, match="sgd_kaiko"):
        PROTOCOLS.get("sgd")


def test_models_list_prints_every_adapter(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    adapters = out.split("\n\n")[0].splitlines()[1:]  # then the presets (tests/test_model_names.py)
    listed = {line.split()[0] for line in adapters if line[2] != " "}  # a wrapped description is indented further
    assert listed == set(MODELS.names())
    for _, cls in MODELS.items():
        assert cls.__name__ in out
