"""Finding preset weights offline (a file, a folder, the Hugging Face cache), loading them strictly, failing at once;
and timm's ``pretrained=True`` without network."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

from evalkit.errors import EvalkitError
from evalkit.models import TimmModel
from evalkit.models import preset_model
from evalkit.models.preset_model import PresetModel
from evalkit.models.weights import find_weights, hf_hub_cache, weight_locations
from preset_fixtures import random_state, save_state


def _assert_loaded(spec: PresetModel, expected: dict[str, torch.Tensor]) -> None:
    loaded = spec.build().net.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


@pytest.fixture
def no_network(monkeypatch):
    """Every connection attempt is recorded and fails, as on a machine without network."""
    calls: list[tuple] = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return calls


# Round trips through every upstream layout. ------------------------------------------------------------------


@pytest.mark.parametrize("file", ["pytorch_model.bin", "model.safetensors"])
@pytest.mark.parametrize("given", ["file", "folder"])
def test_timm_layout_from_a_file_or_folder(file, given, synthetic_presets, tmp_path):
    preset = synthetic_presets["tiny-vit"]
    state = random_state(preset, seed=3)
    path = save_state(state, tmp_path / "download" / file)
    spec = PresetModel("tiny-vit", weights=str(path if given == "file" else path.parent))
    assert find_weights(preset, spec.weights) == path
    _assert_loaded(spec, state)


def test_a_folder_prefers_the_first_weight_file_of_the_preset(synthetic_presets, tmp_path):
    preset = synthetic_presets["tiny-vit"]
    save_state(random_state(preset, 1), tmp_path / "d" / "pytorch_model.bin")
    save_state(safe := random_state(preset, 2), tmp_path / "d" / "model.safetensors")
    assert preset.weight_files[0] == "model.safetensors"
    _assert_loaded(PresetModel("tiny-vit", weights=str(tmp_path / "d")), safe)


def test_weights_in_half_precision_load_into_the_float32_network(synthetic_presets, tmp_path):
    """The network is built on the meta device and takes the file's tensors, cast to its own dtype."""
    state = {k: v.half() for k, v in random_state(synthetic_presets["tiny-vit"], 7).items()}
    net = PresetModel("tiny-vit", weights=str(save_state(state, tmp_path / "model.safetensors"))).build().net
    loaded = net.state_dict()
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in loaded.values())
    assert all(torch.equal(loaded[k], state[k].float()) for k in state)


def test_a_random_control_takes_no_weights(synthetic_presets, tmp_path):
    with pytest.raises(EvalkitError, match="'tiny-vit-random' is the random-init control and takes no weights; name "
                                           "the preset 'tiny-vit' to load"):
        PresetModel("tiny-vit-random", weights=str(tmp_path))


def test_hf_folder_from_save_pretrained(synthetic_presets, tmp_path):
    from test_key_maps import save_hf_model

    hf = save_hf_model("tiny-hf-vit", tmp_path / "phikon-like")
    backbone = PresetModel("tiny-hf-vit", weights=str(tmp_path / "phikon-like")).build()
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone.net.forward_features(images), hf(pixel_values=images).last_hidden_state,
                                   atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
def test_hf_cache_snapshot_is_found_without_configuration(variable, synthetic_presets, hf_cache, tmp_path,
                                                          monkeypatch, no_network):
    preset = synthetic_presets["tiny-vit"]
    state = random_state(preset, seed=4)
    snapshot = hf_cache(preset.hf_repo, {"model.safetensors": save_state(state, tmp_path / "w" / "model.safetensors")})
    if variable == "HF_HOME":  # the cache under $HF_HOME/hub, HF_HUB_CACHE unset
        home = tmp_path / "hf-home"
        home.mkdir()
        os.rename(hf_cache.cache, home / "hub")
        snapshot = home / "hub" / snapshot.relative_to(hf_cache.cache)
        monkeypatch.delenv("HF_HUB_CACHE")
        monkeypatch.setenv("HF_HOME", str(home))
    assert find_weights(preset) == snapshot / "model.safetensors"
    _assert_loaded(PresetModel("tiny-vit"), state)
    assert not no_network  # never asked the network


def test_hf_cache_snapshot_of_an_hf_layout(synthetic_presets, hf_cache, tmp_path):
    from test_key_maps import save_hf_model

    hf = save_hf_model("tiny-hf-dinov2-reg", tmp_path / "hf")
    hf_cache(synthetic_presets["tiny-hf-dinov2-reg"].hf_repo,
             {"config.json": tmp_path / "hf" / "config.json", "model.safetensors": tmp_path / "hf" / "model.safetensors"})
    backbone = PresetModel("tiny-hf-dinov2-reg").build()
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = hf(pixel_values=images).last_hidden_state
        torch.testing.assert_close(backbone(images)["cls"], torch.cat([expected[:, 0], expected[:, 5:].mean(1)], 1),
                                   atol=1e-4, rtol=1e-4)


