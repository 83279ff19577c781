"""One contract for every model adapter family in the registry (the timm ``test_models.py`` idea)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torchvision

from evalkit.data import read_rgb
from evalkit.errors import EvalkitError
from evalkit.models import (
    MODELS,
    Backbone,
    HuggingFaceModel,
    LeJEPAModel,
    LocalCheckpointModel,
    ModelSpec,
    PresetModel,
    Preprocessing,
    TimmModel,
    TorchvisionModel,
)
from evalkit.models.base import pool_features
from helpers import CRC_DEMO

TILE = CRC_DEMO / "ADI" / "ADI-TCGA-EENSRDNW.png"
SMALL = Preprocessing(input_size=64)


def save_hf_vit(path: Path, seed: int = 0, with_processor: bool = True) -> Path:
    """A tiny real Hugging Face ViT saved the way ``huggingface-cli download`` leaves it."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    net = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             image_size=32, patch_size=8))
    net.save_pretrained(path)
    if with_processor:
        ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5, 0.5, 0.5],
                          image_std=[0.5, 0.5, 0.5]).save_pretrained(path)
    return path


def save_resnet18(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def save_timm_resnet18(path: Path, seed: int = 0) -> Path:
    import timm

    torch.manual_seed(seed)
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), path)
    return path


def save_preset_weights(folder: Path, seed: int = 0) -> Path:
    """Random weights of the synthetic ``tiny-vit`` preset, in a folder as ``hf download --local-dir`` leaves it."""
    from evalkit.models.presets import get_preset
    from preset_fixtures import random_state, save_state

    return save_state(random_state(get_preset("tiny-vit"), seed), folder / "model.safetensors").parent


def save_lejepa_resnet18(path: Path, seed: int = 0) -> Path:
    """A checkpoint shaped like `evalkit pretrain`'s: hyper-parameters plus backbone and projector weights."""
    from evalkit.pretrain.model import LeJEPANetwork

    torch.manual_seed(seed)
    net = LeJEPANetwork("resnet18", proj_hidden_dim=32, proj_dim=8)
    torch.save({"hyper_parameters": {"model": {"backbone": "resnet18", "proj_hidden_dim": 32, "proj_dim": 8}},
                "state_dict": {f"network.{k}": v for k, v in net.state_dict().items()}}, path)
    return path


@dataclass
class Case:
    """How to make an adapter's weight files, and how to make its spec from them."""

    setup: Callable[[Path, int], dict[str, Any]]  # (tmp folder, weights seed) -> spec kwargs
    make: Callable[..., ModelSpec]
    has_weight_file: bool


# The contract cases of every adapter family, by its name in ``evalkit.models.MODELS``.
CASES: dict[str, dict[str, Case]] = {
    "timm": {
        "vit-random": Case(lambda d, s: {}, lambda: TimmModel(
            "vit_tiny_patch16_224", model_kwargs={"img_size": 32}, preprocessing=Preprocessing(input_size=32)), False),
        "resnet-random": Case(lambda d, s: {}, lambda: TimmModel("resnet18", preprocessing=SMALL), False),
        "resnet-checkpoint": Case(lambda d, s: {"checkpoint_path": str(save_timm_resnet18(d / "t.pth", s))},
                                  lambda **kw: TimmModel("resnet18", preprocessing=SMALL, **kw), True),
    },
    "torchvision": {
        "resnet-random": Case(lambda d, s: {}, lambda: TorchvisionModel("resnet18", preprocessing=SMALL), False),
        "resnet-checkpoint": Case(lambda d, s: {"checkpoint_path": str(save_resnet18(d / "tv.pth", s))},
                                  lambda **kw: TorchvisionModel("resnet18", preprocessing=SMALL, **kw), True),
    },
    "huggingface": {
        "cls": Case(lambda d, s: {"path": str(save_hf_vit(d / "hf-vit", s))},
                    lambda **kw: HuggingFaceModel(pooling="cls", **kw), True),
        "mean": Case(lambda d, s: {"path": str(save_hf_vit(d / "hf-vit", s))},
                     lambda **kw: HuggingFaceModel(pooling="mean", **kw), True),
    },
    "checkpoint": {
        "resnet18": Case(lambda d, s: {"checkpoint_path": str(save_resnet18(d / "r18.pth", s))},
                         lambda **kw: LocalCheckpointModel(builder="torchvision.models.resnet18", preprocessing=SMALL,
                                                           **kw), True),
    },
    "lejepa": {
        "resnet18": Case(lambda d, s: {"checkpoint_path": str(save_lejepa_resnet18(d / "last.ckpt", s))},
                         lambda **kw: LeJEPAModel(preprocessing=SMALL, **kw), True),
    },
    "preset": {  # tests/models/preset_fixtures.py: a vit_tiny-sized preset at 32 px
        "weights-folder": Case(lambda d, s: {"weights": str(save_preset_weights(d / "tiny-vit", s))},
                               lambda **kw: PresetModel("tiny-vit", **kw), True),
        "random": Case(lambda d, s: {}, lambda: PresetModel("tiny-vit-random"), False),
    },
}


