"""Several models in one predict_fit (issue 20, item 9): a setting meant for one model is addressed to it
(``--models.NAME.KEY``) or refused, and every model's config is checked before the first embedding starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evalkit.cli import main
from evalkit.errors import EvalkitError
from evalkit.preparse import model_addresses, model_positions, route_addressed, split_model_flags
from helpers import CONFIGS, CRC_TASK, model_yaml

FAST = ["--embed.accelerator", "cpu", "--embed.num_workers", "0", "--head.n_runs", "1", "--head.max_steps", "20",
        "--head.device", "cpu"]


@pytest.fixture
def two_models(tmp_path: Path) -> tuple[Path, Path]:
    """Two small timm ResNet-18s at 64 px (fast on a CPU), addressed by their file stems ``a`` and ``b``."""
    args = {"model_name": "resnet18", "preprocessing": {"input_size": 64}}
    return (model_yaml(tmp_path / "models" / "a.yaml", "timm", name="r18a", seed=0, **args),
            model_yaml(tmp_path / "models" / "b.yaml", "timm", name="r18b", seed=1, **args))


def _one_error_line(capsys: pytest.CaptureFixture) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evalkit: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def _nothing_ran(tmp_path: Path) -> None:
    """No embedding started and no result was written (the conftest points both roots into tmp_path)."""
    assert not (tmp_path / "embeddings").exists() and not (tmp_path / "results").exists()


def test_an_unaddressed_model_option_is_refused_before_any_work(tmp_path, capsys, two_models):
    a, b = two_models
    code = main(["predict_fit", "--config", str(CRC_TASK), "--config", str(a), "--config", str(b),
                 "--model.checkpoint_path", "/somewhere/b.pth", *FAST])
    assert code == 1
    line = _one_error_line(capsys)
    assert line == ("evalkit: error: --model.checkpoint_path: this predict_fit compares 2 models; say which one with "
                    "--models.<name>.checkpoint_path (<name>: a, b), or set it in that model's YAML file")
    _nothing_ran(tmp_path)


@pytest.mark.parametrize("flag", [["--model.seed", "3"], ["--model.init_args.seed=3"], ["--model", "timm"]])
def test_every_form_of_an_unaddressed_model_flag_counts(capsys, two_models, flag):
    """``--model.KEY VALUE``, ``--model.init_args.KEY=VALUE``; a bare ``--model NAME`` is one more model."""
    a, b = two_models
    code = main(["predict_fit", "--config", str(CRC_TASK), "--config", str(a), "--config", str(b), *flag,
                 "--print_config"])
    assert code == 1
    line = _one_error_line(capsys)
    if flag[0] == "--model":  # three models now; the third needs its model_name
        assert line.startswith("evalkit: error: model timm: ") and "--models.timm.model_name" in line
    else:
        assert "this predict_fit compares 2 models" in line and "--models.<name>.seed" in line


def test_an_addressed_option_reaches_its_model_only_and_the_comparison_runs(tmp_path, capsys, two_models):
    a, b = two_models
    code = main(["predict_fit", "--config", str(CRC_TASK), "--config", str(a), "--config", str(b),
                 "--models.b.seed", "5", "--models.a.preprocessing.input_size=72", *FAST])
    assert code == 0, capsys.readouterr().err
    configs = {path.parent.parent.name: yaml.safe_load(path.read_text())["model"]["init_args"]
               for path in (tmp_path / "results" / "crc_demo").glob("*/*/config.yaml")}
    assert configs["r18a"]["seed"] == 0 and configs["r18a"]["preprocessing"]["input_size"] == 72
    assert configs["r18b"]["seed"] == 5 and configs["r18b"]["preprocessing"]["input_size"] == 64
    assert (tmp_path / "results" / "crc_demo" / "report.md").is_file()
    out = capsys.readouterr().out
    assert "r18a" in out and "r18b" in out


def test_a_bad_setting_of_the_last_model_stops_before_the_first_embeds(tmp_path, capsys, two_models):
    a, b = two_models
    for flags, says in ((["--models.b.checkpoint_path", str(tmp_path / "nope.pth")], "weights not found"),
                        (["--models.b.preprocessing.input_size", "big"],
                         "--models.b.preprocessing.input_size: expected int"),
                        (["--models.b.no_such_option", "1"], "has no option 'no_such_option'")):
        assert main(["predict_fit", "--config", str(CRC_TASK), "--config", str(a), "--config", str(b), *flags,
                     *FAST]) == 1
        line = _one_error_line(capsys)
        assert line.startswith("evalkit: error: model b: ") and says in line, line
        _nothing_ran(tmp_path)


def test_print_config_of_several_models_prints_each_with_its_own_settings(capsys, two_models):
    a, b = two_models
    assert main(["predict_fit", "--config", str(CRC_TASK), "--config", str(a), "--config", str(b),
                 "--models.B.seed", "7", "--head.n_runs", "2", "--print_config"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["model"]["init_args"]["seed"] for d in docs] == [0, 7]  # the name matches in any case
    assert [d["head"]["n_runs"] for d in docs] == [2, 2]  # options of other groups apply to every model


def test_print_config_of_several_models_with_a_bad_setting_is_one_line_and_prints_nothing(capsys, two_models):
    """The original report: an option the second model's class lacks gave a 130-line traceback."""
    a, _ = two_models
    phikon = CONFIGS / "models" / "hf_phikon.yaml"
    assert main(["predict_fit", "--config", str(CRC_TASK), "--config", str(a), "--config", str(phikon),
                 "--models.hf_phikon.checkpoint_path", "/x.pth", "--print_config"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "evalkit: error: model hf_phikon: evalkit.models.HuggingFaceModel has no option 'checkpoint_path'; its "
        "options: path, ")


def test_an_address_no_model_answers_to_lists_the_names(capsys, two_models):
    a, b = two_models
    assert main(["predict_fit", "--config", str(CRC_TASK), "--config", str(a), "--config", str(b),
                 "--models.c.seed", "1"]) == 1
    assert _one_error_line(capsys) == ("evalkit: error: --models.c.seed: no model of this comparison answers to that "
                                       "name; address one as --models.<name>.KEY with <name> one of: a, b")


def test_two_models_of_one_name_cannot_be_addressed(tmp_path, capsys, two_models):
    a, _ = two_models
    other = model_yaml(tmp_path / "other" / "a.yaml", "timm", model_name="resnet18")
    assert main(["predict_fit", "--config", str(CRC_TASK), "--config", str(a), "--config", str(other),
                 "--models.a.seed", "1"]) == 1
    assert "2 models of this comparison answer to 'a'; put the setting in that model's YAML file" in \
        _one_error_line(capsys)


def test_models_addressing_needs_a_comparison(capsys, two_models):
    a, _ = two_models
    assert main(["predict", "--config", str(CRC_TASK), "--config", str(a), "--models.a.seed", "1"]) == 1
    assert _one_error_line(capsys) == ("evalkit: error: --models.a.seed: --models.<name>.KEY addresses one model of a "
                                       "predict_fit comparison; with one model, use --model.KEY")


@pytest.mark.parametrize("command", ["predict", "fit"])
def test_predict_and_fit_refuse_two_model_flags(capsys, command):
    assert main([command, "--config", str(CRC_TASK), "--model", "timm", "--model=torchvision"]) == 1
    assert _one_error_line(capsys) == (f"evalkit: error: `evalkit {command}` runs one model, got --model timm and "
                                       f"--model torchvision; compare several with `evalkit predict_fit`, or run "
                                       f"{command} once per model")


def test_flags_are_split_and_routed_by_address():
    argv = ["--config", "t.yaml", "--config", "m/a.yaml", "--model.seed", "1", "--models.A.seed=2",
            "--config", "m/b.c.yaml", "--models.b.c.preprocessing.input_size", "96", "--print_config"]
    rest, loose, addressed = split_model_flags(argv)
    assert loose == [["--model.seed", "1"]]
    assert addressed == [["--models.A.seed=2"], ["--models.b.c.preprocessing.input_size", "96"]]
    assert rest == ["--config", "t.yaml", "--config", "m/a.yaml", "--config", "m/b.c.yaml", "--print_config"]
    addresses = [["a"], ["b.c"], ["b"]]  # a stem with a dot, and a shorter one it starts with: the longest wins
    assert route_addressed(addressed, addresses) == [["--model.seed=2"], ["--model.preprocessing.input_size", "96"], []]
    with pytest.raises(EvalkitError, match="no model of this comparison answers"):
        route_addressed([["--models.a", "1"]], addresses)  # a name without a KEY


def test_model_positions_count_config_files_and_model_flags(tmp_path, two_models):
    a, _ = two_models
    argv = ["--config", str(CRC_TASK), f"--config={a}", "--model", "timm", "--model.model_name", "resnet18",
            "--model=torchvision"]
    positions = model_positions(argv)
    assert positions == [2, 4, 7]  # the task file sets no model; --model.KEY is a setting, not a model
    assert [model_addresses(argv, p) for p in positions] == [["a"], ["timm"], ["torchvision"]]