def test_refs_main_picks_the_revision_else_the_newest_snapshot(synthetic_presets, hf_cache, tmp_path):
    preset = synthetic_presets["tiny-vit"]
    old, new = random_state(preset, 5), random_state(preset, 6)
    hf_cache(preset.hf_repo, {"model.safetensors": save_state(old, tmp_path / "old" / "model.safetensors")}, "b" * 40)
    hf_cache(preset.hf_repo, {"model.safetensors": save_state(new, tmp_path / "new" / "model.safetensors")}, "c" * 40,
             main=False)
    folder = hf_cache.cache / "models--evalkit-test--tiny-vit"
    os.utime(folder / "snapshots" / ("b" * 40), (1, 1))  # the refs/main snapshot is the older one
    _assert_loaded(PresetModel("tiny-vit"), old)
    assert weight_locations(preset)[0] == str(folder / "snapshots" / ("b" * 40) / "model.safetensors")
    (folder / "refs" / "main").unlink()
    _assert_loaded(PresetModel("tiny-vit"), new)


def test_a_snapshot_whose_blob_is_missing_does_not_count(synthetic_presets, hf_cache, tmp_path):
    """An interrupted download leaves a link to a blob that is not there."""
    preset = synthetic_presets["tiny-vit"]
    snapshot = hf_cache(preset.hf_repo, {"model.safetensors": save_state(random_state(preset),
                                                                         tmp_path / "w" / "model.safetensors")})
    (snapshot / "model.safetensors").resolve().unlink()
    assert find_weights(preset) is None
    with pytest.raises(EvalkitError, match="weights of model preset 'tiny-vit' not found"):
        PresetModel("tiny-vit").fingerprint()


# Missing weights: one line, every place, at once. -------------------------------------------------------------


def test_missing_weights_name_every_place_and_how_to_get_them(synthetic_presets, hf_cache, monkeypatch):
    monkeypatch.setattr(preset_model, "create_network", lambda *a, **k: pytest.fail("must fail before building"))
    cache = hf_cache.cache
    with pytest.raises(EvalkitError) as info:
        PresetModel("tiny-vit").build()
    assert str(info.value) == (
        "weights of model preset 'tiny-vit' not found (looked in "
        f"{cache}/models--evalkit-test--tiny-vit/snapshots/*/model.safetensors, "
        f"{cache}/models--evalkit-test--tiny-vit/snapshots/*/pytorch_model.bin); download them where there is network "
        "with `hf download evalkit-test/tiny-vit` (older clients: `huggingface-cli download`) into the Hugging Face "
        f"cache evalkit reads ({cache}: set HF_HUB_CACHE or HF_HOME to use another), or with "
        "`hf download evalkit-test/tiny-vit --local-dir DIR` and set the model's weights to DIR")
    with pytest.raises(EvalkitError) as again:
        PresetModel("tiny-vit").fingerprint()
    assert str(again.value) == str(info.value)


def test_gated_and_given_weights_say_so(synthetic_presets, hf_cache, tmp_path):
    with pytest.raises(EvalkitError) as info:
        PresetModel("tiny-gated", weights=str(tmp_path / "nowhere")).build()
    message = str(info.value)
    assert message.startswith(f"weights of model preset 'tiny-gated' not found (looked in {tmp_path / 'nowhere'}); "
                              f"check the model's weights ({tmp_path / 'nowhere'}), or remove it")
    assert message.endswith("; evalkit-test/tiny-gated is gated: accept its terms on "
                            "https://huggingface.co/evalkit-test/tiny-gated and log in (`hf auth login`) before "
                            "downloading")
    (tmp_path / "empty").mkdir()
    assert weight_locations(synthetic_presets["tiny-gated"], tmp_path / "empty") == [str(tmp_path / "empty" /
                                                                                         "pytorch_model.bin")]


def test_the_default_cache_follows_huggingface_hubs_rule(monkeypatch, tmp_path):
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hf_hub_cache() == tmp_path / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_hub_cache() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_hub_cache() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hf_hub_cache() == tmp_path / "cache"


def test_fit_without_the_weights_finds_the_fingerprint_predict_recorded(synthetic_presets, hf_cache, tmp_path):
    """config_key needs no weights (and is the same with and without them); fingerprint hashes the file found."""
    from evalkit.embed.index import model_fingerprint, record_fingerprint

    preset = synthetic_presets["tiny-vit"]
    spec = PresetModel("tiny-vit")
    key_without = spec.config_key()
    assert spec.missing_weights() and "snapshots/*/model.safetensors" in spec.missing_weights()[0]
    with pytest.raises(EvalkitError, match="^weights not found: .*snapshots/\\*/model.safetensors.*; download them "):
        model_fingerprint(tmp_path / "emb", spec)
    snapshot = hf_cache(preset.hf_repo, {"model.safetensors": save_state(random_state(preset),
                                                                         tmp_path / "w" / "model.safetensors")})
    assert spec.missing_weights() == [] and spec.config_key() == key_without
    fingerprint = spec.fingerprint()
    record_fingerprint(tmp_path / "emb", spec, fingerprint)
    (snapshot / "model.safetensors").unlink()
    assert model_fingerprint(tmp_path / "emb", PresetModel("tiny-vit")) == (fingerprint, "index")