@pytest.fixture(autouse=True)
def _synthetic_presets(synthetic_presets):
    """The preset family's cases name the synthetic presets."""


def _cases(with_weight_file: bool = False) -> list:
    """(family, variant) of every registered adapter's cases; a family without any is caught below."""
    return [pytest.param(family, variant, id=f"{family}-{variant}") for family in MODELS.names()
            for variant, case in CASES.get(family, {}).items() if case.has_weight_file or not with_weight_file]


def test_every_registered_adapter_family_has_a_contract_case():
    missing, unknown = set(MODELS.names()) - set(CASES), set(CASES) - set(MODELS.names())
    assert not missing, f"add a contract case for the adapter(s) {sorted(missing)} to CASES in tests/models/test_adapters.py"
    assert not unknown, f"CASES names adapter(s) {sorted(unknown)} that evalkit.models.MODELS does not register"
    assert all(CASES.values()), "every family in CASES needs at least one case"


@pytest.mark.parametrize(("family", "variant"), _cases())
def test_adapter_contract(family, variant, tmp_path):
    case = CASES[family][variant]
    spec = case.make(**case.setup(tmp_path, 0))
    assert type(spec) is MODELS.get(family)
    backbone = spec.build()
    assert isinstance(backbone, Backbone)
    assert isinstance(backbone.embed_dim, int) and backbone.embed_dim > 0
    assert backbone.preprocessing == spec.resolved_preprocessing(), "the transform used is the one fingerprinted"
    size = backbone.preprocessing.input_size
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = backbone(images)
        again = backbone(images)
    assert out["cls"].shape == (2, backbone.embed_dim)
    assert out["cls"].dtype == torch.float32 and torch.isfinite(out["cls"]).all()
    assert torch.equal(out["cls"], again["cls"]), "a frozen backbone is deterministic (eval mode, no dropout)"
    if "patch" in out:
        assert out["patch"].ndim == 3 and out["patch"].shape[0] == 2 and out["patch"].shape[2] == backbone.embed_dim
    # The transform is derived from the adapter and turns a real tile into the backbone's input.
    pixels = backbone.preprocessing.transform()(read_rgb(TILE))
    assert pixels.shape == (3, size, size)
    with torch.no_grad():
        assert backbone(pixels[None])["cls"].shape == (1, backbone.embed_dim)
    assert spec.name and "/" not in spec.name
    # Dense features for segmentation: [B, C, h, w] maps, finest first.
    with torch.no_grad():
        maps = backbone.dense(images)
    assert maps and all(m.ndim == 4 and m.shape[0] == 2 for m in maps)
    assert [m.shape[-1] for m in maps] == sorted((m.shape[-1] for m in maps), reverse=True)


