"""Strict checkpoint loading: key remapping, nested checkpoints (DINO), and errors that list the keys."""

from __future__ import annotations

import argparse

import pytest
import timm
import torch
import torchvision

from evalkit.cli import build_parser
from evalkit.errors import EvalkitError
from evalkit.models import (
    HuggingFaceModel,
    LeJEPAModel,
    LocalCheckpointModel,
    Preprocessing,
    TimmModel,
    TorchvisionModel,
)
from evalkit.models.checkpoint import load_strict, read_state_dict, remap_keys
from helpers import CONFIGS, CRC_TASK

T = torch.zeros(1)


def test_remap_keys_renames_and_drops():
    state = {"backbone.a": T, "backbone.b.c": T, "head.mlp.0.weight": T, "other": T}
    out = remap_keys(state, {"backbone.": "", "head.": None})
    assert list(out) == ["a", "b.c", "other"]


def test_remap_keys_longest_prefix_wins():
    state = {"module.backbone.x": T, "module.head.y": T, "module.z": T}
    out = remap_keys(state, {"module.": "", "module.backbone.": "", "module.head.": None})
    assert set(out) == {"x", "z"}


def test_remap_keys_empty_prefix_drops_everything_else():
    state = {"backbone.a": T, "head.b": T, "loss.c": T}
    assert set(remap_keys(state, {"backbone.": "", "": None})) == {"a"}


def test_remap_keys_adds_a_prefix_and_keeps_tensors():
    value = torch.arange(3)
    out = remap_keys({"fc.weight": value}, {"fc.": "classifier.fc."})
    assert list(out) == ["classifier.fc.weight"] and out["classifier.fc.weight"] is value


def test_remap_keys_without_map_is_identity():
    state = {"a": T, "b": T}
    assert remap_keys(state, {}) == state


def test_read_state_dict_unwraps_common_nesting(tmp_path):
    inner = {"layer.weight": torch.ones(2)}
    torch.save({"state_dict": inner, "epoch": 3, "global_step": 10}, tmp_path / "lightning.ckpt")
    assert read_state_dict(tmp_path / "lightning.ckpt").keys() == inner.keys()
    torch.save({"model": inner}, tmp_path / "deit.pth")
    assert read_state_dict(tmp_path / "deit.pth").keys() == inner.keys()


def test_read_state_dict_safetensors(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.arange(4.0)}, str(tmp_path / "w.safetensors"))
    assert torch.equal(read_state_dict(tmp_path / "w.safetensors")["w"], torch.arange(4.0))


def test_read_state_dict_errors_name_the_file(tmp_path):
    with pytest.raises(EvalkitError, match="missing.pth"):
        read_state_dict(tmp_path / "missing.pth")
    (tmp_path / "garbage.pth").write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(EvalkitError, match="garbage.pth") as info:
        read_state_dict(tmp_path / "garbage.pth")
    assert "\n" not in str(info.value)
    torch.save({"student": {"w": T}}, tmp_path / "ckpt.pth")
    with pytest.raises(EvalkitError, match="teacher") as info:
        read_state_dict(tmp_path / "ckpt.pth", key="teacher")
    assert "student" in str(info.value)  # the keys that are there