def test_presets_that_differ_only_in_their_repository_have_their_own_config_key(synthetic_presets):
    """tiny-gated is tiny-vit's architecture and transform published elsewhere (as h-optimus-0 and -1 are)."""
    vit, gated = PresetModel("tiny-vit"), PresetModel("tiny-gated")
    assert vit.config() == gated.config() and vit.resolved_preprocessing() == gated.resolved_preprocessing()
    assert vit.config_key() != gated.config_key()
    assert PresetModel("tiny-vit-random").config_key() == PresetModel("tiny-gated-random").config_key()  # one network


# Damaged and pickled files, refused as every weights file is. -------------------------------------------------


class _Marker:
    """Unpickling this creates the file ``path``: the stand-in for a payload such as ``os.system``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_pickled_payload_in_the_cache_is_refused_without_running(synthetic_presets, hf_cache, tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"cls_token": torch.zeros(1), "payload": _Marker(marker)}, tmp_path / "pytorch_model.bin")
    snapshot = hf_cache("evalkit-test/tiny-vit", {"pytorch_model.bin": tmp_path / "pytorch_model.bin"})
    with pytest.raises(EvalkitError) as info:
        PresetModel("tiny-vit").build()
    assert str(info.value) == (f"{snapshot / 'pytorch_model.bin'} holds a non-tensor pickle object (io.open) that "
                               "evalkit refuses to unpickle, since unpickling can run code; convert the weights to "
                               "safetensors (if you trust the file) or use a trusted weights file")
    assert not marker.exists()


def test_a_truncated_file_is_named(synthetic_presets, tmp_path):
    path = save_state(random_state(synthetic_presets["tiny-vit"]), tmp_path / "model.safetensors")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(EvalkitError) as info:
        PresetModel("tiny-vit", weights=str(path)).build()
    assert str(info.value).startswith(f"{path} is truncated, empty or not a weights file (SafetensorError")


# timm's pretrained=True: the cache without network, and at once without either. -------------------------------


@pytest.fixture
def timm_hub(hf_cache, monkeypatch):
    """huggingface_hub's cache constant (read at its import) pointed at the test's cache; downloads recorded."""
    import huggingface_hub.constants
    import timm.models._hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf_cache.cache))
    downloads: list[tuple] = []
    real = timm.models._hub.hf_hub_download

    def recording(*args, **kwargs):
        downloads.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", recording)
    return downloads


def test_timm_pretrained_from_the_cache_without_network(hf_cache, timm_hub, tmp_path, monkeypatch, no_network):
    import huggingface_hub.constants
    import timm

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # as if online: the cache must suffice
    state = timm.create_model("resnet18", num_classes=0).state_dict()
    hf_cache("timm/resnet18.a1_in1k", {"model.safetensors": save_state(state, tmp_path / "w" / "model.safetensors")})
    loaded = TimmModel("resnet18", pretrained=True).build().net.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert timm_hub and not no_network  # read through timm's download function, from the cache
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # restored


def test_timm_pretrained_offline_fails_at_once(hf_cache, timm_hub, monkeypatch):
    """HF_HUB_OFFLINE and nothing cached: the error comes before any download (where the hub client would retry)."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda *a, **k: pytest.fail("no request offline"))
    with pytest.raises(EvalkitError) as info:
        TimmModel("resnet18", pretrained=True).build()
    assert str(info.value) == (
        "timm model 'resnet18': its pretrained weights (timm/resnet18.a1_in1k on the Hugging Face hub) are not in the "
        f"Hugging Face cache ({hf_cache.cache}) and the hub cannot be reached (offline, HF_HUB_OFFLINE is set); run "
        "`hf download timm/resnet18.a1_in1k` where there is network (with HF_HUB_CACHE pointing at the "
        "cache used here), or download the weights file elsewhere and set model checkpoint_path to it")
    assert not timm_hub


def test_timm_pretrained_without_network_fails_after_one_request(hf_cache, timm_hub, monkeypatch, no_network):
    """HF_HUB_OFFLINE unset, no network: one request without retries, then the error; no download is started."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(EvalkitError, match="the hub cannot be reached \\(offline\\); run"):
        TimmModel("resnet18", pretrained=True).build()
    assert len(no_network) == 1 and not timm_hub