@pytest.mark.parametrize(("family", "variant"), _cases())
def test_fingerprint_is_stable_across_instances(family, variant, tmp_path):
    case = CASES[family][variant]
    kwargs = case.setup(tmp_path, 0)
    first, second = case.make(**kwargs), case.make(**kwargs)
    assert first.fingerprint() == second.fingerprint()
    assert len(first.fingerprint()) == 64 and int(first.fingerprint(), 16) >= 0
    assert first.name == second.name


@pytest.mark.parametrize(("family", "variant"), _cases(with_weight_file=True))
def test_fingerprint_changes_when_the_weights_file_changes(family, variant, tmp_path):
    case = CASES[family][variant]
    kwargs = case.setup(tmp_path, 0)
    before = case.make(**kwargs).fingerprint()
    assert case.setup(tmp_path, 1) == kwargs  # same path, new content
    after = case.make(**kwargs).fingerprint()
    assert before != after


def test_fingerprint_is_computed_without_building(monkeypatch):
    spec = TimmModel("resnet18", pretrained=True)
    monkeypatch.setattr(TimmModel, "build", lambda self: pytest.fail("fingerprint() must not build the model"))
    assert spec.fingerprint() == TimmModel("resnet18", pretrained=True).fingerprint()


def test_fingerprint_depends_on_what_decides_the_weights_and_transform():
    base = TimmModel("resnet18", preprocessing=SMALL).fingerprint()
    assert TimmModel("resnet18", preprocessing=SMALL, seed=1).fingerprint() != base
    assert TimmModel("resnet34", preprocessing=SMALL).fingerprint() != base
    assert TimmModel("resnet18", preprocessing=Preprocessing(input_size=96)).fingerprint() != base
    assert TorchvisionModel("resnet18", preprocessing=SMALL).fingerprint() != base
    # The display name is not part of the weights.
    assert TimmModel("resnet18", preprocessing=SMALL, name="other").fingerprint() == base


def test_the_default_fingerprint_holds_the_default_transform(monkeypatch):
    """Caches made with other evalkit defaults must not be reused: the defaults enter the key."""
    import evalkit.models.base as base_module

    spec = LeJEPAModel(checkpoint_path="runs/x/checkpoints/last.ckpt")
    monkeypatch.setattr(LeJEPAModel, "weight_files", ())  # no file needed to compute the key
    before = spec.fingerprint()
    monkeypatch.setattr(base_module, "Preprocessing", lambda: Preprocessing(interpolation="bicubic"))
    assert spec.fingerprint() != before


