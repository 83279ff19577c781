"""The command line in-process: every shipped config parses, configs and flags compose, env defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evalkit import __version__
from evalkit.cli import build_parser, main
from evalkit.errors import EvalkitError
from evalkit.evaluations import EVALUATIONS
from evalkit.evaluations.knn import KnnProbe
from evalkit.evaluations.linear_probe import LinearProbe
from evalkit.evaluations.segmentation import Segmentation
from evalkit.models import MODELS, ModelSpec, TimmModel
from evalkit.preparse import chosen_evaluation, with_class_paths
from evalkit.task import Task
from helpers import CONFIGS, CONSEP_TASK, CRC_TASK, PRECOMPUTED_TASK, RESNET_RANDOM, write_yaml

ALL_CONFIGS = sorted(p for p in CONFIGS.rglob("*") if p.suffix in (".yaml", ".yml"))


def _kind(path: Path) -> str:
    content = yaml.safe_load(path.read_text()) or {}
    if "trainer" in content:
        return "pretrain"
    if "task" in content:
        return "task"
    if "model" in content:
        return "model"
    if "fewshot" in content:
        return "fewshot"
    pytest.fail(f"{path} is neither a task nor a model config; teach tests/test_cli.py which command reads it")


def test_the_config_glob_finds_the_shipped_configs():
    kinds = [_kind(p) for p in ALL_CONFIGS]
    assert kinds.count("task") >= 3 and kinds.count("model") >= 5
    assert CRC_TASK in ALL_CONFIGS


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_parses_and_instantiates(config: Path):
    if _kind(config) == "task":
        # A task file alone is a complete `fit` config; with a model file, a `predict` one.
        for command, argv in (("fit", ["--config", str(config)]),
                              ("predict", ["--config", str(config), "--config", str(RESNET_RANDOM)])):
            evaluation = chosen_evaluation(argv)
            parser = build_parser(command, evaluation)
            objects = parser.instantiate_classes(parser.parse_args(argv))
            assert isinstance(objects.task, Task) and objects.task.name
            assert objects.task.train_split and objects.task.val_split
            assert objects.task.evaluations[0] == evaluation.name  # the task's default evaluation runs
            assert set(objects.task.evaluations) <= set(EVALUATIONS.names())
    elif _kind(config) == "pretrain":
        parser = build_parser("pretrain")
        objects = parser.instantiate_classes(parser.parse_args(["--config", str(config)]))
        assert objects.model.backbone and objects.trainer.max_epochs >= 1 and objects.views.n_global >= 1
    elif _kind(config) == "fewshot":  # label budgets: read by fit and predict_fit
        parser = build_parser("fit")
        objects = parser.instantiate_classes(parser.parse_args(["--config", str(CRC_TASK), "--config", str(config)]))
        assert objects.fewshot.enabled and objects.fewshot.draws >= 1
    else:
        parser = build_parser("predict")
        cfg = parser.parse_args(["--config", str(CRC_TASK), "--config", str(config)])
        objects = parser.instantiate_classes(cfg)
        assert isinstance(objects.model, ModelSpec)
        assert type(objects.model) in dict(MODELS.items()).values()
        assert objects.model.name
        assert objects.task.name == "crc_demo"


def _groups(command: str, argv: list[str]) -> set[str]:
    """The option groups (``head``, ``seg``, ...) of the parser that a run of ``argv`` uses."""
    parser = build_parser(command, chosen_evaluation(argv))
    return {key.split(".")[0] for key in parser.get_defaults().keys() if "." in key} - {"task"}


EVALUATION_GROUPS = {"head", "fewshot", "seg", "knn"}


def test_a_segmentation_task_gets_seg_options_and_no_head_options():
    argv = ["--config", str(CONSEP_TASK)]
    assert chosen_evaluation(argv) is Segmentation
    assert _groups("fit", argv) & EVALUATION_GROUPS == {"seg"}
    assert _groups("predict_fit", argv) & EVALUATION_GROUPS == {"seg"}
    assert _groups("predict", argv) & EVALUATION_GROUPS == {"seg"}  # the crop pool and grid decide what is embedded
    cfg = build_parser("fit", Segmentation).parse_args(argv + ["--seg.crops_per_image", "3"])
    assert cfg.seg.crops_per_image == 3 and "head" not in cfg


def test_a_classification_task_gets_head_and_fewshot_options_and_no_seg_options():
    argv = ["--config", str(CRC_TASK)]
    assert chosen_evaluation(argv) is LinearProbe
    assert _groups("fit", argv) & EVALUATION_GROUPS == {"head", "fewshot"}
    assert _groups("predict", argv) & EVALUATION_GROUPS == set()  # pooled rows need no probe settings
    assert {"embed", "stats"} <= _groups("predict_fit", argv)


def test_evaluation_knn_on_crc_demo_gets_knn_options_only():
    argv = ["--config", str(CRC_TASK), "--evaluation", "knn"]
    assert chosen_evaluation(argv) is KnnProbe
    assert chosen_evaluation(["--config", str(CRC_TASK), "--evaluation=knn"]) is KnnProbe
    assert _groups("fit", argv) & EVALUATION_GROUPS == {"knn"}
    cfg = build_parser("fit", KnnProbe).parse_args(argv + ["--knn.k", "5"])
    assert cfg.knn.k == 5 and cfg.evaluation == "knn"


def test_a_task_config_can_narrow_and_reorder_its_evaluations(tmp_path):
    knn_first = write_yaml(tmp_path / "task.yaml", {"task": {"evaluations": ["knn"]}})
    argv = ["--config", str(CRC_TASK), "--config", str(knn_first)]
    assert chosen_evaluation(argv) is KnnProbe
    with pytest.raises(EvalkitError, match="--evaluation linear_probe: this task runs knn"):
        chosen_evaluation(argv + ["--evaluation", "linear_probe"])


def test_an_evaluation_the_task_does_not_run_is_one_line(capsys, tmp_path):
    with pytest.raises(EvalkitError, match="--evaluation segmentation: this task runs linear_probe, knn"):
        chosen_evaluation(["--config", str(CRC_TASK), "--evaluation", "segmentation"])
    assert main(["fit", "--config", str(CRC_TASK), "--evaluation", "segmentation",
                 "--results_root", str(tmp_path / "res")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("evalkit: error: --evaluation segmentation")
    assert main(["fit", "--config", str(CRC_TASK), "--evaluation", "no_such_thing"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_such_thing" in err
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("argv,owner", [
    (["fit", "--config", str(CRC_TASK), "--seg.n_runs", "1"], "segmentation"),
    (["fit", "--config", str(CONSEP_TASK), "--head.n_runs", "1"], "linear_probe"),
    (["fit", "--config", str(CONSEP_TASK), "--knn.k", "3"], "knn"),
])
def test_an_option_group_of_another_evaluation_names_its_owner(capsys, argv, owner):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    group = argv[3].split(".")[0]
    assert err.splitlines() == [f"evalkit: error: {group}.* belongs to the evaluation {owner}, not to this run's; "
                                f"pick it with --evaluation {owner} (if the task allows it)"]


def test_fit_help_of_a_segmentation_task_documents_seg_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(CONSEP_TASK), "--help"])
    assert info.value.code in (0, None)
    out = capsys.readouterr().out
    for option in ("--seg.crops_per_image", "--seg.decoder", "--seg.n_runs", "--seg.test_stride", "--evaluation"):
        assert option in out
    assert "--head." not in out and "--fewshot." not in out and "--knn." not in out


def test_registry_names_stand_for_class_paths_in_configs_and_flags(tmp_path, capsys):
    """The registries are the front door: ``class_path: consep`` in a task file still picks the dataset's
    evaluation (segmentation), and ``class_path: timm`` / ``--model torchvision`` build those adapters."""
    task = tmp_path / "task.yaml"
    task.write_text("task:\n  name: my_consep\n  dataset:\n    class_path: consep\n    init_args: {root: consep}\n"
                    "  train_split: train\n  val_split: test\n")
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(task), "--help"])
    out = capsys.readouterr().out
    assert "--seg.crops_per_image" in out and "--head." not in out

    model = tmp_path / "model.yaml"
    model.write_text("model:\n  class_path: timm\n  init_args: {model_name: resnet18}\n")
    argv = with_class_paths(["--config", str(CRC_TASK), "--config", str(model)])
    objects = build_parser("fit").instantiate_classes(build_parser("fit").parse_args(argv))
    assert type(objects.model) is TimmModel and objects.model.model_name == "resnet18"
    argv = with_class_paths(["--config", str(CRC_TASK), "--model", "torchvision", "--model.model_name", "resnet18",
                             "--task.dataset=image_csv"])
    assert argv[3] == "evalkit.models.torchvision_model.TorchvisionModel"
    assert argv[-1] == "--task.dataset=evalkit.data.image_folder.ImageCSV"


def test_evaluations_list_lists_the_three(capsys):
    assert main(["evaluations", "list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    listed = {line.split()[0]: line for line in lines}
    assert set(listed) == set(EVALUATIONS.names()) >= {"linear_probe", "knn", "segmentation"}
    assert "--head.*" in listed["linear_probe"] and "--fewshot.*" in listed["linear_probe"]
    assert "--seg.*" in listed["segmentation"] and "--knn.*" in listed["knn"]


def test_print_config_shows_overrides(capsys):
    parser = build_parser("fit")
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--config", str(CRC_TASK), "--head.n_runs", "3", "--head.protocol", "adamw_eva",
                           "--print_config"])
    assert info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["head"]["n_runs"] == 3
    assert printed["head"]["protocol"] == "adamw_eva"
    assert printed["task"]["name"] == "crc_demo"
    assert printed["task"]["dataset"]["init_args"]["classes"][0] == "ADI"


def test_print_config_through_main(capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", "--config", str(CRC_TASK), "--config", str(RESNET_RANDOM),
              "--model.init_args.model_name", "resnet18", "--print_config"])
    assert info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["model_name"] == "resnet18"
    assert printed["model"]["class_path"].endswith("TimmModel")


def test_print_config_of_a_comparison_prints_every_model(capsys):
    vit = CONFIGS / "models" / "vit_small_patch16_224_random.yaml"
    assert main(["predict_fit", "--config", str(CRC_TASK), "--config", str(RESNET_RANDOM), "--config", str(vit),
                 "--print_config"]) == 0
    printed = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [doc["model"]["init_args"]["model_name"] for doc in printed] == ["resnet50", "vit_small_patch16_224"]
    assert all(doc["task"]["name"] == "crc_demo" for doc in printed)


def test_command_line_override_wins_over_config_files(tmp_path):
    head = write_yaml(tmp_path / "head.yaml", {"head": {"n_runs": 2, "max_steps": 100}})
    cfg = build_parser("fit").parse_args(["--config", str(CRC_TASK), "--config", str(head), "--head.n_runs", "3"])
    assert cfg.head.n_runs == 3
    assert cfg.head.max_steps == 100  # untouched keys keep the file's value


def test_later_config_files_override_earlier_ones(tmp_path):
    first = write_yaml(tmp_path / "a.yaml", {"head": {"n_runs": 2, "seed": 11}, "embed": {"batch_size": 16}})
    second = write_yaml(tmp_path / "b.yaml", {"head": {"n_runs": 4}, "task": {"name": "renamed"}})
    cfg = build_parser("predict_fit").parse_args(
        ["--config", str(CRC_TASK), "--config", str(RESNET_RANDOM), "--config", str(first), "--config", str(second)])
    assert cfg.head.n_runs == 4
    assert cfg.head.seed == 11
    assert cfg.embed.batch_size == 16
    assert cfg.task.name == "renamed"
    assert cfg.task.dataset.init_args.root == "crc_demo"  # merged, not replaced
    swapped = build_parser("predict_fit").parse_args(
        ["--config", str(second), "--config", str(first), "--config", str(CRC_TASK), "--config", str(RESNET_RANDOM)])
    assert swapped.head.n_runs == 2
    assert swapped.task.name == "crc_demo"


def test_later_model_file_overrides_earlier_model_file():
    later = CONFIGS / "models" / "vit_small_patch16_224_random.yaml"
    cfg = build_parser("predict").parse_args(["--config", str(CRC_TASK), "--config", str(RESNET_RANDOM),
                                              "--config", str(later)])
    assert cfg.model.init_args.model_name == "vit_small_patch16_224"


ENV_CASES = [
    # variable, value, command, key in the parsed config, flag that overrides it, flag value
    ("N_RUNS", "7", "fit", "head.n_runs", 7, "--head.n_runs", "3", 3),
    ("MAX_STEPS", "123", "fit", "head.max_steps", 123, "--head.max_steps", "50", 50),
    ("BATCH_SIZE", "32", "fit", "head.batch_size", 32, "--head.batch_size", "8", 8),
    ("DATA_ROOT", "/somewhere/data", "predict", "data_root", "/somewhere/data", "--data_root", "/x", "/x"),
    ("EMBEDDINGS_ROOT", "/somewhere/emb", "predict", "embeddings_root", "/somewhere/emb", "--embeddings_root", "/y",
     "/y"),
    ("RESULTS_ROOT", "/somewhere/res", "fit", "results_root", "/somewhere/res", "--results_root", "/z", "/z"),
    ("NUM_WORKERS", "1", "predict", "embed.num_workers", 1, "--embed.num_workers", "0", 0),
    ("ACCELERATOR", "cpu", "predict", "embed.accelerator", "cpu", "--embed.accelerator", "gpu", "gpu"),
    ("DEVICES", "3", "predict", "embed.devices", "3", "--embed.devices", "2", "2"),
]


@pytest.mark.parametrize("var,value,command,key,expected,flag,flag_value,flag_expected", ENV_CASES,
                         ids=[c[0] for c in ENV_CASES])
def test_env_defaults_are_read_when_the_parser_is_built(monkeypatch, var, value, command, key, expected, flag,
                                                        flag_value, flag_expected):
    argv = ["--config", str(CRC_TASK)] + (["--config", str(RESNET_RANDOM)] if command == "predict" else [])
    monkeypatch.setenv(var, value)
    cfg = build_parser(command).parse_args(argv)
    got = cfg[key]
    assert (str(got) if var == "DEVICES" else got) == expected
    cfg = build_parser(command).parse_args(argv + [flag, flag_value])
    got = cfg[key]
    assert (str(got) if var == "DEVICES" else got) == flag_expected


def test_env_defaults_without_variables_are_the_documented_ones():
    cfg = build_parser("predict_fit").parse_args(["--config", str(CRC_TASK), "--config", str(RESNET_RANDOM)])
    assert cfg.head.n_runs == 5
    assert cfg.head.max_steps == 12_500
    assert cfg.head.batch_size is None
    assert cfg.head.protocol == "sgd_kaiko"


def test_config_file_beats_env_default(monkeypatch, tmp_path):
    monkeypatch.setenv("N_RUNS", "7")
    head = write_yaml(tmp_path / "head.yaml", {"head": {"n_runs": 2}})
    cfg = build_parser("fit").parse_args(["--config", str(CRC_TASK), "--config", str(head)])
    assert cfg.head.n_runs == 2


def test_bad_env_value_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setenv("N_RUNS", "many")
    assert main(["fit", "--config", str(CRC_TASK)]) != 0
    err = capsys.readouterr().err
    assert "evalkit: error:" in err and "N_RUNS" in err and "many" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command,options", [
    ("predict", ["--config", "--data_root", "--embeddings_root", "--task.name", "--task.dataset", "--model",
                 "--embed.batch_size", "--embed.num_workers", "--embed.accelerator", "--embed.devices",
                 "--embed.dtype", "DATA_ROOT", "EMBEDDINGS_ROOT"]),
    ("fit", ["--config", "--results_root", "--head.n_runs", "--head.protocol", "--head.max_steps", "--head.seed",
             "RESULTS_ROOT", "sgd_kaiko"]),
    ("predict_fit", ["--embed.batch_size", "--head.n_runs"]),
])
def test_help_exits_zero_and_documents_options(capsys, command, options):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code in (0, None)
    out = capsys.readouterr().out
    assert f"evalkit {command}" in out
    for option in options:
        assert option in out, f"{option} missing from `evalkit {command} --help`"


def test_usage_version_and_unknown_command(capsys):
    assert main([]) != 0
    assert "predict_fit" in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main(["embed_everything"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("evalkit: error:") and "embed_everything" in err


def test_unknown_flag_is_a_one_line_error(capsys):
    code = main(["fit", "--config", str(CRC_TASK), "--head.no_such_option", "1"])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("evalkit: error:") and len(err.splitlines()) == 1
    assert "no_such_option" in err


def test_debug_shows_the_traceback(capsys, tmp_path):
    assert main(["fit", "--config", str(CRC_TASK), "--results_root", str(tmp_path)]) != 0
    quiet = capsys.readouterr().err
    assert "Traceback" not in quiet and "needs a model" in quiet
    assert main(["fit", "--config", str(CRC_TASK), "--results_root", str(tmp_path), "--debug"]) != 0
    loud = capsys.readouterr().err
    assert "Traceback" in loud and "EvalkitError" in loud


def test_fit_before_predict_says_run_predict(capsys, tmp_path):
    code = main(["fit", "--config", str(CRC_TASK), "--config", str(RESNET_RANDOM),
                 "--embeddings_root", str(tmp_path / "emb"), "--results_root", str(tmp_path / "res")])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("evalkit: error:") and "evalkit predict" in err and str(tmp_path / "emb") in err
    assert not (tmp_path / "res").exists()


def test_predict_on_the_precomputed_task_is_an_error(capsys, tmp_path):
    code = main(["predict", "--config", str(PRECOMPUTED_TASK), "--config", str(RESNET_RANDOM),
                 "--embeddings_root", str(tmp_path / "emb")])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("evalkit: error:") and "fit" in err
