"""Start-up stays light: the heavy libraries are imported by the stages that use them, never by the
command line itself (issue 18). Each check runs in a fresh interpreter, because this test process
has long imported everything; times are measured by benchmarks/startup.py, not asserted here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from evalkit import __version__
from helpers import CRC_TASK, DATA, cli_env, model_yaml

# What `evalkit --version` and `evalkit --help` must not import (each costs from 0.1 s to several seconds).
HEAVY = ("torch", "torchvision", "lightning", "torchmetrics", "timm", "transformers", "h5py", "scipy")


def _imported_after(code: str, cwd: Path) -> dict:
    """Run ``code`` in a fresh interpreter; what it printed last (JSON) and which ``HEAVY`` modules it imported."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=cli_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    *printed, imported = done.stdout.strip().splitlines()
    return {"stdout": printed, "stderr": done.stderr, "imported": json.loads(imported)}


def test_version_and_help_import_no_heavy_library(tmp_path):
    code = "from evalkit.cli import main\nassert main(['--version']) == 0\nassert main(['--help']) == 0"
    run = _imported_after(code, tmp_path)
    assert run["stdout"][0] == __version__ and run["stdout"][1].startswith(f"evalkit {__version__}: ")
    assert run["imported"] == []


def test_the_registries_import_their_modules_on_first_lookup_not_with_the_cli(tmp_path):
    code = """
import sys
import evalkit.cli
from evalkit.data import DATASETS
from evalkit.evaluations import EVALUATIONS
from evalkit.models import MODELS
packages = (["evalkit", "data"], ["evalkit", "models"], ["evalkit", "evaluations"])
print(sorted(m for m in sys.modules if m.split(".")[:2] in packages and m.count(".") == 2
             and not m.endswith(".registry")))
print(EVALUATIONS.names(), "timm" in MODELS, "image_csv" in DATASETS)
"""
    run = _imported_after(code, tmp_path)
    assert run["stdout"] == ["[]", "['knn', 'linear_probe', 'segmentation'] True True"]
    assert "torch" in run["imported"]  # the lookups imported the modules that register the entries


def test_a_predict_whose_caches_are_complete_imports_neither_lightning_nor_the_model_libraries(crc_cache, tmp_path):
    """The caches of the session's CRC embedding, copied: predict finds them complete, builds no model,
    transforms no image, so it needs neither Lightning nor timm nor torchvision."""
    emb = tmp_path / "emb"
    shutil.copytree(crc_cache.root / "crc_demo", emb / "crc_demo")
    model = model_yaml(tmp_path / "model.yaml", "evalkit.models.TimmModel", model_name="resnet18", seed=0,
                       preprocessing={"input_size": 64})  # the model of the crc_cache fixture
    argv = ["predict", "--config", str(CRC_TASK), "--config", str(model), "--data_root", str(DATA),
            "--embeddings_root", str(emb), "--embed.accelerator", "cpu", "--embed.num_workers", "0"]
    run = _imported_after(f"from evalkit.cli import main\nassert main({argv!r}) == 0", tmp_path)
    assert run["stderr"].count("reusing cache") == 2, run["stderr"]
    assert "embedding" not in run["stderr"]
    assert not {"lightning", "torchmetrics", "timm", "torchvision"} & set(run["imported"]), run["imported"]
