"""The accepted baseline that `make results-regress` checks against must be of the model the shipped config
builds today: a config change (a new default transform, say) gives another fingerprint, and then the
baseline has to be regenerated, not silently compared."""

from __future__ import annotations

import json

from evalkit.cli import build_parser
from helpers import CONFIGS, REPO

BASELINE = REPO / "results" / "baselines" / "crc_demo" / "results.json"
MODEL = CONFIGS / "models" / "vit_small_patch16_224_random.yaml"


def test_shipped_baseline_is_of_the_shipped_model_config():
    parser = build_parser("fit")
    model = parser.instantiate_classes(parser.parse_args(["--config", str(CONFIGS / "tasks" / "crc_demo.yaml"),
                                                          "--config", str(MODEL)])).model
    baseline = json.loads(BASELINE.read_text())
    assert baseline["schema_version"] == 2
    assert baseline["model_fingerprint"] == model.fingerprint(), (
        f"{BASELINE} was recorded with another model config than {MODEL}; regenerate it (docs/ci.md)")
    assert (baseline["task"], baseline["evaluation"], baseline["protocol"]) == ("crc_demo", "linear_probe", "sgd_kaiko")
