"""The pooling rule (``cls``, ``mean``, ``cls_mean``): one function, the same in every adapter, defaults unchanged."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
import timm
import torch

from evalkit.errors import EvalkitError
from evalkit.models import HuggingFaceModel, LeJEPAModel, LocalCheckpointModel, Preprocessing, TimmModel
from evalkit.models.base import pool_tokens
from helpers import REPO

SMALL_VIT = {"img_size": 32}
PRE32 = Preprocessing(input_size=32)


def _hand(tokens: torch.Tensor, pooling: str, prefix: int) -> torch.Tensor:
    """The rule written out token by token, for comparison."""
    cls = tokens[:, 0]
    patches = tokens[:, prefix:]
    mean = sum(patches[:, i] for i in range(patches.shape[1])) / patches.shape[1]
    return {"cls": cls, "mean": mean, "cls_mean": torch.cat([cls, mean], dim=1)}[pooling]


@pytest.mark.parametrize("pooling", ["cls", "mean", "cls_mean"])
@pytest.mark.parametrize("prefix", [1, 5])  # a class token; a class token and 4 registers
def test_pool_tokens_against_a_hand_computation(pooling, prefix):
    tokens = torch.randn(3, prefix + 16, 8)
    torch.testing.assert_close(pool_tokens(tokens, pooling, prefix), _hand(tokens, pooling, prefix))


def test_registers_never_enter_the_mean():
    tokens = torch.randn(2, 1 + 4 + 9, 6)
    changed = tokens.clone()
    changed[:, 1:5] = 1e6  # only the registers
    for pooling in ("cls", "mean", "cls_mean"):
        assert torch.equal(pool_tokens(tokens, pooling, 5), pool_tokens(changed, pooling, 5))


def test_cnn_maps_average_and_refuse_cls_mean():
    maps = torch.randn(2, 7, 3, 3)
    for pooling in ("cls", "mean"):
        torch.testing.assert_close(pool_tokens(maps, pooling), maps.mean(dim=(2, 3)))
    with pytest.raises(EvalkitError, match="^pooling 'cls_mean' needs a class token, .* use pooling 'mean'"):
        pool_tokens(maps, "cls_mean")


def test_pool_tokens_refusals_are_one_line():
    with pytest.raises(EvalkitError, match="'max' is not one of cls, mean, cls_mean"):
        pool_tokens(torch.randn(1, 5, 4), "max")  # type: ignore[arg-type]
    with pytest.raises(EvalkitError, match="has none .* use pooling 'mean'"):
        pool_tokens(torch.randn(1, 5, 4), "cls", num_prefix_tokens=0)
    torch.testing.assert_close(pool_tokens(t := torch.randn(1, 5, 4), "mean", 0), t.mean(dim=1))
    with pytest.raises(EvalkitError, match="leave no patch tokens"):
        pool_tokens(torch.randn(1, 5, 4), "mean", num_prefix_tokens=5)


def test_the_worked_example_in_docs_models_md():
    """The Pooling section's example runs, and prints what its comments say."""
    text = (REPO / "docs" / "models.md").read_text()
    section = text.split("## Pooling", 1)[1].split("\n## ", 1)[0]
    [code] = [block for block in re.findall(r"```python\n(.*?)```", section, re.S) if "pool_tokens" in block]
    expected = [line.rsplit("# ", 1)[1] for line in code.splitlines() if line.startswith("print(")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/models.md", "exec"), {})
    assert out.getvalue().splitlines() == expected and len(expected) == 3


# Every adapter with the option. ------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["cls", "mean", "cls_mean"])
def test_timm_vit_pooling(pooling):
    backbone = TimmModel("vit_tiny_patch16_224", model_kwargs=SMALL_VIT, pooling=pooling).build()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = backbone.net.forward_features(images)
        out = backbone(images)
    torch.testing.assert_close(out["cls"], _hand(tokens, pooling, 1))
    assert backbone.embed_dim == out["cls"].shape[1] == (384 if pooling == "cls_mean" else 192)
    assert torch.equal(out["patch"], tokens[:, 1:])


def test_timm_default_is_timms_own_head_and_keeps_the_fingerprint():
    default = TimmModel("vit_tiny_patch16_224", model_kwargs=SMALL_VIT, preprocessing=PRE32)
    assert "pooling" not in default.config()  # the key of every cache made before the option existed
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        net = default.build().net
        expected = net.forward_head(net.forward_features(images), pre_logits=True)
        assert torch.equal(default.build()(images)["cls"], expected)
    fingerprints = {TimmModel("vit_tiny_patch16_224", model_kwargs=SMALL_VIT, preprocessing=PRE32,
                              pooling=p).fingerprint() for p in (None, "cls", "mean", "cls_mean")}
    assert len(fingerprints) == 4


def test_timm_cnn_cls_and_mean_are_the_global_average_and_cls_mean_is_refused():
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        default = TimmModel("resnet18", preprocessing=PRE32).build()(images)["cls"]
        for pooling in ("cls", "mean"):
            torch.testing.assert_close(TimmModel("resnet18", pooling=pooling).build()(images)["cls"], default)
    with pytest.raises(EvalkitError) as info:
        TimmModel("resnet18", pooling="cls_mean").build()
    assert str(info.value) == ("pooling 'cls_mean' needs a class token, and timm model ResNet gives a CNN feature map; "
                               "use pooling 'mean' (the global average)")


def test_timm_vit_without_class_token_refuses_cls():
    with pytest.raises(EvalkitError, match="needs a class token, and this timm VisionTransformer has none"):
        TimmModel("vit_tiny_patch16_224", model_kwargs={**SMALL_VIT, "class_token": False, "global_pool": "avg"},
                  pooling="cls").build()


@pytest.mark.parametrize("pooling", ["cls", "mean", "cls_mean"])
def test_huggingface_pooling(pooling, tmp_path):
    from test_adapters import save_hf_vit

    backbone = HuggingFaceModel(str(save_hf_vit(tmp_path / "hf")), pooling=pooling).build()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        hidden = backbone.net(pixel_values=images).last_hidden_state
        out = backbone(images)
    torch.testing.assert_close(out["cls"], _hand(hidden, pooling, 1))
    assert backbone.embed_dim == out["cls"].shape[1]


@pytest.mark.parametrize("pooling", ["mean", "cls_mean"])
def test_local_checkpoint_pooling_with_registers(pooling, tmp_path):
    kwargs = {"model_name": "vit_tiny_patch16_224", "num_classes": 0, "img_size": 32, "reg_tokens": 4}
    net = timm.create_model(**kwargs)
    torch.save(net.state_dict(), tmp_path / "vit.pth")

    def spec(**extra):
        return LocalCheckpointModel(builder="timm.create_model", checkpoint_path=str(tmp_path / "vit.pth"),
                                    builder_kwargs={**kwargs, "global_pool": ""}, num_prefix_tokens=5,
                                    preprocessing=PRE32, **extra)

    backbone = spec(pooling=pooling).build()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = backbone.net(images)  # global_pool '': the module returns its tokens
        out = backbone(images)
    torch.testing.assert_close(out["cls"], _hand(tokens, pooling, 5))
    assert backbone.embed_dim == out["cls"].shape[1]
    assert "pooling" not in spec().config() and spec().fingerprint() != spec(pooling=pooling).fingerprint()
    with torch.no_grad():
        assert torch.equal(spec().build()(images)["cls"], tokens[:, 0])  # the default: token 0, as before


def test_local_checkpoint_pooling_of_a_pooled_output_is_refused(tmp_path):
    from test_adapters import save_resnet18

    path = save_resnet18(tmp_path / "r18.pth")
    with pytest.raises(EvalkitError, match="returns pooled \\[B, 1000\\] embeddings; remove pooling"):
        LocalCheckpointModel(builder="torchvision.models.resnet18", checkpoint_path=str(path), pooling="mean",
                             preprocessing=PRE32).build()


def test_lejepa_pooling(tmp_path):
    from evalkit.pretrain.model import LeJEPANetwork

    torch.manual_seed(0)
    net = LeJEPANetwork("vit_tiny_patch16_224", proj_hidden_dim=16, proj_dim=8)
    path = tmp_path / "last.ckpt"
    torch.save({"hyper_parameters": {"model": {"backbone": "vit_tiny_patch16_224"}},
                "state_dict": {f"network.{k}": v for k, v in net.state_dict().items()}}, path)
    images = torch.randn(2, 3, 32, 32)
    default = LeJEPAModel(str(path), preprocessing=PRE32)
    with torch.no_grad():
        tokens = default.build().net.forward_features(images)
        for pooling in ("cls", "mean", "cls_mean"):
            out = LeJEPAModel(str(path), preprocessing=PRE32, pooling=pooling).build()(images)
            torch.testing.assert_close(out["cls"], _hand(tokens, pooling, 1))
    assert "pooling" not in default.config()
    assert default.fingerprint() != LeJEPAModel(str(path), preprocessing=PRE32, pooling="mean").fingerprint()


def test_lejepa_cnn_refuses_cls_mean(tmp_path):
    from test_adapters import save_lejepa_resnet18

    path = save_lejepa_resnet18(tmp_path / "last.ckpt")
    with pytest.raises(EvalkitError, match="use pooling 'mean'"):
        LeJEPAModel(str(path), pooling="cls_mean").build()


def test_pooling_section_lists_every_adapter_with_the_option():
    """The docs table and the adapters agree: each adapter whose __init__ takes ``pooling`` is in the table."""
    import inspect

    from evalkit.models import MODELS

    text = (REPO / "docs" / "models.md").read_text().split("## Pooling", 1)[1].split("\n## ", 1)[0]
    with_option = {cls.__name__ for _, cls in MODELS.items() if "pooling" in inspect.signature(cls.__init__).parameters}
    assert with_option == {"PresetModel", "TimmModel", "HuggingFaceModel", "LocalCheckpointModel", "LeJEPAModel"}
    assert all(f"| `{name}` |" in text for name in with_option)