def test_wrong_keys_error_lists_missing_and_unexpected(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    state["projection.weight"] = state.pop("fc.weight")
    state["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    spec = LocalCheckpointModel(builder="torchvision.models.resnet18", checkpoint_path=str(tmp_path / "bad.pth"))
    with pytest.raises(EvalkitError) as info:
        spec.build()
    message = str(info.value)
    assert "bad.pth" in message
    assert "missing" in message and "fc.weight" in message
    assert "unexpected" in message and "projection.weight" in message
    assert "layer1.0.conv1.weight" in message  # wrong shape
    assert "\n" not in message


def test_load_strict_leaves_the_module_untouched_on_error():
    net = torch.nn.Linear(2, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(EvalkitError, match="bias"):
        load_strict(net, {"weight": torch.ones(2, 2)}, "x.pth")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def _tiny_vit(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32)


def _dino_teacher(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The teacher of a DINO training checkpoint: the backbone under ``backbone.``, plus the DINO head."""
    teacher = {f"backbone.{k}": v for k, v in net.state_dict().items()}
    teacher.update({"head.mlp.0.weight": torch.randn(16, 192), "head.mlp.0.bias": torch.randn(16),
                    "head.last_layer.weight_g": torch.ones(8, 1), "head.last_layer.weight_v": torch.randn(8, 16)})
    return teacher


def _load_dino(path) -> torch.nn.Module:
    spec = TimmModel("vit_tiny_patch16_224", checkpoint_path=str(path), checkpoint_key="teacher",
                     prefix_map={"backbone.": "", "head.": None}, model_kwargs={"img_size": 32},
                     preprocessing=Preprocessing(input_size=32), seed=99)
    return spec.build().net


def _assert_weights_equal(net: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    loaded = net.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


def test_dino_teacher_checkpoint_loads_the_backbone(tmp_path):
    source = _tiny_vit(seed=1)
    teacher = _dino_teacher(source)
    torch.save({"teacher": teacher, "student": {k: torch.zeros_like(v) for k, v in teacher.items()}},
               tmp_path / "checkpoint.pth")
    _assert_weights_equal(_load_dino(tmp_path / "checkpoint.pth"), source.state_dict())


def test_dino_training_checkpoint_as_main_dino_writes_it(tmp_path):
    """DINO's ``main_dino.py`` saves ``args`` (an argparse.Namespace), the optimizer, epoch and loss
    beside the teacher; the config comment of vit_small_patch16_224_dino.yaml promises this loads."""
    source = _tiny_vit(seed=2)
    teacher = _dino_teacher(source)
    torch.save({
        "student": {f"module.{k}": v for k, v in teacher.items()},
        "teacher": teacher,
        "optimizer": torch.optim.SGD(source.parameters(), lr=0.1).state_dict(),
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_tiny", patch_size=16, out_dim=65536),
        "dino_loss": {"center": torch.zeros(1, 16)},
    }, tmp_path / "checkpoint.pth")
    _assert_weights_equal(_load_dino(tmp_path / "checkpoint.pth"), source.state_dict())


def test_dino_checkpoint_without_prefix_map_lists_the_keys(tmp_path):
    torch.save({"teacher": _dino_teacher(_tiny_vit(seed=1))}, tmp_path / "checkpoint.pth")
    spec = TimmModel("vit_tiny_patch16_224", checkpoint_path=str(tmp_path / "checkpoint.pth"),
                     checkpoint_key="teacher", model_kwargs={"img_size": 32})
    with pytest.raises(EvalkitError) as info:
        spec.build()
    message = str(info.value)
    assert "missing: blocks.0." in message
    assert "unexpected: backbone." in message
    assert "in all" in message  # long lists are cut, with their length


def test_dino_release_checkpoint_through_the_shipped_config(tmp_path):
    """The official ``dino_deitsmall16_pretrain.pth`` is a flat backbone state dict (ViT-S/16, no head)."""
    torch.manual_seed(3)
    release = timm.create_model("vit_small_patch16_224", num_classes=0).state_dict()
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(release, path)
    parser = build_parser("predict")
    dino = CONFIGS / "models" / "vit_small_patch16_224_dino.yaml"
    cfg = parser.parse_args(["--config", str(CRC_TASK), "--config", str(dino),
                             "--model.init_args.checkpoint_path", str(path)])
    spec = parser.instantiate_classes(cfg).model
    assert spec.name == "vit_small_patch16_224-dino"
    backbone = spec.build()
    _assert_weights_equal(backbone.net, release)
    assert backbone.embed_dim == 384
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 224, 224))["cls"].shape == (1, 384)


# Files that must not load, and must say so in one line naming them (issue 17). ------------------------


class _Marker:
    """Unpickling this creates the file ``path``: the stand-in for a payload such as ``os.system``."""

    def __init__(self, path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _save_payload(path, marker) -> None:
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Marker(marker)}, path)


def _damage(path, kind: str) -> None:
    """Leave ``path`` as a kill during its write (truncated), a failed copy (empty) or a foreign file would."""
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"\x00not a checkpoint" * 10)


def _refusal(path) -> str:
    return (f"{path} holds a non-tensor pickle object (io.open) that evalkit refuses to unpickle, since unpickling "
            "can run code; convert the weights to safetensors (if you trust the file) or use a trusted weights file")


ADAPTERS_WITH_A_WEIGHTS_FILE = {
    "timm": lambda path: TimmModel("resnet18", checkpoint_path=str(path)),
    "torchvision": lambda path: TorchvisionModel("resnet18", checkpoint_path=str(path)),
    "checkpoint": lambda path: LocalCheckpointModel(builder="torchvision.models.resnet18", checkpoint_path=str(path)),
    "lejepa": lambda path: LeJEPAModel(checkpoint_path=str(path)),
}


def test_the_payload_runs_when_unpickled_without_weights_only(tmp_path):
    """The check the tests below rely on: loading the payload file the unsafe way creates the marker."""
    _save_payload(tmp_path / "payload.pth", tmp_path / "code-ran")
    torch.load(tmp_path / "payload.pth", weights_only=False)
    assert (tmp_path / "code-ran").exists()


@pytest.mark.parametrize("adapter", ADAPTERS_WITH_A_WEIGHTS_FILE)
def test_a_pickled_payload_is_refused_in_one_line_without_running(adapter, tmp_path):
    path, marker = tmp_path / "weights.pth", tmp_path / "code-ran"
    _save_payload(path, marker)
    with pytest.raises(EvalkitError) as info:
        ADAPTERS_WITH_A_WEIGHTS_FILE[adapter](path).build()
    assert str(info.value) == _refusal(path)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage"])
@pytest.mark.parametrize("adapter", ADAPTERS_WITH_A_WEIGHTS_FILE)
def test_a_damaged_weights_file_is_named_in_one_line(adapter, kind, tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    _damage(path, kind)
    with pytest.raises(EvalkitError) as info:
        ADAPTERS_WITH_A_WEIGHTS_FILE[adapter](path).build()
    message = str(info.value)
    assert message.startswith(f"{path} is truncated, empty or not a weights file (") and "\n" not in message
    detail = {"truncated": "(RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central "
                           "directory)", "empty": "(EOFError)", "garbage": "(UnpicklingError: Unsupported operand 0)"}
    assert detail[kind] in message
    assert message.endswith("e.g. epoch=009.ckpt" if adapter == "lejepa" else "; copy or download it again")


def test_a_truncated_safetensors_file_is_named_in_one_line(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file(torchvision.models.resnet18().state_dict(), str(path))
    _damage(path, "truncated")
    with pytest.raises(EvalkitError) as info:
        read_state_dict(path)
    assert str(info.value) == (f"{path} is truncated, empty or not a weights file (SafetensorError: Error while "
                               "deserializing header: incomplete metadata, file not fully covered); copy or download "
                               "it again")


def _hf_with_bin_weights(path):
    """A tiny Hugging Face ViT folder whose weights are a torch ``pytorch_model.bin`` instead of safetensors."""
    from test_adapters import save_hf_vit

    folder = save_hf_vit(path)
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def test_huggingface_refuses_a_pickled_payload_in_one_line_without_running(tmp_path):
    folder = _hf_with_bin_weights(tmp_path / "hf")
    marker = tmp_path / "code-ran"
    _save_payload(folder / "pytorch_model.bin", marker)
    with pytest.raises(EvalkitError) as info:
        HuggingFaceModel(str(folder)).build()
    assert str(info.value) == _refusal(folder / "pytorch_model.bin")
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage"])
@pytest.mark.parametrize("file", ["pytorch_model.bin", "model.safetensors"])
def test_huggingface_names_a_damaged_weights_file_in_one_line(file, kind, tmp_path):
    from test_adapters import save_hf_vit

    folder = _hf_with_bin_weights(tmp_path / "hf") if file.endswith(".bin") else save_hf_vit(tmp_path / "hf")
    _damage(folder / file, kind)
    with pytest.raises(EvalkitError) as info:
        HuggingFaceModel(str(folder)).build()
    message = str(info.value)
    assert message.startswith(f"{folder / file} is truncated, empty or not a weights file (")
    assert message.endswith("; download the model again") and "\n" not in message


def test_torchvision_weights_from_the_hub_cache_are_read_without_running_code(tmp_path, monkeypatch):
    """torchvision itself reads its download cache with weights_only=False; evalkit forces weights_only."""
    from urllib.parse import urlparse

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cached = tmp_path / "torch-home" / "hub" / "checkpoints" / urlparse(url).path.rpartition("/")[2]
    cached.parent.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    _save_payload(cached, marker)
    with pytest.raises(EvalkitError) as info:
        TorchvisionModel("resnet18", weights="IMAGENET1K_V1").build()
    assert str(info.value) == _refusal(cached)
    assert not marker.exists()


def test_timm_checkpoint_path_in_model_kwargs_points_to_the_adapters_own(tmp_path):
    with pytest.raises(EvalkitError) as info:
        TimmModel("resnet18", model_kwargs={"checkpoint_path": str(tmp_path / "w.pth")}).build()
    assert str(info.value) == ("timm model 'resnet18': set checkpoint_path on the model config, not in model_kwargs; "
                               "evalkit then loads it strictly, with checkpoint_key and prefix_map")