def test_default_transform_is_evas_resize_and_crop():
    """eva's ResizeAndCrop: torchvision's Resize (bilinear, antialiased) of the shorter side, centre
    crop, [0, 1], ImageNet normalisation; exactly, on a 150 px tile that must be upsampled."""
    from torchvision.transforms import v2

    image = read_rgb(sorted((CRC_DEMO.parent / "kather16_demo").rglob("*.tif"))[0])
    eva = v2.Compose([v2.ToImage(), v2.Resize(224), v2.CenterCrop(224), v2.ToDtype(torch.float32, scale=True),
                      v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    assert image.size != (224, 224)
    assert torch.equal(Preprocessing().transform()(image), eva(image))


def _state(spec: ModelSpec) -> dict[str, torch.Tensor]:
    return spec.build().state_dict()


@pytest.mark.parametrize("make", [
    lambda seed: TimmModel("resnet18", seed=seed, preprocessing=SMALL),
    lambda seed: TimmModel("vit_tiny_patch16_224", seed=seed, model_kwargs={"img_size": 32},
                           preprocessing=Preprocessing(input_size=32)),
    lambda seed: TorchvisionModel("resnet18", seed=seed, preprocessing=SMALL),
], ids=["timm-resnet18", "timm-vit-tiny", "torchvision-resnet18"])
def test_random_init_is_seeded(make):
    a, b, c = _state(make(0)), _state(make(0)), _state(make(1))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    assert make(0).fingerprint() != make(1).fingerprint()


def test_building_does_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    TimmModel("resnet18", seed=7, preprocessing=SMALL).build()
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("pooling", ["cls", "mean", "pooler"])
def test_huggingface_pooling(pooling, tmp_path):
    path = save_hf_vit(tmp_path / "hf-vit")
    backbone = HuggingFaceModel(str(path), pooling=pooling).build()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        raw = backbone.net(pixel_values=images)
        out = backbone(images)
    hidden = raw.last_hidden_state  # [2, 1 + 16, 32]
    expected = {"cls": hidden[:, 0], "mean": hidden[:, 1:].mean(dim=1), "pooler": raw.pooler_output}[pooling]
    torch.testing.assert_close(out["cls"], expected)
    assert out["patch"].shape == (2, 16, 32)
    assert "hf-vit" in HuggingFaceModel(str(path), pooling=pooling).name  # named after its folder


def test_huggingface_preprocessing_comes_from_the_processor_config(tmp_path):
    path = save_hf_vit(tmp_path / "hf-vit")
    pre = HuggingFaceModel(str(path)).build().preprocessing
    assert pre.input_size == 32
    assert tuple(pre.mean) == (0.5, 0.5, 0.5) and tuple(pre.std) == (0.5, 0.5, 0.5)
    override = Preprocessing(input_size=32, mean=(0.1, 0.2, 0.3))
    assert HuggingFaceModel(str(path), preprocessing=override).build().preprocessing == override


def test_huggingface_pooling_changes_the_fingerprint(tmp_path):
    path = str(save_hf_vit(tmp_path / "hf-vit"))
    assert HuggingFaceModel(path, pooling="cls").fingerprint() != HuggingFaceModel(path, pooling="mean").fingerprint()


def test_huggingface_directory_without_config_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalkitError, match="config.json"):
        HuggingFaceModel(str(tmp_path / "empty")).build()


def test_local_checkpoint_loads_the_saved_weights(tmp_path):
    ckpt = save_resnet18(tmp_path / "r18.pth", seed=5)
    backbone = LocalCheckpointModel(builder="torchvision.models.resnet18", checkpoint_path=str(ckpt),
                                    preprocessing=SMALL).build()
    saved = torch.load(ckpt, weights_only=True)
    loaded = backbone.net.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)


def test_local_checkpoint_with_unknown_builder(tmp_path):
    ckpt = save_resnet18(tmp_path / "r18.pth")
    with pytest.raises(EvalkitError, match="no_such_module.build"):
        LocalCheckpointModel(builder="no_such_module.build", checkpoint_path=str(ckpt)).build()


def test_missing_weights_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(EvalkitError, match="nope.pth"):
        LocalCheckpointModel(builder="torchvision.models.resnet18", checkpoint_path=str(missing)).fingerprint()
    with pytest.raises(EvalkitError, match="nope.pth"):
        TimmModel("resnet18", checkpoint_path=str(missing)).build()


def test_timm_preprocessing_follows_the_models_input_size():
    """A ViT built at another ``img_size`` must get a transform of that size (derived, never retyped)."""
    backbone = TimmModel("vit_tiny_patch16_224", model_kwargs={"img_size": 32}).build()
    assert backbone.preprocessing.input_size == 32
    pixels = backbone.preprocessing.transform()(read_rgb(TILE))
    with torch.no_grad():
        assert backbone(pixels[None])["cls"].shape == (1, backbone.embed_dim)


def test_unknown_timm_model_names_the_model():
    with pytest.raises(EvalkitError, match="no_such_net_v9"):
        TimmModel("no_such_net_v9").build()
    with pytest.raises(EvalkitError, match="^timm model 'resnet18' has no pretrained tag 'nope'; known tags: a1_in1k, "):
        TimmModel("resnet18.nope").fingerprint()
    with pytest.raises(EvalkitError, match="has no pretrained tag 'nope'"):
        TimmModel("resnet18.nope").build()


