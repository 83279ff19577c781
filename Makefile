# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.evalkit-installed

.PHONY: demo test test-all install clean results results-segmentation results-pretrain results-regress results-baseline

# Create the venv when missing: torch first (the pinned local build), then evalkit and its test extras.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -m pip install --quiet -e ".[test]" 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -c "import evalkit, torch, timm, lightning, h5py"
	touch $(STAMP)

install: $(STAMP)

# Two random-init backbones on two small real tile sets (data/crc_demo, data/kather16_demo), with
# label-efficiency curves; then one report over both tasks: tables with CIs and significance, plots.
DEMO_MODELS := --config configs/models/vit_small_patch16_224_random.yaml --config configs/models/resnet50_random.yaml
demo: $(STAMP)
	$(BIN)/evalkit predict_fit --config configs/tasks/crc_demo.yaml --config configs/fewshot/demo.yaml $(DEMO_MODELS)
	$(BIN)/evalkit predict_fit --config configs/tasks/kather16_demo.yaml --config configs/fewshot/demo.yaml $(DEMO_MODELS)
	$(BIN)/evalkit report results/runs --output_dir results/demo --html

# The project's own result tables under results/ (results/README.md); each target regenerates one.
results: demo results-regress results-segmentation results-pretrain

# Regression checks of the demo's ViT-S run (after `make demo`) against the accepted baseline in
# results/baselines/crc_demo: the same fit passes, a degraded one (2 SGD steps) must fail.
REGRESS := $(BIN)/evalkit regress --baseline results/baselines/crc_demo
REGRESS_FIT := $(BIN)/evalkit fit --config configs/tasks/crc_demo.yaml --config configs/models/vit_small_patch16_224_random.yaml
# The accepted baseline itself (after `make demo`): the same fit, copied with its config.yaml and predictions.h5.
# Rerun it when the shipped model config changes on purpose (tests/report/test_shipped_baseline.py says when).
results-baseline: $(STAMP)
	rm -rf runs/baseline results/baselines/crc_demo && mkdir -p results/baselines/crc_demo
	$(REGRESS_FIT) --results_root runs/baseline
	cp runs/baseline/crc_demo/*/*/results.json runs/baseline/crc_demo/*/*/config.yaml \
	    runs/baseline/crc_demo/*/*/predictions.h5 results/baselines/crc_demo/

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

# LeJEPA ResNet-18 on the shipped tiles and slides (about 6 min), its checkpoint sweep, and a probe
# of the last checkpoint against the same architecture with random weights on both demo tasks.
PRETRAIN_RUN := runs/pretrain/lejepa_resnet18_cpu
PRETRAIN_OUT := results/pretrain/lejepa_resnet18_cpu
PROBE_MODELS := --config configs/models/lejepa_resnet18_cpu.yaml --config configs/models/resnet18_random_112.yaml
results-pretrain: $(STAMP)
	rm -rf $(PRETRAIN_RUN)
	$(BIN)/evalkit pretrain --config configs/pretrain/lejepa_resnet18_cpu.yaml
	$(BIN)/evalkit sweep $(PRETRAIN_RUN) --task configs/tasks/crc_demo.yaml --input_size 112
	$(BIN)/evalkit predict_fit --config configs/tasks/crc_demo.yaml $(PROBE_MODELS) --results_root $(PRETRAIN_RUN)/probe
	$(BIN)/evalkit predict_fit --config configs/tasks/kather16_demo.yaml $(PROBE_MODELS) --results_root $(PRETRAIN_RUN)/probe
	rm -rf $(PRETRAIN_OUT) && mkdir -p $(PRETRAIN_OUT)
	cp $(PRETRAIN_RUN)/loss_curve.png $(PRETRAIN_RUN)/metrics.csv $(PRETRAIN_RUN)/sweep.md $(PRETRAIN_RUN)/sweep.csv $(PRETRAIN_OUT)/
	$(BIN)/evalkit report $(PRETRAIN_RUN)/probe --output_dir $(PRETRAIN_OUT)/probe --html

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Also the long runs that CI skips.
test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

clean:
	rm -rf data/embeddings results/runs runs/regress runs/baseline runs/segmentation_fixture
