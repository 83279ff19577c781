"""The named presets: one data entry per published model, each number with its source.

Conventions (the whole table follows them; docs/presets.md shows it as one table):

- ``sources`` name where each value comes from: the model card or the upstream repository (at the
  commit given), eva's backbone registry and replication guide, TRIDENT's encoder loader, a paper.
  A value found only in a secondary source, or inferred, says so in ``notes``.
- ``num_params`` is the parameter count of the upstream configuration: the published figure where
  one is precise enough to check the architecture against (within 0.5 %); otherwise the count
  computed from the upstream configuration (config.json, the card's ``timm`` kwargs), as the
  tensors of the backbone (no classifier, pooler or mask token). The comment on each line says which.
- The transform is the model card's or the upstream repository's; where it publishes none, TRIDENT's
  or eva's. evalkit resizes the shorter side to ``resize_size`` (default ``input_size``) and centre-crops
  ``input_size``; a card that resizes without cropping gives the same input on square tiles.
- ``dynamic_img_size`` is on everywhere, as in eva and TRIDENT: the position embedding is resampled
  when the input grid differs from the grid the weights were trained with (DINOv2 models store 37 x 37).
- ``-cls`` entries are eva's configuration of a model whose card pools ``cls_mean``: eva's leaderboard
  probes the class token alone (its replication guide sets ``IN_FEATURES`` to the token width), so
  eva's registry names and leaderboard rows select the ``-cls`` entry, never the card's pooling.
"""

from __future__ import annotations

from dataclasses import replace

from evalkit.models.presets import PRESETS, Preset

# Where the numbers come from. eva and TRIDENT are pinned to the commits that were read.
EVA = "kaiko-ai/eva@73b61a7"
EVA_PATHOLOGY = f"{EVA} src/eva/vision/models/networks/backbones/pathology"
EVA_REPLICATE = f"{EVA} docs/user-guide/advanced/replicate_evaluations.md"
EVA_LEADERBOARD = f"{EVA} tools/data/leaderboards/pathology.csv (results/published/eva_leaderboard.csv)"
EVA_RESIZE = f"{EVA} src/eva/vision/data/transforms/common/resize_and_crop.py (Resize + CenterCrop, bilinear)"
TRIDENT = "mahmoodlab/TRIDENT@a91fa84 trident/patch_encoder_models/load.py"
KAIKO_SGD = "results/published/kaiko2024_eva_sgd.csv, kaiko2024_table8.csv (kaiko.ai et al., arXiv:2404.15217)"

HOPTIMUS_MEAN, HOPTIMUS_STD = (0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517)
HIBOU_MEAN, HIBOU_STD = (0.7068, 0.5755, 0.722), (0.195, 0.2316, 0.1816)
LUNIT_MEAN, LUNIT_STD = (0.70322989, 0.53606487, 0.66096631), (0.21716536, 0.26081574, 0.20723464)
HALF = (0.5, 0.5, 0.5)

# ---------------------------------------------------------------------------------------------
# Mahmood Lab
# ---------------------------------------------------------------------------------------------
PRESETS.add("uni", Preset(
    name="uni", architecture="vit_large_patch16_224",
    arch_kwargs={"img_size": 224, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True},
    embed_dim=1024, pooling="cls", patch_size=16,
    num_params=303_350_784,  # computed from the card's timm kwargs (ViT-L/16 at 224); paper: "ViT-L", ~0.3B
    interpolation="bilinear",
    hf_repo="MahmoodLab/UNI", weight_format="timm", gated=True,
    licence="CC-BY-NC-ND 4.0, non-commercial academic use; gated (registration on Hugging Face)",
    aliases=("pathology/mahmood_uni", "mahmood_uni"),
    sources=("mahmoodlab/UNI@42715ef README_old.md (timm kwargs; Resize(224), ImageNet mean/std; CLS output 1024)",
             "mahmoodlab/UNI@42715ef README.md (licence, gating)",
             f"{EVA_PATHOLOGY}/mahmood.py (pathology/mahmood_uni)",
             EVA_REPLICATE, KAIKO_SGD, EVA_LEADERBOARD),
    notes="Card: timm.create_model('hf-hub:MahmoodLab/uni', init_values=1e-5, dynamic_img_size=True); the card's "
          "transform resizes to 224 without a crop. The card spells the repository MahmoodLab/uni.",
))

