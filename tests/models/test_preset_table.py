"""Every named preset, parametrised from the registry (timm's ``test_models.py`` idea): the full
architecture has the upstream parameter count, a random-init build gives the token layout the
preset declares, and the table's names, aliases and citations are consistent.

Random-init builds run with one block (the full architectures are counted on the meta device); no
weights are read.
Pooling against a hand computation is tested with the adapter (evalkit.models.preset_model).
"""

from __future__ import annotations

import csv

import pytest
import torch

from evalkit.models.presets import PRESETS, RANDOM_SUFFIX, Preset, create_network, find_preset
from helpers import REPO

NAMES = PRESETS.names()
TOLERANCE = 0.005  # published counts are rounded (681M, 632M)
DEPTH = 1  # blocks of the random-init builds (random init of a ViT-g block costs ~1 s on a CPU core)

# Published names that are no preset, each with the reason.
NOT_PRESETS = {
    # The DINO ViT-S/16 random control: the shipped TimmModel config vit_small_patch16_224_random.yaml runs under
    # this exact name. A preset alias "vit_small_patch16_224" would let dino-vits16-random match it too, but would
    # shadow timm's own name for a differently trained model.
    "vit_small_patch16_224-random": "matched by the TimmModel config of the same name",
}
UNRELEASED_PREFIX = "kaiko_ablation_"  # the kaiko paper's ablation models were never released


def preset(name: str) -> Preset:
    return PRESETS.get(name)


@pytest.mark.parametrize("name", NAMES)
def test_full_architecture_has_the_reference_parameter_count(name: str) -> None:
    p = preset(name)
    net = create_network(p, meta=True)
    measured = sum(t.numel() for t in net.parameters())
    assert abs(measured - p.num_params) <= TOLERANCE * p.num_params, (
        f"{name}: {measured:,} parameters measured, reference {p.num_params:,} "
        f"({(measured - p.num_params) / p.num_params:+.2%})")


@pytest.mark.parametrize("name", NAMES)
def test_random_build_has_the_declared_token_layout(name: str) -> None:
    p = preset(name)
    torch.manual_seed(0)
    net = create_network(p, depth=DEPTH).eval()
    width = net.embed_dim
    assert net.patch_embed.patch_size == (p.patch_size, p.patch_size)
    assert net.num_prefix_tokens == 1 + p.num_registers and net.has_class_token
    assert getattr(net, "num_reg_tokens", 0) == p.num_registers
    assert p.embed_dim == width * (2 if p.pooling == "cls_mean" else 1), f"{name}: pooled width for {p.pooling}"
    # At the preset's input size, and at a 3 x 3 grid (dynamic_img_size: the stored position table is resampled)
    for side in (p.input_size, 3 * p.patch_size):
        with torch.no_grad():
            tokens = net.forward_features(torch.randn(2, 3, side, side))
        grid = (side // p.patch_size) ** 2
        assert tokens.shape == (2, 1 + p.num_registers + grid, width), f"{name} at {side} px"
        assert torch.isfinite(tokens).all()


@pytest.mark.parametrize("name", NAMES)
def test_random_control_is_the_same_architecture(name: str) -> None:
    control = find_preset(name.upper() + RANDOM_SUFFIX)
    assert control is not None and control.random_init and control.name == name + RANDOM_SUFFIX
    assert (control.architecture, control.arch_kwargs, control.embed_dim) == (
        preset(name).architecture, preset(name).arch_kwargs, preset(name).embed_dim)


@pytest.mark.parametrize("name", NAMES)
def test_entry_is_complete_and_cited(name: str) -> None:
    p = preset(name)
    assert p.name == name == name.lower() and not name.endswith(RANDOM_SUFFIX)
    assert p.sources and all(s.strip() for s in p.sources)
    assert p.licence.strip()
    assert ("not gated" in p.licence) == (not p.gated), f"{name}: licence text and gated flag disagree"
    assert p.pooling in ("cls", "mean", "cls_mean")
    assert p.input_size % p.patch_size == 0 and (p.resize_size or p.input_size) >= p.input_size
    assert p.interpolation in ("bilinear", "bicubic")
    assert all(0 < s < 1 for s in p.std) and all(0 < m < 1 for m in p.mean)
    assert p.hf_repo or p.weight_files, f"{name}: nowhere to read weights from"
    if p.weight_format != "timm":
        assert p.hf_repo, f"{name}: {p.weight_format} weights are a Hugging Face repository"


def test_names_and_aliases_are_unique() -> None:
    seen: dict[str, str] = {}
    for name, p in PRESETS.items():
        for key in (name, *p.aliases):
            assert key.lower() not in seen, f"'{key}' selects both {seen[key.lower()]} and {name}"
            seen[key.lower()] = name
    assert find_preset("Pathology/Mahmood_UNI2_H").name == "uni2-h"  # any case, through the front door


def test_published_model_names_select_a_preset() -> None:
    names = set()
    for table in sorted((REPO / "results" / "published").glob("*.csv")):
        with table.open() as f:
            names |= {row["model"] for row in csv.DictReader(f)}
    released = {n for n in names if not n.startswith(UNRELEASED_PREFIX) and n not in NOT_PRESETS}
    missing = sorted(n for n in released if find_preset(n) is None)
    assert not missing, f"published names no preset answers to: {missing}"
    # eva's leaderboard probes Virchow2 and Midnight with the class token alone (IN_FEATURES 1280 / 1536)
    assert find_preset("paige_virchow2").pooling == "cls" and find_preset("kaiko_midnight_12k").pooling == "cls"
    assert find_preset("vit_small_patch16_224-random") is None  # see NOT_PRESETS


def test_cls_variants_share_the_model() -> None:
    for name, p in PRESETS.items():
        if name.endswith("-cls"):
            base = preset(name[: -len("-cls")])
            assert base.pooling == "cls_mean" and p.pooling == "cls" and p.embed_dim * 2 == base.embed_dim
            assert (p.architecture, p.arch_kwargs, p.hf_repo, p.weight_format) == (
                base.architecture, base.arch_kwargs, base.hf_repo, base.weight_format)
