# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.evalkit-installed

.PHONY: demo test test-all install clean results results-segmentation results-pretrain results-regress results-baseline pretrained-checkpoint

# Create the venv when missing: torch first (the pinned local build), then evalkit and its test extras.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -m pip install --quiet -e ".[test]" 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -c "import evalkit, torch, timm, lightning, h5py"
	touch $(STAMP)

install: $(STAMP)

# Four backbones on 993 real PatchCamelyon tiles (data/pcam_demo; val selects, test reports): random
# ViT-S/16, ResNet-50 and ResNet-18, and the shipped ResNet-18 after 20 epochs of LeJEPA on the PCam tiles
# (`make pretrained-checkpoint` regenerates it); then the report:
# tables with CIs and paired tests, plots.
DEMO_MODELS := --config configs/models/vit_small_patch16_224_random.yaml --config configs/models/resnet50_random.yaml \
	--config configs/models/resnet18_random_96.yaml --config configs/models/lejepa_resnet18_pcam.yaml
demo: $(STAMP)
	$(BIN)/evalkit predict_fit --config configs/tasks/pcam_demo.yaml $(DEMO_MODELS)
	$(BIN)/evalkit report results/runs --output_dir results/demo --html

# The project's own result tables under results/ (results/README.md); each target regenerates one.
results: demo results-regress results-segmentation results-pretrain

# Regression checks of the demo's ViT-S run (after `make demo`) against the accepted baseline in
# results/baselines/pcam_demo: the same fit passes, a degraded one (2 SGD steps) must fail.
REGRESS := $(BIN)/evalkit regress --baseline results/baselines/pcam_demo
REGRESS_FIT := $(BIN)/evalkit fit --config configs/tasks/pcam_demo.yaml --config configs/models/vit_small_patch16_224_random.yaml
# The accepted baseline itself (after `make demo`): the same fit, copied with its config.yaml and predictions.h5.
# Rerun it when the shipped model config changes on purpose (tests/report/test_shipped_baseline.py says when).
results-baseline: $(STAMP)
	rm -rf runs/baseline results/baselines/pcam_demo && mkdir -p results/baselines/pcam_demo
	$(REGRESS_FIT) --results_root runs/baseline
	cp runs/baseline/pcam_demo/*/*/results.json runs/baseline/pcam_demo/*/*/config.yaml \
	    runs/baseline/pcam_demo/*/*/predictions.h5 results/baselines/pcam_demo/

results-regress: $(STAMP)
	rm -rf runs/regress && mkdir -p results/regress
	$(REGRESS_FIT) --results_root runs/regress/unchanged
	$(REGRESS_FIT) --results_root runs/regress/degraded --head.max_steps 2
	$(REGRESS) runs/regress/unchanged | tee results/regress/unchanged.md
	! $(REGRESS) runs/regress/degraded 2>&1 | tee results/regress/degraded.md

# Mask2Former decoder on a frozen random ViT-Ti, on a CoNSeP-layout set of real tiles with painted nuclei
# (report.html embeds the run's overlays and training curve).
SEGFX := runs/segmentation_fixture
results-segmentation: $(STAMP)
	rm -rf $(SEGFX)
	PYTHONPATH=tests $(BIN)/python -c "from pathlib import Path; from segmentation.consep_fixture import build_learnable_consep; build_learnable_consep(Path('$(SEGFX)/data'))"
	$(BIN)/evalkit predict_fit --config configs/tasks/consep.yaml --config configs/models/vit_tiny_patch16_224_random.yaml \
	    --task.dataset.init_args.allow_subset true --data_root $(SEGFX)/data --embeddings_root $(SEGFX)/embeddings \
	    --results_root $(SEGFX)/results --seg.n_runs 2 --seg.max_steps 150 --seg.crops_per_image 16 --seg.batch_size 8
	rm -rf results/segmentation_fixture
	$(BIN)/evalkit report $(SEGFX)/results --metric dice --output_dir results/segmentation_fixture --html

# The pretrained model of the demo: LeJEPA ResNet-18 on the PCam demo's 600 training tiles and patches
# of the two shipped slides (20 epochs; 8.4 min on 2 quiet CPU cores, see docs/pretraining.md), exported
# (backbone only, float16) to data/models/lejepa_resnet18_pcam.ckpt.
PRETRAIN_CFG := configs/pretrain/lejepa_resnet18_pcam.yaml
LEJEPA_RUN := runs/pretrain/lejepa_resnet18_pcam
SIMCLR_RUN := runs/pretrain/simclr_resnet18_pcam
PRETRAIN_OUT := results/pretrain/resnet18_pcam
SWEPT := $(LEJEPA_RUN)/sweep/results/pcam_demo
pretrained-checkpoint: $(STAMP)
	rm -rf $(LEJEPA_RUN)
	$(BIN)/evalkit pretrain --config $(PRETRAIN_CFG)
	$(BIN)/python -m evalkit.pretrain.export $(LEJEPA_RUN)/checkpoints/last.ckpt data/models/lejepa_resnet18_pcam.ckpt

# The evidence that pretraining learns (after `make pretrained-checkpoint`): the checkpoint sweep on the
# PCam demo task (random init first), SimCLR with the same data, views, network and schedule, and the
# two last checkpoints against their random init in one report with paired tests.
results-pretrain: $(STAMP)
	rm -rf $(SIMCLR_RUN) $(LEJEPA_RUN)/sweep
	$(BIN)/evalkit pretrain --config $(PRETRAIN_CFG) --objective SimCLRLoss --trainer.output_dir $(SIMCLR_RUN)
	$(BIN)/evalkit sweep $(LEJEPA_RUN) --task configs/tasks/pcam_demo.yaml --input_size 96
	$(BIN)/evalkit sweep $(SIMCLR_RUN) --task configs/tasks/pcam_demo.yaml --input_size 96
	rm -rf $(PRETRAIN_OUT) && mkdir -p $(PRETRAIN_OUT)/lejepa $(PRETRAIN_OUT)/simclr
	cp $(LEJEPA_RUN)/loss_curve.png $(LEJEPA_RUN)/metrics.csv $(LEJEPA_RUN)/sweep.md $(LEJEPA_RUN)/sweep.csv $(PRETRAIN_OUT)/lejepa/
	cp $(SIMCLR_RUN)/loss_curve.png $(SIMCLR_RUN)/metrics.csv $(SIMCLR_RUN)/sweep.md $(SIMCLR_RUN)/sweep.csv $(PRETRAIN_OUT)/simclr/
	$(BIN)/evalkit report $(SWEPT)/lejepa-lejepa_resnet18_pcam-init $(SWEPT)/lejepa-lejepa_resnet18_pcam-epoch019 \
	    $(SIMCLR_RUN)/sweep/results/pcam_demo/lejepa-simclr_resnet18_pcam-epoch019 --output_dir $(PRETRAIN_OUT)/lejepa_vs_simclr

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Also the long runs that CI skips.
test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

clean:
	rm -rf data/embeddings results/runs runs/regress runs/baseline runs/segmentation_fixture
