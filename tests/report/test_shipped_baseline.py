"""The accepted baselines that `make results-regress` and docs/ci.md check against must be of the model the
shipped config builds today: a config change (a new default transform, say) gives another fingerprint, and
then the baseline has to be regenerated, not silently compared."""

from __future__ import annotations

import json

import pytest

from evalkit.cli import build_parser
from helpers import CONFIGS, REPO

MODEL = CONFIGS / "models" / "vit_small_patch16_224_random.yaml"


@pytest.mark.parametrize("task", ["pcam_demo", "crc_demo"])
def test_shipped_baseline_is_of_the_shipped_model_config(task):
    baseline_file = REPO / "results" / "baselines" / task / "results.json"
    parser = build_parser("fit")
    model = parser.instantiate_classes(parser.parse_args(["--config", str(CONFIGS / "tasks" / f"{task}.yaml"),
                                                          "--config", str(MODEL)])).model
    baseline = json.loads(baseline_file.read_text())
    assert baseline["schema_version"] == 2
    assert baseline["model_fingerprint"] == model.fingerprint(), (
        f"{baseline_file} was recorded with another model config than {MODEL}; regenerate it (docs/ci.md)")
    assert (baseline["task"], baseline["evaluation"], baseline["protocol"]) == (task, "linear_probe", "sgd_kaiko")