def test_unknown_torchvision_model_and_weights():
    with pytest.raises(EvalkitError, match="no_such_net_v9"):
        TorchvisionModel("no_such_net_v9").build()
    with pytest.raises(EvalkitError, match="IMAGENET1K_V1"):  # lists the known weights
        TorchvisionModel("resnet18", weights="NO_SUCH_WEIGHTS").build()


@pytest.fixture
def offline_caches(tmp_path, monkeypatch):
    """Empty weight caches, so nothing cached on this machine lets a 'pretrained' build succeed."""
    import huggingface_hub.constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_timm_pretrained_offline_says_use_checkpoint_path(offline_caches):
    with pytest.raises(EvalkitError) as info:
        TimmModel("resnet18", pretrained=True).build()
    message = str(info.value)
    assert "resnet18" in message and "checkpoint_path" in message
    assert "\n" not in message


def test_torchvision_weights_offline_says_use_checkpoint_path(offline_caches, monkeypatch):
    from urllib.error import URLError

    def no_network(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(EvalkitError) as info:
        TorchvisionModel("resnet18", weights="IMAGENET1K_V1").build()
    message = str(info.value)
    assert "resnet18" in message and "checkpoint_path" in message


def test_torchvision_weights_imply_their_transform(monkeypatch):
    """Named weights bring their own preprocessing (resize 256, crop 224, bilinear for IMAGENET1K_V1)."""
    weights = torchvision.models.ResNet18_Weights
    monkeypatch.setattr(weights, "get_state_dict", lambda self, *a, **k: torchvision.models.resnet18().state_dict())
    pre = TorchvisionModel("resnet18", weights="IMAGENET1K_V1").build().preprocessing
    assert (pre.input_size, pre.resize_size, pre.interpolation) == (224, 256, "bilinear")
    assert tuple(pre.mean) == pytest.approx((0.485, 0.456, 0.406))
    assert TorchvisionModel("resnet18", weights="IMAGENET1K_V1").name != TorchvisionModel("resnet18").name


def test_preprocessing_transform_resizes_crops_and_normalises():
    pre = Preprocessing(input_size=32, resize_size=40, mean=(0.5, 0.25, 0.75), std=(0.5, 0.5, 0.25),
                        interpolation="bilinear")
    from PIL import Image

    image = Image.new("RGB", (80, 60), color=(128, 64, 191))
    pixels = pre.transform()(image)
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32
    expected = [(128 / 255 - 0.5) / 0.5, (64 / 255 - 0.25) / 0.5, (191 / 255 - 0.75) / 0.25]
    for channel, value in enumerate(expected):
        torch.testing.assert_close(pixels[channel], torch.full((32, 32), value), atol=1e-3, rtol=0)
    assert Preprocessing().as_dict()["mean"] == [0.485, 0.456, 0.406]


def test_pool_features_shapes():
    assert set(pool_features(torch.zeros(2, 5))) == {"cls"}
    maps = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    out = pool_features(maps)
    assert out["patch"].shape == (2, 4, 3)
    torch.testing.assert_close(out["cls"], maps.mean(dim=(2, 3)))
    tokens = torch.randn(2, 1 + 4 + 16, 8)  # CLS, 4 registers, 16 patches
    out = pool_features(tokens, num_prefix_tokens=5)
    assert torch.equal(out["cls"], tokens[:, 0]) and torch.equal(out["patch"], tokens[:, 5:])
    with pytest.raises(ValueError, match="got shape"):
        pool_features(torch.zeros(1, 2, 3, 4, 5))


# The transform actually used is the one the fingerprint holds (issue 20, item 5). --------------------------------


@pytest.mark.parametrize(("model_name", "kwargs", "expected"), [
    ("vit_tiny_patch16_224", {}, Preprocessing(input_size=224, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic")),
    ("vit_tiny_patch16_224", {"img_size": 32}, Preprocessing(input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                                                               interpolation="bicubic")),
    ("vit_small_patch16_224.dino", {"img_size": 32}, Preprocessing(input_size=32, interpolation="bicubic")),
    ("resnet18", {}, Preprocessing(interpolation="bicubic")),
    ("resnet50.tv_in1k", {}, Preprocessing(interpolation="bilinear")),
], ids=["vit-default-tag", "vit-img-size", "vit-dino-tag", "resnet-default-tag", "resnet-tv-tag"])
def test_timm_resolves_the_transform_it_builds_with(model_name, kwargs, expected):
    spec = TimmModel(model_name, model_kwargs=kwargs)
    assert spec.resolved_preprocessing() == expected
    assert spec.build().preprocessing == expected


def test_the_resolved_transform_enters_the_fingerprint():
    """timm's transform, not evalkit's defaults: the same as giving that transform explicitly, unlike the defaults."""
    resolved = TimmModel("vit_tiny_patch16_224").resolved_preprocessing()
    assert resolved != Preprocessing()
    implicit = TimmModel("vit_tiny_patch16_224").fingerprint()
    assert implicit == TimmModel("vit_tiny_patch16_224", preprocessing=resolved).fingerprint()
    assert implicit != TimmModel("vit_tiny_patch16_224", preprocessing=Preprocessing()).fingerprint()


def test_default_transform_fingerprints_are_unchanged():
    """Where the transform used is evalkit's default, the payload is the one made before the transform was
    resolved: the caches and the index of shipped models keep their keys."""
    import hashlib
    import json

    spec = LeJEPAModel(checkpoint_path="runs/x/checkpoints/last.ckpt")
    payload = {"adapter": "LeJEPAModel", "config": {"checkpoint_path": "runs/x/checkpoints/last.ckpt"},
               "preprocessing_defaults": Preprocessing().as_dict(), "path:checkpoint_path": "runs/x/checkpoints/last.ckpt"}
    assert spec.config_key() == hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def test_huggingface_resolves_its_processor_config(tmp_path):
    path = save_hf_vit(tmp_path / "hf-vit")
    spec = HuggingFaceModel(str(path))
    assert spec.resolved_preprocessing() == spec.build().preprocessing == Preprocessing(
        input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear")
    # The config key (what fit looks up without the weights) does not read the folder.
    key = spec.config_key()
    (path / "preprocessor_config.json").unlink()
    assert spec.config_key() == key and spec.fingerprint() != HuggingFaceModel(str(save_hf_vit(tmp_path / "hf-vit"))).fingerprint()


def test_torchvision_resolves_the_weights_transform_without_building(monkeypatch):
    spec = TorchvisionModel("resnet18", weights="IMAGENET1K_V1")
    monkeypatch.setattr(TorchvisionModel, "build", lambda self: pytest.fail("must not build"))
    assert spec.resolved_preprocessing() == Preprocessing(input_size=224, resize_size=256, interpolation="bilinear")
    assert spec.fingerprint() != TorchvisionModel("resnet18", weights="IMAGENET1K_V1",
                                                  preprocessing=Preprocessing()).fingerprint()
    assert TorchvisionModel("resnet18").resolved_preprocessing() == Preprocessing()


def test_a_vit_of_another_input_size_than_its_preprocessing_is_refused_in_one_line():
    """Before, timm's AssertionError ("Input height (32) doesn't match model (224)") came as a traceback from
    inside the embedding loop; with img_size or dynamic_img_size it builds."""
    from evalkit.models import Preprocessing, TimmModel

    with pytest.raises(EvalkitError, match=r"takes 224x224 inputs, the preprocessing gives 32x32; set "
                                           r"preprocessing.input_size 224") as info:
        TimmModel("vit_tiny_patch16_224", preprocessing=Preprocessing(input_size=32)).build()
    assert "\n" not in str(info.value)
    for kwargs in ({"img_size": 32}, {"dynamic_img_size": True}):
        backbone = TimmModel("vit_tiny_patch16_224", model_kwargs=kwargs, preprocessing=Preprocessing(input_size=32)).build()
        assert backbone(torch.zeros(1, 3, 32, 32))["cls"].shape == (1, 192)