PRESETS.add("uni2-h", Preset(
    name="uni2-h", architecture="vit_giant_patch14_224",
    arch_kwargs={"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5,
                 "embed_dim": 1536, "mlp_ratio": 2.66667 * 2, "no_embed_class": True, "mlp_layer": "swiglu_packed",
                 "act_layer": "silu", "reg_tokens": 8, "dynamic_img_size": True},
    embed_dim=1536, pooling="cls", patch_size=14, num_registers=8,
    num_params=681_000_000,  # model card: 681M (as quoted in the issue); computed from the kwargs: 681,394,176
    interpolation="bilinear",
    hf_repo="MahmoodLab/UNI2-h", weight_format="timm", gated=True,
    licence="CC-BY-NC-ND 4.0, non-commercial academic use; gated (registration on Hugging Face)",
    aliases=("pathology/mahmood_uni2_h", "mahmood_uni2_h"),
    sources=("mahmoodlab/UNI@42715ef README.md (timm_kwargs; Resize(224), CenterCrop(224), ImageNet mean/std; "
             "CLS output 1536; licence)", "huggingface.co/MahmoodLab/UNI2-h (681M)",
             f"{EVA_PATHOLOGY}/mahmood.py (pathology/mahmood_uni2_h: same kwargs)",
             TRIDENT + " (UNIv2InferenceEncoder)",
             EVA_LEADERBOARD),
    notes="Card: timm 'vit_giant_patch14_224' with the listed kwargs, weights pytorch_model.bin loaded strictly. "
          "no_embed_class: the position embedding covers the 256 patches only.",
))

# ---------------------------------------------------------------------------------------------
# Paige
# ---------------------------------------------------------------------------------------------
VIRCHOW2 = Preset(
    name="virchow2", architecture="vit_huge_patch14_224",
    arch_kwargs={"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375, "reg_tokens": 4,
                 "mlp_layer": "swiglu_packed", "act_layer": "silu", "dynamic_img_size": True},
    embed_dim=2560, pooling="cls_mean", patch_size=14, num_registers=4,
    num_params=632_000_000,  # Virchow2 paper abstract (arXiv:2408.00738): "632 million parameter"; computed 631,239,424
    interpolation="bicubic",
    hf_repo="paige-ai/Virchow2", weight_format="timm", gated=True,
    licence="CC-BY-NC-ND 4.0 (per secondary sources; card not read here); gated",
    sources=("huggingface.co/paige-ai/Virchow2 (usage: SwiGLUPacked + SiLU; class token concatenated with the mean "
             "of tokens 5: -> 2560; transform from the repo's pretrained_cfg: 224, bicubic, crop_pct 1.0, ImageNet)",
             "arXiv:2408.00738 (632M)", TRIDENT + " (Virchow2InferenceEncoder: kwargs, cls+mean over output[:, 5:])",
             f"{EVA_PATHOLOGY}/paige.py"),
    notes="Card's usage code, as reproduced in TRIDENT and in third-party copies of config.json (model_args: "
          "img_size 224, init_values 1e-5, reg_tokens 4, mlp_ratio 5.3375; pretrained_cfg: bicubic, crop_pct 1.0). "
          "Registers are tokens 1-4 and are left out of the mean. eva's leaderboard used the class token only: "
          "see virchow2-cls.",
)
PRESETS.add("virchow2", VIRCHOW2)
PRESETS.add("virchow2-cls", replace(
    VIRCHOW2, name="virchow2-cls", pooling="cls", embed_dim=1280,
    aliases=("pathology/paige_virchow2", "paige_virchow2"),
    sources=(*VIRCHOW2.sources, f"{EVA_PATHOLOGY}/paige.py (ExtractCLSFeatures, include_patch_tokens=False)",
             EVA_REPLICATE + " (IN_FEATURES=1280)", EVA_LEADERBOARD),
    notes="eva's configuration of Virchow2 (pathology/paige_virchow2): the class token alone, 1280. eva resizes "
          "with bilinear interpolation (ResizeAndCrop); this entry keeps the card's bicubic.",
))

