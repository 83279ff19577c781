"""The key maps against transformers itself: a random ViTModel / Dinov2Model saved with ``save_pretrained``, loaded
through the preset path into timm's network, gives the same last hidden states."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evalkit.errors import EvalkitError
from evalkit.models.key_maps import to_timm
from evalkit.models.preset_model import PresetModel
from evalkit.models.presets import create_network

# The transformers configuration of each synthetic preset of conftest.py (the same architecture, 32 px, patch 8).
COMMON = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8}
HF_MODELS = {
    "tiny-hf-vit": ("ViTModel", "ViTConfig", {"intermediate_size": 64}),
    "tiny-hf-dinov2": ("Dinov2Model", "Dinov2Config", {"mlp_ratio": 2}),
    "tiny-hf-dinov2-swiglu": ("Dinov2Model", "Dinov2Config", {"mlp_ratio": 2, "use_swiglu_ffn": True}),
    "tiny-hf-dinov2-swiglu-split": ("Dinov2Model", "Dinov2Config", {"mlp_ratio": 2, "use_swiglu_ffn": True}),
    "tiny-hf-dinov2-reg": ("Dinov2WithRegistersModel", "Dinov2WithRegistersConfig",
                           {"mlp_ratio": 2, "num_register_tokens": 4}),
}


def save_hf_model(preset_name: str, folder: Path, seed: int = 0) -> torch.nn.Module:
    """A transformers model of the preset's architecture, every parameter random (layer norms, layer scale and
    biases included, so that no mapping error hides behind an initial one or zero), saved with save_pretrained."""
    import transformers

    model_class, config_class, extra = HF_MODELS[preset_name]
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(**COMMON, **extra)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.3 + (1.0 if param.ndim == 1 and param.shape[0] == 32 else 0.0))
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("preset_name", HF_MODELS)
def test_hidden_states_match_transformers(preset_name, synthetic_presets, tmp_path):
    hf = save_hf_model(preset_name, tmp_path / "hf")
    assert (tmp_path / "hf" / "config.json").is_file() and (tmp_path / "hf" / "model.safetensors").is_file()
    backbone = PresetModel(preset_name, weights=str(tmp_path / "hf")).build()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = hf(pixel_values=images).last_hidden_state
        tokens = backbone.net.forward_features(images)
        out = backbone(images)
    assert tokens.shape == expected.shape  # [class, registers..., 16 patches]
    torch.testing.assert_close(tokens, expected, atol=1e-4, rtol=1e-4)
    prefix = 1 + synthetic_presets[preset_name].num_registers
    torch.testing.assert_close(out["patch"], expected[:, prefix:], atol=1e-4, rtol=1e-4)


def test_the_pooler_and_mask_token_are_dropped_and_qkv_fused(synthetic_presets, tmp_path):
    save_hf_model("tiny-hf-dinov2", tmp_path / "hf")
    from safetensors.torch import load_file

    upstream = load_file(tmp_path / "hf" / "model.safetensors")
    target = create_network(synthetic_presets["tiny-hf-dinov2"]).state_dict()
    mapped = to_timm(upstream, "hf_dinov2", target)
    assert set(mapped) == set(target)
    q, k, v = (upstream[f"encoder.layer.1.attention.attention.{n}.weight"] for n in ("query", "key", "value"))
    assert torch.equal(mapped["blocks.1.attn.qkv.weight"], torch.cat([q, k, v]))
    assert torch.equal(mapped["blocks.0.ls1.gamma"], upstream["encoder.layer.0.layer_scale1.lambda1"])
    assert "embeddings.mask_token" in upstream and "pooler.dense.weight" not in upstream


def test_timm_layout_is_taken_as_it_is(synthetic_presets):
    target = create_network(synthetic_presets["tiny-vit"]).state_dict()
    assert to_timm(target, "timm", target) == target


def test_a_layout_that_does_not_fit_is_one_line_naming_the_keys(synthetic_presets, tmp_path):
    """HF weights under a preset that says ``timm``: every key is unexpected, every timm key missing."""
    save_hf_model("tiny-hf-vit", tmp_path / "hf")
    with pytest.raises(EvalkitError) as info:
        PresetModel("tiny-vit", weights=str(tmp_path / "hf")).build()
    message = str(info.value)
    file = tmp_path / "hf" / "model.safetensors"
    assert message.startswith(f"{file} does not fit the network in the timm layout (missing: blocks.0.attn.proj.bias, ")
    assert "unexpected: embeddings.cls_token, " in message and "in all)" in message and "\n" not in message
    assert message.endswith("is it the weights file of evalkit-test/tiny-vit? Download it again, or point the model's "
                            "weights at the right file")


def test_a_missing_or_misshapen_key_is_named(synthetic_presets, tmp_path):
    from safetensors.torch import load_file, save_file

    save_hf_model("tiny-hf-dinov2", tmp_path / "hf")
    file = tmp_path / "hf" / "model.safetensors"
    state = load_file(file)
    del state["encoder.layer.1.attention.attention.value.bias"]  # an incomplete q/k/v triple is not fused
    state["layernorm.weight"] = torch.ones(31)
    save_file(state, str(file))
    with pytest.raises(EvalkitError) as info:
        PresetModel("tiny-hf-dinov2", weights=str(tmp_path / "hf")).build()
    message = str(info.value)
    assert "missing: blocks.1.attn.qkv.bias; " in message
    assert "unexpected: encoder.layer.1.attention.attention.key.bias, encoder.layer.1.attention.attention.query.bias;" \
        in message
    assert "wrong shape: norm.weight (31,) vs (32,)" in message


def test_unknown_weight_format_is_refused():
    with pytest.raises(EvalkitError, match="weight_format 'hf_clip' is not one of timm, hf_vit, hf_dinov2"):
        to_timm({}, "hf_clip", {})
