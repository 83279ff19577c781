"""Models by name (issue 20, the command line's side): ``--model uni2-h`` and ``model: uni2-h`` select a preset,
adapter names keep winning, ``--model.KEY`` still applies after a name, and ``evalkit models list`` shows every
preset quickly."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evalkit.cli import build_parser, main
from evalkit.models import MODELS
from evalkit.models.presets import PRESETS, RANDOM_SUFFIX
from evalkit.models.weights import weight_locations
from evalkit.preparse import chosen_evaluation, with_class_paths
from helpers import CONFIGS, CRC_TASK, cli_env, model_yaml

PRESET_MODEL = "evalkit.models.preset_model.PresetModel"
TASKS = sorted((CONFIGS / "tasks").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No preset's weights are on this machine, whatever the developer's Hugging Face cache holds."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))


def _objects(command: str, argv: list[str]):
    parser = build_parser(command, chosen_evaluation(argv))
    return parser.instantiate_classes(parser.parse_args(with_class_paths(argv)))


@pytest.mark.parametrize("given,preset", [("uni2-h", "uni2-h"), ("UNI2-H", "uni2-h"), (" Uni2-h ", "uni2-h"),
                                          ("pathology/mahmood_uni2_h", "uni2-h"), ("uni2-h-random", "uni2-h-random"),
                                          ("PATHOLOGY/MAHMOOD_UNI2_H-random", "uni2-h-random")])
def test_a_preset_name_or_alias_in_any_case_becomes_a_preset_model(given, preset):
    for argv, index in ((["--model", given, "--model.weights", "/w"], 1), ([f"--model={given}"], 0)):
        value = with_class_paths(argv)[index].removeprefix("--model=")
        assert json.loads(value) == {"class_path": PRESET_MODEL, "init_args": {"preset": preset}}


def test_adapter_names_and_class_names_win_over_presets(monkeypatch):
    """Even a preset that answered to ``timm`` would not shadow the adapter."""
    monkeypatch.setattr("evalkit.models.presets.find_preset", lambda name: PRESETS.get("uni2-h"))
    assert with_class_paths(["--model", "timm"])[1] == "evalkit.models.timm_model.TimmModel"
    assert with_class_paths(["--model", "evalkit.models.TimmModel"])[1] == "evalkit.models.TimmModel"
    preset_adapter = MODELS.get("preset")
    assert f"{preset_adapter.__module__}.{preset_adapter.__name__}" == PRESET_MODEL


def test_an_unknown_name_is_one_line_that_points_at_the_list(capsys):
    assert main(["predict", "--config", str(CRC_TASK), "--model", "uni3-h"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("evalkit: error: unknown model 'uni3-h' for --model; expected a model preset "
                          "(`evalkit models list`), or an adapter's registry name or class_path: ")


@pytest.mark.parametrize("command", ["predict", "fit", "predict_fit"])
@pytest.mark.parametrize("task", TASKS, ids=lambda p: p.stem)
def test_model_by_name_with_every_task_config_and_options_after_it(command, task):
    objects = _objects(command, ["--config", str(task), "--model", "UNI2-H", "--model.weights", "/w/uni2",
                                 "--model.pooling", "mean", "--model.name", "uni2-mean"])
    assert type(objects.model).__name__ == "PresetModel"
    assert objects.model.preset.name == "uni2-h" and objects.model.weights == "/w/uni2"
    assert objects.model.pooling == "mean" and objects.model.name == "uni2-mean"


def test_a_model_config_may_be_just_a_name(tmp_path):
    named = tmp_path / "virchow2.yaml"
    named.write_text("model: virchow2\n")
    objects = _objects("predict", ["--config", str(CRC_TASK), "--config", str(named), "--model.seed", "3"])
    assert objects.model.preset.name == "virchow2" and objects.model.seed == 3 and objects.model.name == "virchow2"
    assert _objects("predict", ["--config", str(CRC_TASK), "--model", "virchow2-random"]).model.preset.random_init


def test_predict_fit_compares_several_models_by_name(capsys):
    assert main(["predict_fit", "--config", str(CRC_TASK), "--model", "uni2-h-random", "--model=Virchow2-random",
                 "--models.virchow2-random.pooling", "mean", "--print_config"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [(d["model"]["class_path"], d["model"]["init_args"]["preset"], d["model"]["init_args"]["pooling"])
            for d in docs] == [(PRESET_MODEL, "uni2-h-random", None), (PRESET_MODEL, "virchow2-random", "mean")]


def test_missing_preset_weights_stop_a_comparison_before_any_work(tmp_path, capsys):
    small = model_yaml(tmp_path / "r18.yaml", "timm", model_name="resnet18", preprocessing={"input_size": 64})
    assert main(["predict_fit", "--config", str(CRC_TASK), "--config", str(small), "--model", "uni2-h",
                 "--embed.accelerator", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evalkit: error: model uni2-h: weights not found: ")
    assert "hf download MahmoodLab/UNI2-h" in err[0]
    assert not (tmp_path / "embeddings").exists()


# ---- evalkit models list ----

def _listing(capsys, *options: str) -> str:
    assert main(["models", "list", *options]) == 0
    return capsys.readouterr().out


def test_models_list_shows_adapters_then_every_preset_in_120_columns(capsys):
    out = _listing(capsys)
    assert max(len(line) for line in out.splitlines()) <= 120
    adapters, presets, note = out.split("\n\n")
    assert {line.split()[0] for line in adapters.splitlines()[1:] if line[2] != " "} == set(MODELS.names())
    header, *rows = presets.splitlines()[1:]
    assert header.split() == ["name", "dim", "patch", "params", "pooling", "upstream", "gated"]
    by_name = {row.split()[0]: row.split() for row in rows if not row.startswith("      ")}
    assert list(by_name) == [name for name, _ in PRESETS.items()]
    for name, preset in PRESETS.items():
        assert by_name[name][1:5] == [str(preset.embed_dim), str(preset.patch_size),
                                      f"{preset.num_params / 1e6:.1f}M", preset.pooling]
        assert by_name[name][5:] == [preset.hf_repo or "-", "yes" if preset.gated else "no"]
    weights = [row for row in rows if row.startswith("      weights: ")]
    assert len(weights) >= sum(1 for _, p in PRESETS.items() if p.hf_repo)
    assert f"<name>{RANDOM_SUFFIX}" in note


def test_models_list_as_csv_and_markdown(capsys):
    rows = list(csv.DictReader(io.StringIO(_listing(capsys, "--format", "csv"))))
    presets = {row["name"]: row for row in rows if row["kind"] == "preset"}
    assert {row["name"] for row in rows if row["kind"] == "adapter"} == set(MODELS.names())
    assert list(presets) == [name for name, _ in PRESETS.items()]
    for name, preset in PRESETS.items():
        assert presets[name]["weights"].split("; ") == (weight_locations(preset) or [""])
        assert presets[name]["gated"] == ("yes" if preset.gated else "no")
    markdown = _listing(capsys, "--format", "markdown").splitlines()
    assert markdown[0] == "| adapter | class_path | description |"
    assert "| preset | dim | patch | params | pooling | upstream | gated | weights looked for |" in markdown
    assert sum(line.startswith("| `") for line in markdown) == len(MODELS) + len(PRESETS)


def test_models_list_imports_no_model_library(tmp_path):
    """Presets are data: listing them builds nothing (the adapters' registry still imports torch)."""
    code = ("import sys\nfrom evalkit.cli import main\nassert main(['models', 'list']) == 0\n"
            "print(sorted(m for m in ('timm', 'torchvision', 'transformers', 'lightning') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
