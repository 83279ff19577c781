"""PresetModel: a named model built from its preset, pooled by the preset's rule, identified by what decides it."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from evalkit.errors import EvalkitError
from evalkit.models import MODELS, Preprocessing, create_model
from evalkit.models import preset_model
from evalkit.models.preset_model import PresetModel
from evalkit.models.presets import PRESETS
from preset_fixtures import random_state, save_state


@pytest.fixture
def tiny_weights(synthetic_presets, tmp_path):
    """A folder per synthetic timm-layout preset and seed, holding random weights as ``model.safetensors``."""
    def write(name: str, seed: int = 0):
        return str(save_state(random_state(synthetic_presets[name], seed), tmp_path / f"{name}-{seed}" / "model.safetensors")
                              .parent)
    return write


@pytest.mark.parametrize("pooling", ["cls", "mean", "cls_mean"])
@pytest.mark.parametrize("name", ["tiny-vit", "tiny-vit-reg"])
def test_pooled_output_against_the_raw_timm_tokens(name, pooling, synthetic_presets, tiny_weights):
    backbone = PresetModel(name, weights=tiny_weights(name), pooling=pooling).build()
    registers = synthetic_presets[name].num_registers
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = backbone.net.forward_features(images)  # [class, registers..., 16 patches]
        out = backbone(images)
    assert tokens.shape[1] == 1 + registers + 16
    patches = tokens[:, 1 + registers:]
    cls, mean = tokens[:, 0], sum(patches[:, i] for i in range(16)) / 16
    expected = {"cls": cls, "mean": mean, "cls_mean": torch.cat([cls, mean], dim=1)}[pooling]
    torch.testing.assert_close(out["cls"], expected)
    assert backbone.embed_dim == out["cls"].shape[1]
    assert torch.equal(out["patch"], patches)  # registers never among the patches
    with torch.no_grad():
        [grid] = backbone.dense(images)
    assert grid.shape == (2, 32, 4, 4) and torch.equal(grid.flatten(2).transpose(1, 2), patches)


def test_the_presets_own_pooling_and_width(synthetic_presets, tiny_weights):
    spec = PresetModel("tiny-vit-reg", weights=tiny_weights("tiny-vit-reg"))
    assert spec.pooling == "cls_mean"
    backbone = spec.build()
    assert backbone.embed_dim == synthetic_presets["tiny-vit-reg"].embed_dim == 64
    assert backbone.pooling == "cls_mean"


def test_found_by_alias_any_case_named_after_the_preset(synthetic_presets, tiny_weights):
    spec = create_model("preset", preset="PATHOLOGY/Tiny_ViT", weights=tiny_weights("tiny-vit"))
    assert type(spec) is PresetModel and MODELS.get("preset") is PresetModel
    assert spec.name == "tiny-vit" and spec.preset is synthetic_presets["tiny-vit"]
    assert PresetModel("tiny-vit", name="mine").name == "mine"


def test_unknown_preset_lists_the_known_ones(synthetic_presets):
    with pytest.raises(EvalkitError, match="^unknown model preset 'nope'; `evalkit models list` shows them: tiny-gated, "):
        PresetModel("nope")


def test_the_transform_is_the_presets_and_enters_the_fingerprint(synthetic_presets, tiny_weights):
    preset = synthetic_presets["tiny-vit"]
    spec = PresetModel("tiny-vit", weights=tiny_weights("tiny-vit"))
    expected = Preprocessing(input_size=32, mean=preset.mean, std=preset.std, interpolation="bicubic")
    assert spec.resolved_preprocessing() == expected == spec.build().preprocessing
    other = Preprocessing(input_size=32, interpolation="bilinear")
    overridden = PresetModel("tiny-vit", weights=spec.weights, preprocessing=other)
    assert overridden.build().preprocessing == other == overridden.resolved_preprocessing()
    assert overridden.fingerprint() != spec.fingerprint()


def test_the_fingerprint_holds_everything_the_preset_fixes(synthetic_presets, tiny_weights, monkeypatch):
    weights = tiny_weights("tiny-vit")
    base = PresetModel("tiny-vit", weights=weights)
    monkeypatch.setattr(preset_model, "create_network", lambda *a, **k: pytest.fail("fingerprint must not build"))
    fingerprint = base.fingerprint()
    assert PresetModel("tiny-vit", weights=weights, name="other").fingerprint() == fingerprint  # not the name
    assert PresetModel("tiny-vit", weights=weights, pooling="mean").fingerprint() != fingerprint
    assert PresetModel("tiny-vit", weights=tiny_weights("tiny-vit", seed=1)).fingerprint() != fingerprint
    preset = synthetic_presets["tiny-vit"]
    for change in ({"arch_kwargs": {**preset.arch_kwargs, "qkv_bias": False}}, {"architecture": "vit_small_patch16_224"},
                   {"interpolation": "bilinear"}, {"mean": (0.5, 0.5, 0.5)}, {"resize_size": 36}):
        monkeypatch.setitem(PRESETS._items, "tiny-vit", replace(preset, **change))
        assert PresetModel("tiny-vit", weights=weights).fingerprint() != fingerprint, change
    monkeypatch.setitem(PRESETS._items, "tiny-vit", replace(preset, licence="other", sources=("x",), notes="n"))
    assert PresetModel("tiny-vit", weights=weights).fingerprint() == fingerprint  # documentation is not identity


def test_same_file_same_fingerprint_wherever_it_was_found(synthetic_presets, hf_cache, tiny_weights):
    folder = tiny_weights("tiny-vit")
    in_folder = PresetModel("tiny-vit", weights=folder).fingerprint()
    hf_cache("evalkit-test/tiny-vit", {"model.safetensors": Path(folder) / "model.safetensors"})
    assert PresetModel("tiny-vit").fingerprint() == in_folder
    assert PresetModel("tiny-vit", weights=folder + "/model.safetensors").fingerprint() == in_folder
    # The config key records the path as given (what fit looks up), not the file's bytes.
    assert PresetModel("tiny-vit").config_key() != PresetModel("tiny-vit", weights=folder).config_key()


def test_random_control_needs_no_weights_and_is_seeded(synthetic_presets, hf_cache):
    spec = PresetModel("tiny-vit-random")
    assert spec.name == "tiny-vit-random" and spec.missing_weights() == []
    a, b, c = (PresetModel("tiny-vit-random", seed=s).build().net.state_dict() for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a) and any(not torch.equal(a[k], c[k]) for k in a)
    assert spec.fingerprint() != PresetModel("tiny-vit-random", seed=1).fingerprint()
    config = spec.config()
    assert config["random_init"] and config["seed"] == 0 and "timm" in config and "torch" in config


def test_a_pooling_that_is_not_one_is_refused(synthetic_presets):
    with pytest.raises(EvalkitError, match="pooling 'max' is not one of cls, mean, cls_mean"):
        PresetModel("tiny-vit", pooling="max")  # type: ignore[arg-type]


@pytest.mark.parametrize(("change", "message"), [
    ({"num_registers": 2}, "has 5 prefix tokens, but the preset says a class token and 2 register tokens"),
    ({"embed_dim": 48}, "gives 32-d tokens, but its embed_dim 48 with pooling 'cls_mean' implies 24-d"),
    ({"arch_kwargs_extra": {"global_pool": "avg"}}, "pools inside the network (attn_pool or fc_norm)"),
])
def test_a_preset_that_does_not_describe_its_network_is_refused(change, message, synthetic_presets, monkeypatch):
    preset = synthetic_presets["tiny-vit-reg"]
    change = dict(change)
    extra = change.pop("arch_kwargs_extra", {})
    monkeypatch.setitem(PRESETS._items, "tiny-vit-reg",
                        replace(preset, arch_kwargs={**preset.arch_kwargs, **extra}, **change))
    with pytest.raises(EvalkitError, match=re.escape(f"model preset 'tiny-vit-reg-random' (vit_tiny_patch16_224) {message}")):
        PresetModel("tiny-vit-reg-random").build()


def test_an_input_size_the_network_does_not_take_is_refused(synthetic_presets):
    with pytest.raises(EvalkitError, match="takes 32 px inputs, the transform gives 64 px"):
        PresetModel("tiny-vit-random", preprocessing=Preprocessing(input_size=64)).build()


# End to end: a Hugging Face cache snapshot of a listed model runs by name, with no other configuration. -------


def _smallest_timm_layout_preset():
    """The smallest real preset whose upstream layout is timm's (any listed model would do; the smallest is fastest)."""
    pytest.importorskip("evalkit.models.preset_table", reason="the preset table (preset_table.py) is not there yet")
    presets = [p for _, p in PRESETS.items() if p.weight_format == "timm" and p.hf_repo]
    assert presets, "the preset table lists no model published in timm's layout"
    return min(presets, key=lambda p: p.num_params)


def test_a_cache_snapshot_of_a_listed_model_runs_by_name(tmp_path):
    from helpers import CRC_TASK, DATA, run_in_process

    preset = _smallest_timm_layout_preset()
    cache = tmp_path / "hf-cache"
    repo = cache / ("models--" + preset.hf_repo.replace("/", "--"))
    weights = save_state(random_state(preset), repo / "snapshots" / ("e" * 40) / preset.weight_files[0])
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("e" * 40)
    proc = run_in_process("predict_fit", "--config", CRC_TASK, "--model", preset.name, "--head.max_steps", "20",
                   "--head.n_runs", "1", "--data_root", DATA, "--embeddings_root", tmp_path / "emb",
                   "--results_root", tmp_path / "res", cwd=tmp_path, HF_HUB_CACHE=str(cache))
    assert proc.returncode == 0, proc.stderr
    [results] = (tmp_path / "res" / "crc_demo" / preset.name).rglob("results.json")
    data = json.loads(results.read_text())
    assert data["model"] == preset.name
    assert data["model_fingerprint"] == PresetModel(preset.name, weights=str(weights)).fingerprint()