PRESETS.add("virchow", Preset(
    name="virchow", architecture="vit_huge_patch14_224",
    arch_kwargs={"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375, "mlp_layer": "swiglu_packed",
                 "act_layer": "silu", "dynamic_img_size": True},
    embed_dim=2560, pooling="cls_mean", patch_size=14,
    # Virchow paper (Vorontsov et al., Nat. Med. 2024) and arXiv:2408.00738: 632M; computed 631,229,184
    num_params=632_000_000,
    interpolation="bicubic",
    hf_repo="paige-ai/Virchow", weight_format="timm", gated=True,
    licence="Apache 2.0 (per secondary sources; card not read here); gated",
    sources=("huggingface.co/paige-ai/Virchow (usage: SwiGLUPacked + SiLU; class token concatenated with the mean "
             "patch token -> 2560)", TRIDENT + " (VirchowInferenceEncoder: kwargs; Resize(224, bicubic), ImageNet; "
             "cls+mean over output[:, 1:])", "arXiv:2408.00738 (Virchow: 632M)"),
    notes="ViT-H/14 without registers (TRIDENT's local build passes no reg_tokens and loads strictly). Transform as "
          "TRIDENT reproduces the card: resize to 224, bicubic, ImageNet statistics.",
))

# ---------------------------------------------------------------------------------------------
# Bioptimus
# ---------------------------------------------------------------------------------------------
H_OPTIMUS_0 = Preset(
    name="h-optimus-0", architecture="vit_giant_patch14_reg4_dinov2",
    arch_kwargs={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": True},
    embed_dim=1536, pooling="cls", patch_size=14, num_registers=4,
    # computed from config.json (timm vit_giant_patch14_reg4_dinov2 at 224); card: 1.1B (rounded)
    num_params=1_134_774_272,
    mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD, interpolation="bilinear",
    hf_repo="bioptimus/H-optimus-0", weight_format="timm", gated=True,
    licence="Apache 2.0 (config.json); gated, access granted on request (per a secondary source)",
    aliases=("pathology/bioptimus_h_optimus_0", "bioptimus_h_optimus_0"),
    sources=("huggingface.co/bioptimus/H-optimus-0 config.json (architecture, num_features 1536, input 224, "
             "mean/std, licence)", "bioptimus/releases@218eb7e models/h-optimus/v0/README.md (g/14, 4 registers, "
             "40 blocks, 24 heads, width 1536)", f"{EVA_PATHOLOGY}/bioptimus.py (init_values=1e-5)",
             TRIDENT + " (HOptimus0InferenceEncoder: Resize(224), bilinear)", EVA_REPLICATE, EVA_LEADERBOARD),
    notes="The card feeds 224 px tiles with ToTensor + Normalize and no resize; for other tile sizes this entry "
          "resizes with bilinear interpolation as TRIDENT and eva do. Output: the class token (global_pool token).",
)
PRESETS.add("h-optimus-0", H_OPTIMUS_0)
PRESETS.add("h-optimus-1", replace(
    H_OPTIMUS_0, name="h-optimus-1", hf_repo="bioptimus/H-optimus-1", aliases=(),
    licence="not verified here (see the model card); gated",
    sources=(TRIDENT + " (HOptimus1InferenceEncoder: same architecture, kwargs, transform and mean/std as "
             "H-optimus-0)", "bioptimus/releases@218eb7e models/h-optimus/v0/README.md (the g/14 reg4 architecture)"),
    notes="Same architecture and preprocessing as H-optimus-0 (TRIDENT builds both from one kwargs set and loads "
          "them strictly); num_params computed as for H-optimus-0. Not in eva's registry at 73b61a7.",
))

H0_MINI = Preset(
    name="h0-mini", architecture="vit_base_patch14_reg4_dinov2",
    arch_kwargs={"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.33334, "mlp_layer": "swiglu_packed",
                 "act_layer": "silu", "dynamic_img_size": True},
    embed_dim=1536, pooling="cls_mean", patch_size=14, num_registers=4,
    num_params=85_739_520,  # computed with the inferred SwiGLU width 2 x 2048 (see notes); H0-mini paper: ViT-B, ~86M
    mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD, interpolation="bicubic",
    hf_repo="bioptimus/H0-mini", weight_format="timm", gated=True,
    licence="not verified here (see the model card); gated, access reviewed manually (per a secondary source)",
    sources=("huggingface.co/bioptimus/H0-mini (usage: SwiGLUPacked + SiLU; output 1 x 261 x 768; class token "
             "concatenated with the mean of tokens num_prefix_tokens: -> 1536)", f"{EVA_PATHOLOGY}/bioptimus.py "
             "(pathology/bioptimus_h0_mini: SwiGLUPacked, SiLU)", TRIDENT + " (H0MiniInferenceEncoder)"),
    notes="261 tokens = 1 class + 4 registers + 256 patches (card). Not read here: the repository's config.json; "
          "mlp_ratio 5.33334 (SwiGLU hidden 2 x 2048, DINOv2's rule for ViT-B) is inferred from the ~86M "
          "reported for a ViT-B (mlp_ratio 4 would give ~71M); mean/std (H-optimus-0's) and the bicubic resize "
          "come from third-party copies of its pretrained_cfg. A wrong guess fails the strict weight load.",
)
PRESETS.add("h0-mini", H0_MINI)
PRESETS.add("h0-mini-cls", replace(
    H0_MINI, name="h0-mini-cls", pooling="cls", embed_dim=768,
    aliases=("pathology/bioptimus_h0_mini",),
    sources=(*H0_MINI.sources, f"{EVA_PATHOLOGY}/bioptimus.py (ExtractCLSFeatures, include_patch_tokens=False)"),
    notes="eva's and TRIDENT's default for H0-mini: the class token alone (768). " + H0_MINI.notes,
))

# ---------------------------------------------------------------------------------------------
# Microsoft / Providence
# ---------------------------------------------------------------------------------------------
PRESETS.add("prov-gigapath", Preset(
    name="prov-gigapath", architecture="vit_giant_patch14_dinov2",
    arch_kwargs={"img_size": 224, "patch_size": 16, "embed_dim": 1536, "depth": 40, "num_heads": 24,
                 "init_values": 1e-5, "mlp_ratio": 5.33334, "mlp_layer": "swiglu_packed", "act_layer": "silu",
                 "dynamic_img_size": True},
    embed_dim=1536, pooling="cls", patch_size=16,
    num_params=1_134_953_984,  # computed from the tile encoder's timm kwargs; paper: tile encoder ViT-g, ~1.1B
    resize_size=256, interpolation="bicubic",
    hf_repo="prov-gigapath/prov-gigapath", weight_format="timm", gated=True,
    licence="Apache 2.0 (GitHub repository); weights gated on Hugging Face; research use only",
    aliases=("pathology/prov_gigapath", "prov_gigapath"),
    sources=("prov-gigapath/prov-gigapath@09d8e87 README.md (tile encoder via timm; Resize(256, bicubic), "
             "CenterCrop(224), ImageNet; licence)", TRIDENT + " (GigaPathInferenceEncoder: local-build kwargs)",
             f"{EVA_PATHOLOGY}/gigapath.py", EVA_REPLICATE, EVA_LEADERBOARD),
    notes="Tile encoder only. timm's 'vit_giant_patch14_dinov2' brings SwiGLUPacked + SiLU; patch size 16, not 14. "
          "eva evaluates it with Resize(224) + CenterCrop(224), not the card's 256 -> 224.",
))

# ---------------------------------------------------------------------------------------------
# Owkin
# ---------------------------------------------------------------------------------------------
PRESETS.add("phikon", Preset(
    name="phikon", architecture="vit_base_patch16_224",
    arch_kwargs={"norm_layer": "layernorm_eps1e-12", "dynamic_img_size": True},
    embed_dim=768, pooling="cls", patch_size=16,
    num_params=85_798_656,  # computed from config.json (ViT-B/16 at 224, no pooler)
    interpolation="bilinear",
    hf_repo="owkin/phikon", weight_format="hf_vit",
    licence="Owkin non-commercial licence (non-profit entities); not gated",
    aliases=("pathology/owkin_phikon", "owkin_phikon"),
    sources=("huggingface.co/owkin/phikon config.json (ViTModel, hidden 768, 12 layers, patch 16, image 224, "
             "layer_norm_eps 1e-12)", "owkin/HistoSSLscaling@73f1d19 (LICENSE.txt; ImageNet mean/std, CLS feature)",
             TRIDENT + " (PhikonInferenceEncoder: ViTModel, add_pooling_layer=False, last_hidden_state[:, 0]; "
             "Resize(224), bilinear)", f"{EVA_PATHOLOGY}/owkin.py", EVA_REPLICATE, KAIKO_SGD, EVA_LEADERBOARD),
    notes="transformers ViTModel; its layer norms use eps 1e-12 (the original iBOT code used 1e-6). The pooler "
          "of ViTModel is not used.",
))

PRESETS.add("phikon-v2", Preset(
    name="phikon-v2", architecture="vit_large_patch16_224",
    arch_kwargs={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": True},
    embed_dim=1024, pooling="cls", patch_size=16,
    num_params=303_350_784,  # computed for a ViT-L/16 Dinov2Model at 224 (no registers, no mask token); paper: ViT-L
    interpolation="bilinear",
    hf_repo="owkin/phikon-v2", weight_format="hf_dinov2",
    licence="Owkin non-commercial licence (per secondary sources); not gated",
    aliases=("pathology/owkin_phikon_v2", "owkin_phikon_v2"),
    sources=(TRIDENT + " (Phikonv2InferenceEncoder: AutoModel, last_hidden_state[:, 0]; Resize(224), "
             "CenterCrop(224), ImageNet)", f"{EVA_PATHOLOGY}/owkin.py", EVA_REPLICATE + " (ViT-L16, IN_FEATURES=1024)",
             "arXiv:2409.09173 (DINOv2 ViT-L/16)", EVA_LEADERBOARD),
    notes="transformers Dinov2Model (layer scale, no registers). Not read here: config.json; image_size 224 (a "
          "14 x 14 + 1 position table) is assumed, a different table fails the strict weight load.",
))

# ---------------------------------------------------------------------------------------------
# HistAI (remote code upstream; mapped to timm's DINOv2-with-registers ViT)
# ---------------------------------------------------------------------------------------------
HIBOU_B = Preset(
    name="hibou-b", architecture="vit_base_patch14_reg4_dinov2",
    arch_kwargs={"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.33334, "mlp_layer": "swiglu_packed",
                 "act_layer": "silu", "dynamic_img_size": True},
    embed_dim=768, pooling="cls", patch_size=14, num_registers=4,
    # computed from config.json (Dinov2 with 4 registers, SwiGLU FFN, image 224); the timm build has 768 fewer:
    # it folds the class token's position embedding into the class token
    num_params=85_740_288,
    mean=HIBOU_MEAN, std=HIBOU_STD, interpolation="bicubic",
    hf_repo="histai/hibou-b", weight_format="hf_dinov2",
    licence="Apache 2.0; not gated",
    aliases=("pathology/histai_hibou_b",),
    sources=("huggingface.co/histai/hibou-b config.json (Dinov2ModelWithRegisters via auto_map: hidden 768, 12 "
             "layers, patch 14, image 224, 4 registers, use_swiglu_ffn)", "HistAI/hibou@c453bbe README.md "
             "(trust_remote_code; licence) and hibou/models/__init__.py (layerscale, swiglufused, 4 registers)",
             f"{EVA_PATHOLOGY}/histai.py", EVA_REPLICATE + " (mean/std)", TRIDENT + " (Resize(224), bicubic; "
             "pooler_output = normed class token)"),
    notes="Upstream loads it with trust_remote_code (a Dinov2Model with registers). evalkit builds timm's "
          "DINOv2-with-registers ViT instead and never runs that code: SwiGLU width 2 x 2048 (DINOv2's rule) is "
          "mlp_ratio 5.33334 packed. The hf_dinov2 mapping must also move embeddings.register_tokens to reg_token "
          "and fold the class position embedding into the class token (timm's _convert_dinov2 does the same).",
)
PRESETS.add("hibou-b", HIBOU_B)
PRESETS.add("hibou-l", replace(
    HIBOU_B, name="hibou-l", architecture="vit_large_patch14_reg4_dinov2",
    arch_kwargs={"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.34375, "mlp_layer": "swiglu_packed",
                 "act_layer": "silu", "dynamic_img_size": True},
    embed_dim=1024,
    # computed for the assumed config (Hibou-B's, at ViT-L/14 width); a secondary source says 307M
    num_params=303_658_240,
    hf_repo="histai/hibou-L", gated=True, licence="Apache 2.0; gated (per a secondary source)",
    aliases=("pathology/histai_hibou_l", "histai_hibou_l"),
    sources=("HistAI/hibou@c453bbe README.md (Hibou-L: Apache 2.0, trust_remote_code)", f"{EVA_PATHOLOGY}/histai.py",
             EVA_REPLICATE + " (mean/std, IN_FEATURES=1024)", TRIDENT + " (HibouLInferenceEncoder: Resize(224), "
             "bicubic, hibou mean/std, pooler_output)", EVA_LEADERBOARD),
    notes="Not read here: hibou-L's config.json. Assumed to be Hibou-B's at ViT-L/14 (1024 wide, 24 layers, "
          "4 registers, image 224, SwiGLU FFN: hidden 2 x 2736 = mlp_ratio 5.34375 packed). A wrong guess fails "
          "the strict weight load. Mapping as hibou-b (registers, class position folded).",
))

# ---------------------------------------------------------------------------------------------
# Lunit (DINO ViT-S, TCGA), timm-keyed copies on Hugging Face
# ---------------------------------------------------------------------------------------------
LUNIT_VITS8 = Preset(
    name="lunit-vits8", architecture="vit_small_patch8_224", arch_kwargs={"dynamic_img_size": True},
    embed_dim=384, pooling="cls", patch_size=8,
    num_params=21_670_272,  # computed (timm ViT-S/8 at 224)
    mean=LUNIT_MEAN, std=LUNIT_STD, interpolation="bilinear",
    hf_repo="1aurent/vit_small_patch8_224.lunit_dino", weight_format="timm",
    licence="Lunit non-commercial licence; not gated",
    aliases=("pathology/lunit_vits8",),
    sources=(f"{EVA_PATHOLOGY}/lunit.py (vit_small_patch8_224.dino; mean/std used in training; "
             "lunit-io/benchmark-ssl-pathology release dino_vit_small_patch8_ep200.torch)", EVA_REPLICATE,
             "huggingface.co/1aurent/vit_small_patch8_224.lunit_dino (timm safetensors; licence lunit-non-commercial)",
             TRIDENT + " (LunitS8InferenceEncoder)", EVA_RESIZE),
    notes="Lunit publishes the weights as a GitHub release; the Hugging Face repository is a third-party timm "
          "conversion (used by TRIDENT). Transform: eva's ResizeAndCrop(224) with Lunit's statistics.",
)
PRESETS.add("lunit-vits8", LUNIT_VITS8)
PRESETS.add("lunit-vits16", replace(
    LUNIT_VITS8, name="lunit-vits16", architecture="vit_small_patch16_224", patch_size=16,
    num_params=21_665_664,  # computed (timm ViT-S/16 at 224)
    hf_repo="1aurent/vit_small_patch16_224.lunit_dino",
    aliases=("pathology/lunit_vits16", "lunit_vits16"),
    sources=(f"{EVA_PATHOLOGY}/lunit.py (pathology/lunit_vits16: vit_small_patch16_224.dino, "
             "dino_vit_small_patch16_ep200.torch; mean/std)", EVA_REPLICATE,
             "huggingface.co/1aurent/vit_small_patch16_224.lunit_dino (timm safetensors)", EVA_RESIZE, KAIKO_SGD,
             EVA_LEADERBOARD),
))

# ---------------------------------------------------------------------------------------------
# kaiko.ai: "Towards large-scale training of pathology FMs" (torch.hub, timm architectures)
# ---------------------------------------------------------------------------------------------
KAIKO_HUB = "kaiko-ai/towards_large_pathology_fms@bfcde17"


def _kaiko(name: str, hub: str, architecture: str, patch: int, width: int, num_params: int, **extra) -> Preset:
    """One of the five models of kaiko.ai's torch.hub release (hubconf.py builds each with timm)."""
    return Preset(
        name=name, architecture=architecture, arch_kwargs={"dynamic_img_size": True},
        embed_dim=width, pooling="cls", patch_size=patch, num_params=num_params,
        mean=HALF, std=HALF, interpolation="bilinear",
        hf_repo=None, weight_format="timm", weight_files=(f"{hub}.pth", "model.safetensors"),
        licence="Kaiko Non-Commercial Public License v1; not gated",
        aliases=(f"pathology/kaiko_{hub}", f"kaiko_{hub}"),
        sources=(f"{KAIKO_HUB} hubconf.py ({hub}: timm '{architecture}', release 0.0.1 {hub}.pth)",
                 f"{KAIKO_HUB} README.md (Resize(224), CenterCrop(224), mean/std 0.5; LICENSE)",
                 f"{EVA_PATHOLOGY}/kaiko.py", EVA_REPLICATE, KAIKO_SGD, EVA_LEADERBOARD),
        notes=f"Official weights: GitHub release {hub}.pth (timm.create_model with pretrained_cfg url); TRIDENT "
              f"reads a third-party timm copy, 1aurent/<architecture>.kaiko_ai_towards_large_pathology_fms.",
        **extra,
    )


PRESETS.add("kaiko-vits16", _kaiko("kaiko-vits16", "vits16", "vit_small_patch16_224", 16, 384, 21_665_664))  # computed
PRESETS.add("kaiko-vits8", _kaiko("kaiko-vits8", "vits8", "vit_small_patch8_224", 8, 384, 21_670_272))  # computed
PRESETS.add("kaiko-vitb16", _kaiko("kaiko-vitb16", "vitb16", "vit_base_patch16_224", 16, 768, 85_798_656))  # computed
PRESETS.add("kaiko-vitb8", _kaiko("kaiko-vitb8", "vitb8", "vit_base_patch8_224", 8, 768, 85_807_872))  # computed
_KAIKO_L14 = _kaiko("kaiko-vitl14", "vitl14", "vit_large_patch14_reg4_dinov2", 14, 1024, 304_370_688,  # computed at 518
                    num_registers=4)
PRESETS.add("kaiko-vitl14", replace(_KAIKO_L14, notes=_KAIKO_L14.notes + (
    " DINOv2 ViT-L/14 with 4 registers, position table 37 x 37 (img_size 518, as TRIDENT builds it). The release "
    "file may hold DINOv2-native keys (register_tokens, w12/w3) that timm converts on load (_convert_dinov2); "
    "a strict load of the raw .pth needs that conversion.")))

MIDNIGHT = Preset(
    name="midnight-12k", architecture="vit_giant_patch14_dinov2",
    arch_kwargs={"img_size": 518, "init_values": 1e-5, "mlp_layer": "swiglu_packed", "act_layer": "silu",
                 "dynamic_img_size": True},
    embed_dim=3072, pooling="cls_mean", patch_size=14,
    # computed: DINOv2 ViT-g/14 (SwiGLU 2 x 4096) with a 37 x 37 position table; paper: ViT-g/14
    num_params=1_136_479_232,
    mean=HALF, std=HALF, interpolation="bilinear",
    hf_repo="kaiko-ai/midnight", weight_format="hf_dinov2",
    licence="MIT; not gated",
    sources=("kaiko-ai/Midnight@e48dce1 README.md (AutoModel; Resize(224), CenterCrop(224), mean/std 0.5; "
             "classification embedding = class token concatenated with the mean patch token; MIT)",
             "huggingface.co/kaiko-ai/midnight (card: base_model facebook/dinov2-giant, MIT)",
             TRIDENT + " (Midnight12kInferenceEncoder)", "arXiv:2504.05186"),
    notes="transformers Dinov2Model (no registers). Not read here: config.json; the ViT-g/14 of its base model "
          "facebook/dinov2-giant (SwiGLU FFN, image_size 518) is assumed. HF Dinov2 interpolates the 37 x 37 "
          "position table on every forward, timm resamples it (bicubic, antialiased): close, not bit-identical. "
          "eva's leaderboard used the class token only: see midnight-12k-cls.",
)
PRESETS.add("midnight-12k", MIDNIGHT)
PRESETS.add("midnight-12k-cls", replace(
    MIDNIGHT, name="midnight-12k-cls", pooling="cls", embed_dim=1536,
    aliases=("pathology/kaiko_midnight_12k", "kaiko_midnight_12k"),
    sources=(*MIDNIGHT.sources, f"{EVA_PATHOLOGY}/kaiko.py (pathology/kaiko_midnight_12k: ExtractCLSFeatures)",
             EVA_REPLICATE + " (IN_FEATURES=1536)", EVA_LEADERBOARD),
    notes="eva's configuration of Midnight-12k (pathology/kaiko_midnight_12k): the class token alone, 1536; "
          "TRIDENT's default too. Architecture and weights as midnight-12k.",
))

# ---------------------------------------------------------------------------------------------
# ImageNet / LVD-142M baselines (DINO, DINOv2), timm-keyed weights on the timm Hugging Face hub
# ---------------------------------------------------------------------------------------------
DINO_SOURCES = ("facebookresearch/dino@7c446df eval_linear.py (Resize(256, bicubic), CenterCrop(224), ImageNet); "
                "README.md (params 21M / 85M; Apache 2.0 LICENSE)",)


def _dino(name: str, architecture: str, patch: int, width: int, num_params: int, aliases=(), published=(),
          **extra) -> Preset:
    """A DINO (ImageNet-1k, self-supervised) ViT with its own repository's evaluation transform."""
    return Preset(
        name=name, architecture=architecture, arch_kwargs={"dynamic_img_size": True},
        embed_dim=width, pooling="cls", patch_size=patch, num_params=num_params,
        resize_size=256, interpolation="bicubic",
        hf_repo=f"timm/{architecture}.dino", weight_format="timm",
        licence="Apache 2.0; not gated", aliases=aliases,
        sources=(*DINO_SOURCES, f"timm {architecture}.dino (pretrained_cfg)", *published),
        notes="The kaiko paper and eva evaluated DINO baselines with eva's ResizeAndCrop(224, bilinear), not "
              "DINO's 256 -> 224 bicubic used here.",
        **extra,
    )


# Parameter counts computed (timm's ViT at 224); DINO's README rounds them to 21M and 85M.
PRESETS.add("dino-vits16", _dino("dino-vits16", "vit_small_patch16_224", 16, 384, 21_665_664,
                                 aliases=("universal/vit_small_patch16_224_dino", "vit_small_patch16_224-dino"),
                                 published=(EVA_REPLICATE, KAIKO_SGD)))
PRESETS.add("dino-vitb16", _dino("dino-vitb16", "vit_base_patch16_224", 16, 768, 85_798_656))
PRESETS.add("dino-vitb8", _dino("dino-vitb8", "vit_base_patch8_224", 8, 768, 85_807_872,
                                aliases=("dino_vitb8_imagenet",),
                                published=("kaiko-ai/eva@3171bba docs/user-guide/advanced/replicate_evaluations.md "
                                           "(DINO_BACKBONE=dino_vitb8)", KAIKO_SGD)))


def _dinov2(name: str, architecture: str, width: int, num_params: int, aliases=(), **extra) -> Preset:
    """A DINOv2 ViT (LVD-142M) with DINOv2's own linear-evaluation transform, position table 37 x 37."""
    return Preset(
        name=name, architecture=architecture, arch_kwargs={"dynamic_img_size": True},
        embed_dim=width, pooling="cls", patch_size=14, num_params=num_params,
        resize_size=256, interpolation="bicubic",
        hf_repo=f"timm/{architecture}.lvd142m", weight_format="timm",
        licence="Apache 2.0; not gated", aliases=aliases,
        sources=("facebookresearch/dinov2@b8931f7 dinov2/data/transforms.py (make_classification_eval_transform: "
                 "Resize(256, bicubic), CenterCrop(224), ImageNet); README.md (params 21M / 86M / 300M / 1,100M); "
                 "LICENSE (Apache 2.0)", f"timm {architecture}.lvd142m (img_size 518)"),
        notes="Trained on LVD-142M (not ImageNet); the timm weights store a 37 x 37 position table (img_size 518), "
              "resampled to the 16 x 16 grid of a 224 input.",
        **extra,
    )


# Parameter counts computed at img_size 518 (the stored 37 x 37 position table); DINOv2's README rounds them to
# 21M, 86M, 300M and 1,100M, too coarse to check an architecture against.
PRESETS.add("dinov2-vits14", _dinov2("dinov2-vits14", "vit_small_patch14_dinov2", 384, 22_056_192))
PRESETS.add("dinov2-vitb14", _dinov2("dinov2-vitb14", "vit_base_patch14_dinov2", 768, 86_579_712))
PRESETS.add("dinov2-vitl14", _dinov2("dinov2-vitl14", "vit_large_patch14_dinov2", 1024, 304_367_616))
PRESETS.add("dinov2-vitg14", _dinov2("dinov2-vitg14", "vit_giant_patch14_dinov2", 1536, 1_136_479_232))
_DINOV2_L14_REG = _dinov2("dinov2-vitl14-reg", "vit_large_patch14_reg4_dinov2", 1024, 304_370_688,
                          aliases=("dinov2_vitl14_imagenet",), num_registers=4)
PRESETS.add("dinov2-vitl14-reg", replace(
    _DINOV2_L14_REG, sources=(*_DINOV2_L14_REG.sources, "kaiko-ai/eva@3171bba docs/user-guide/advanced/"
                                                        "replicate_evaluations.md (DINO_BACKBONE=dinov2_vitl14_reg)",
                              KAIKO_SGD),
    notes=_DINOV2_L14_REG.notes + " The 'DINOv2 ViT-L14, ImageNet' row of eva's 2024 table "
          "(dinov2_vitl14_imagenet in results/published) was computed with this model, with registers, and eva's "
          "ResizeAndCrop(224, bilinear).",
))
