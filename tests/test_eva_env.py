"""eva users' habits (issue 20, item 10): eva's environment variables are honoured where they mean what
evalkit's do, named in one warning line where they do not, and docs/coming_from_eva.md's worked example runs."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from evalkit.cli import build_parser, main
from evalkit.env import EVA_ALIASES, EVA_IGNORED, eva_warning
from evalkit.preparse import chosen_evaluation, with_class_paths
from helpers import CRC_TASK, DATA, REPO, copy_crc_demo, model_yaml, run_in_process

DOC = REPO / "docs" / "coming_from_eva.md"
# eva's variables that evalkit reads under the same name and with the same meaning (DATA_ROOT: same name only)
SAME_NAME = {"DATA_ROOT", "EMBEDDINGS_ROOT", "N_RUNS", "MAX_STEPS", "BATCH_SIZE", "ACCELERATOR", "PREDICT_BATCH_SIZE",
             "MODEL_NAME"}


def _parsed(command: str, *argv: str):
    return build_parser(command, chosen_evaluation(list(argv))).parse_args(with_class_paths(list(argv)))


@pytest.mark.parametrize("variable,value,key,expected,flag", [
    ("N_DATA_WORKERS", "3", "embed.num_workers", 3, "--embed.num_workers=0"),
    ("NUM_DEVICES", "2", "embed.devices", "2", "--embed.devices=1"),
    ("PREDICT_BATCH_SIZE", "16", "embed.batch_size", 16, "--embed.batch_size=8"),
])
def test_eva_variables_that_mean_what_an_evalkit_option_means_set_its_default(monkeypatch, variable, value, key,
                                                                              expected, flag):
    argv = ["--config", str(CRC_TASK), "--model", "timm", "--model.model_name", "resnet18"]
    monkeypatch.setenv(variable, value)
    assert str(_parsed("predict", *argv)[key]) == str(expected)
    assert str(_parsed("predict", *argv, flag)[key]) == flag.partition("=")[2]  # a flag still wins


def test_evalkits_own_variable_wins_and_null_means_the_default(monkeypatch):
    argv = ["--config", str(CRC_TASK), "--model", "timm", "--model.model_name", "resnet18"]
    monkeypatch.setenv("N_DATA_WORKERS", "3")
    monkeypatch.setenv("NUM_WORKERS", "1")
    assert _parsed("predict", *argv).embed.num_workers == 1
    monkeypatch.delenv("NUM_WORKERS")
    monkeypatch.setenv("N_DATA_WORKERS", "null")  # eva: "the number of cores"; evalkit: its own default
    assert _parsed("predict", *argv).embed.num_workers is None


def test_a_bad_eva_value_names_the_eva_variable(monkeypatch, capsys):
    monkeypatch.setenv("N_DATA_WORKERS", "many")
    assert main(["predict", "--config", str(CRC_TASK), "--model", "timm", "--model.model_name", "resnet18"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "evalkit: error: environment variable N_DATA_WORKERS must be an integer, got 'many'"]


def test_ignored_eva_variables_are_one_warning_line_once_per_command(monkeypatch, capsys, tmp_path):
    for name, value in (("PATIENCE", "125"), ("LR_VALUE", "0.0003"), ("OUTPUT_ROOT", "logs/x")):
        monkeypatch.setenv(name, value)
    a = model_yaml(tmp_path / "a.yaml", "timm", model_name="resnet18")
    b = model_yaml(tmp_path / "b.yaml", "timm", model_name="resnet34")
    warning = ("evalkit: warning: evalkit ignores eva's OUTPUT_ROOT (use RESULTS_ROOT, the folder above "
               "<task>/<model>/<run-id>), LR_VALUE (use --head.lr or --seg.lr), PATIENCE (use "
               "--head.patience_fraction, a fraction of max_epochs; eva's configs use 0.2); "
               "see docs/coming_from_eva.md")
    for _ in range(2):  # each command says it once, also when it compares several models
        assert main(["predict_fit", "--config", str(CRC_TASK), "--config", str(a), "--config", str(b),
                     "--print_config"]) == 0
        captured = capsys.readouterr()
        assert captured.err.splitlines() == [warning]
        assert len(list(yaml.safe_load_all(captured.out))) == 2
    assert main(["models", "list"]) == 0  # a command that reads no such setting says nothing
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name", sorted(EVA_IGNORED))
def test_every_ignored_variable_is_named_with_what_to_use_instead(monkeypatch, name):
    assert eva_warning() is None
    monkeypatch.setenv(name, "1")
    assert eva_warning() == f"evalkit ignores eva's {name} ({EVA_IGNORED[name]}); see docs/coming_from_eva.md"


def test_the_docs_table_lists_every_eva_variable_evalkit_knows():
    table = DOC.read_text().split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| ([^|]+) \|", table, re.M)}
    assert set(rows) == SAME_NAME | set(EVA_ALIASES) | set(EVA_IGNORED)
    assert {name for name, evalkit in rows.items() if evalkit.strip() == "ignored, warned"} == set(EVA_IGNORED)
    assert rows["N_DATA_WORKERS"].strip() == "`--embed.num_workers`"
    assert rows["NUM_DEVICES"].strip() == "`--embed.devices`"


# ---- MODEL_NAME ----

@pytest.mark.parametrize("command,given", [("predict", []), ("fit", []), ("predict_fit", []),
                                           ("predict_fit", ["--model", "virchow2"]),
                                           ("predict", ["--config", "MODEL_FILE"])])
def test_model_name_is_the_model_of_a_command_that_names_none(monkeypatch, capsys, tmp_path, command, given):
    monkeypatch.setenv("MODEL_NAME", "PATHOLOGY/MAHMOOD_UNI2_H")
    model_file = tmp_path / "virchow2.yaml"
    model_file.write_text("model: virchow2\n")
    given = [str(model_file) if arg == "MODEL_FILE" else arg for arg in given]
    with pytest.raises(SystemExit):
        main([command, "--config", str(CRC_TASK), *given, "--print_config"])
    preset = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["preset"]
    assert preset == ("virchow2" if given else "uni2-h")  # a model given on the command line wins


def test_a_model_name_that_is_no_preset_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("MODEL_NAME", "universal/no_such_model")
    assert main(["predict", "--config", str(CRC_TASK)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "evalkit: error: MODEL_NAME=universal/no_such_model (eva's model variable) names no evalkit model preset; "
        "pass --model NAME or --config MODEL.yaml (`evalkit models list` shows the presets), or unset MODEL_NAME"]


# ---- DATA_ROOT: evalkit's meaning, eva's spotted ----

def _data_check(capsys) -> tuple[int, list[str]]:
    code = main(["data", "check", "--config", str(CRC_TASK), "--decode", "false"])
    return code, capsys.readouterr().err.strip().splitlines()


def test_an_eva_style_data_root_of_the_datasets_name_is_warned(monkeypatch, capsys, tmp_path):
    folder = copy_crc_demo(tmp_path / "eva_data")
    monkeypatch.setenv("DATA_ROOT", str(folder))
    code, err = _data_check(capsys)
    assert code == 1 and err == [
        f"evalkit: warning: DATA_ROOT {folder} looks like eva's DATA_ROOT (one dataset's folder); evalkit's DATA_ROOT "
        f"is the folder that holds the dataset folders, this task's as crc_demo/: set DATA_ROOT={folder.parent}",
        f"evalkit: error: dataset folder not found: {folder / 'crc_demo'}; set --data_root (DATA_ROOT) or the task's "
        "dataset root"]
    monkeypatch.setenv("DATA_ROOT", str(folder.parent))  # evalkit's meaning: no warning
    assert _data_check(capsys) == (0, [])


def test_an_eva_style_data_root_that_holds_the_datasets_files_is_warned(monkeypatch, capsys, tmp_path):
    folder = tmp_path / "kather_tiles"
    shutil.move(copy_crc_demo(tmp_path), folder)
    monkeypatch.setenv("DATA_ROOT", str(folder))
    for argv in (["data", "check", "--config", str(CRC_TASK), "--decode", "false"],
                 ["predict", "--config", str(CRC_TASK), "--model", "timm", "--model.model_name", "resnet18"]):
        assert main(argv) == 1
        warning, error = capsys.readouterr().err.strip().splitlines()
        assert warning.startswith(f"evalkit: warning: DATA_ROOT {folder} looks like eva's DATA_ROOT")
        assert warning.endswith(f": pass --task.dataset.root {folder}, or set DATA_ROOT to a folder holding it as "
                                "crc_demo/")
        assert error.startswith("evalkit: error: dataset folder not found")


def test_a_data_root_without_the_task_folder_or_its_files_is_not_called_eva_style(monkeypatch, capsys, tmp_path):
    (tmp_path / "elsewhere" / "other_dataset").mkdir(parents=True)
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "elsewhere"))
    code, err = _data_check(capsys)
    assert code == 1 and len(err) == 1 and err[0].startswith("evalkit: error: dataset folder not found")


# ---- the worked example of docs/coming_from_eva.md ----

def _doc_commands() -> list[tuple[dict[str, str], list[str], list[str]]]:
    """``(environment, evalkit arguments, expected output lines)`` of each ``$`` command of the marked block."""
    block = DOC.read_text().split("<!-- run by tests/test_eva_env.py -->\n```console\n", 1)[1].split("```", 1)[0]
    commands: list[tuple[dict[str, str], list[str], list[str]]] = []
    for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
        lines = chunk.splitlines()
        text = lines.pop(0)
        while text.endswith("\\"):
            text = text[:-1] + " " + lines.pop(0).strip()
        words = shlex.split(text)
        env = dict(word.split("=", 1) for word in words[:words.index("evalkit")])
        commands.append((env, words[words.index("evalkit") + 1:], lines))
    return commands


def _shape(line: str) -> str:
    """A progress line without what changes from run to run or machine to machine: numbers, hashes, run ids."""
    return re.sub(r"[0-9a-f]*\d[0-9a-f]*", "N", line) if line.startswith("[") else line


def _assert_shown(expected: list[str], actual: list[str]) -> None:
    """``actual`` holds the ``expected`` lines in order; ``...`` stands for any number of lines."""
    at, skipping = 0, False
    for line in expected:
        if line == "...":
            skipping = True
            continue
        found = next((i for i in range(at, len(actual)) if _shape(actual[i]) == _shape(line)), None)
        assert found is not None and (skipping or found == at), f"{line!r} not where the docs show it in:\n" + \
            "\n".join(actual)
        at, skipping = found + 1, False
    assert skipping or at == len(actual), "\n".join(actual[at:])


def test_the_worked_example_of_coming_from_eva_runs_as_shown(tmp_path):
    """In a folder like the repository's (its configs and demo tiles), so the default roots land in tmp_path."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "crc_demo").symlink_to(DATA / "crc_demo")
    commands = _doc_commands()
    assert len(commands) == 2 and all(cmd[0] for cmd in commands)
    for env, argv, expected in commands:
        done = run_in_process(*argv, cwd=tmp_path, **env)
        assert done.returncode == 0, done.stderr
        _assert_shown(expected, done.stderr.splitlines() + done.stdout.splitlines())
    assert len(list((tmp_path / "results" / "runs" / "crc_demo" / "resnet18-random").glob("*/results.json"))) == 1
    assert not Path(tmp_path / "logs").exists()  # OUTPUT_ROOT was not read
