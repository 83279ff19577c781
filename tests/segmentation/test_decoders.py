"""Every registered decoder obeys the one contract, trains on frozen features and refuses bad input in one line."""

from __future__ import annotations

import pytest
import torch

from evalkit.errors import EvalkitError
from evalkit.runtime import torch_threads
from evalkit.segmentation import IGNORE_INDEX, SEG_DECODERS, build_decoder

K = 5
VIT = ([384], [16])  # ViT-S/16 patch tokens
CNN = ([64, 128, 256, 512], [4, 8, 16, 32])  # ResNet-18-like stage outputs
INPUTS = {"mask2former": [VIT, CNN], "linear": [VIT, CNN], "fpn": [CNN]}
CASES = [(name, spec) for name in SEG_DECODERS.names() for spec in INPUTS[name]]
IDS = [f"{name}-{'vit' if len(spec[0]) == 1 else 'cnn'}" for name, spec in CASES]


def features(spec, size=224, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, size // s, size // s, generator=g) for c, s in zip(*spec)]


def blocky_target(size=128, block=16, batch=2, seed=1):
    """Random classes on a grid of ``block`` px cells: learnable from features at stride <= block."""
    coarse = torch.randint(0, K, (batch, size // block, size // block), generator=torch.Generator().manual_seed(seed))
    return coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small ops on a shared 2-core machine: under load, two busy-waiting OpenMP threads ran the
    overfit tests 40x slower than one thread does."""
    with torch_threads(1):
        yield


def test_registry_holds_the_three_decoders():
    assert SEG_DECODERS.names() == ["fpn", "linear", "mask2former"]
    assert set(INPUTS) == set(SEG_DECODERS.names())


@pytest.mark.parametrize(("name", "spec"), CASES, ids=IDS)
def test_output_shapes(name, spec):
    decoder = build_decoder(name, *spec, K)
    feats = features(spec)
    out = decoder(feats, (224, 224))
    if name == "mask2former":
        assert out["pred_logits"].shape == (2, 32, K + 1)
        assert out["pred_masks"].shape == (2, 32, 56, 56)
        assert len(out["aux"]) == 4  # before the first layer and after layers 1-3
        for aux in out["aux"]:
            assert aux["pred_logits"].shape == (2, 32, K + 1) and aux["pred_masks"].shape == (2, 32, 56, 56)
    else:
        assert out["logits"].shape == (2, K, 224, 224)
    scores = decoder.semantic_logits(out, (224, 224))
    assert scores.shape == (2, K, 224, 224)
    assert bool(torch.isfinite(scores).all()) and bool((scores >= 0).all())
    loss = decoder.loss(out, torch.randint(0, K, (2, 224, 224)))
    assert loss.ndim == 0 and bool(torch.isfinite(loss))
    # Scores at another size (a tile of a 1000 px image is scored at the tile's size).
    assert decoder.semantic_logits(out, (250, 250)).shape == (2, K, 250, 250)


@pytest.mark.parametrize(("name", "spec"), CASES, ids=IDS)
def test_gradients_reach_the_decoder_only(name, spec):
    decoder = build_decoder(name, *spec, K)
    feats = features(spec, size=64)
    assert not any(f.requires_grad for f in feats)
    targets = blocky_target(size=64)
    targets[:, :4] = IGNORE_INDEX
    decoder.loss(decoder(feats, (64, 64)), targets).backward()
    for param_name, param in decoder.named_parameters():
        assert param.grad is not None, param_name
        assert bool(torch.isfinite(param.grad).all()), param_name
    assert any(float(p.grad.abs().sum()) > 0 for p in decoder.parameters())
    assert all(f.grad is None for f in feats)


@pytest.mark.parametrize(("name", "spec", "lr", "min_accuracy"), [
    ("mask2former", ([64], [16]), 3e-3, 0.9),
    ("mask2former", ([16, 32, 64, 128], [4, 8, 16, 32]), 3e-3, 0.9),
    ("linear", ([64], [16]), 0.1, 0.8),  # bilinear logits between token centres blur every block edge
    ("fpn", ([16, 32, 64, 128], [4, 8, 16, 32]), 3e-3, 0.9),
], ids=["mask2former-vit", "mask2former-cnn", "linear-vit", "fpn-cnn"])
def test_overfits_a_fixed_pair(name, spec, lr, min_accuracy):
    torch.manual_seed(0)
    decoder = build_decoder(name, *spec, K)
    feats, targets = features(spec, size=128), blocky_target(size=128)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
    losses = []
    for _ in range(50):
        loss = decoder.loss(decoder(feats, (128, 128)), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    decoder.eval()
    with torch.no_grad():
        pred = decoder.semantic_logits(decoder(feats, (128, 128)), (128, 128)).argmax(1)
    assert float((pred == targets).float().mean()) > min_accuracy


def test_fpn_refuses_a_single_map_in_one_line():
    with pytest.raises(EvalkitError, match="mask2former or linear") as info:
        build_decoder("fpn", [384], [16], K)
    assert "\n" not in str(info.value)


def test_fpn_refuses_maps_that_do_not_halve():
    decoder = build_decoder("fpn", *CNN, K)
    with pytest.raises(EvalkitError, match="halve exactly"):
        decoder(features(CNN, size=200), (200, 200))  # 50, 25, 12, 6
    with pytest.raises(EvalkitError, match="s, 2s, 4s, 8s"):
        build_decoder("fpn", [8, 8, 8, 8], [4, 8, 16, 64], K)


def test_fpn_uses_the_last_four_maps():
    decoder = build_decoder("fpn", [8, *CNN[0]], [2, *CNN[1]], K)
    feats = [torch.randn(1, 8, 112, 112)] + features(CNN, batch=1)
    assert decoder(feats, (224, 224))["logits"].shape == (1, K, 224, 224)


def test_mask2former_masks_are_at_stride_4_for_patch_14():
    decoder = build_decoder("mask2former", [32], [14], K)
    out = decoder([torch.randn(1, 32, 16, 16)], (224, 224))
    assert out["pred_masks"].shape[-2:] == (56, 56)


def test_several_maps_at_one_stride_are_fused():
    """ViT features from several blocks: one pyramid level at stride 16, not four."""
    decoder = build_decoder("mask2former", [32] * 4, [16] * 4, K)
    assert decoder.pixel_decoder.level_strides == [16]
    out = decoder([torch.randn(1, 32, 14, 14) for _ in range(4)], (224, 224))
    assert out["pred_masks"].shape == (1, 32, 56, 56)


@pytest.mark.parametrize(("name", "spec"), CASES, ids=IDS)
def test_wrong_features_are_refused(name, spec):
    decoder = build_decoder(name, *spec, K)
    wrong = [torch.randn(1, c + 1, 224 // s, 224 // s) for c, s in zip(*spec)]
    with pytest.raises(EvalkitError, match="in_channels"):
        decoder(wrong, (224, 224))


@pytest.mark.parametrize(("name", "spec"), CASES, ids=IDS)
def test_targets_out_of_range_are_refused(name, spec):
    decoder = build_decoder(name, *spec, K)
    out = decoder(features(spec, size=64, batch=1), (64, 64))
    with pytest.raises(EvalkitError, match="class 7"):
        decoder.loss(out, torch.full((1, 64, 64), 7))


def test_build_decoder_checks_names_and_options():
    with pytest.raises(EvalkitError, match="known: fpn, linear, mask2former"):
        build_decoder("unet", *VIT, K)
    with pytest.raises(EvalkitError, match="no option hidden.*batch_norm"):
        build_decoder("linear", *VIT, K, hidden=64)
    few_queries = build_decoder("mask2former", *VIT, K, num_queries=8)
    assert few_queries(features(VIT, 64, 1), (64, 64))["pred_logits"].shape[1] == 8
    with pytest.raises(EvalkitError, match="one stride per feature map"):
        build_decoder("linear", [384, 384], [16], K)
    with pytest.raises(EvalkitError, match="num_classes"):
        build_decoder("linear", *VIT, 1)
