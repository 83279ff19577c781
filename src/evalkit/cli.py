"""``evalkit`` command line: jsonargparse over typed configs, one parser per command.

Config files compose (a task file + a model file), later files and flags override
earlier ones, and environment variables only supply defaults (DESIGN.md).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from argparse import ArgumentError
from typing import TYPE_CHECKING, Any, Callable

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from evalkit import __version__
from evalkit.data import DATASETS
from evalkit.env import env_int, env_str, eva_data_root_warning, eva_warning, model_from_env
from evalkit.errors import EvalkitError, one_line
from evalkit.evaluations import EVALUATIONS, get_evaluation
from evalkit.models import MODELS
from evalkit.preparse import (chosen_evaluation, model_addresses, model_positions, route_addressed, split_model_flags,
                              with_class_paths, without_models)
from evalkit.stats.config import StatsConfig

if TYPE_CHECKING:
    from evalkit.evaluations.base import Evaluation

# Only light modules above (tests/test_startup.py checks it): `evalkit --version` and `--help` answer in a
# fraction of a second. The config classes of the data, model and evaluation (torch) are imported by the
# parsers of the commands that take them, and the stages by the commands that run them.

COMMANDS = {
    "predict": "Embed a task's images with a model into the HDF5 cache.",
    "fit": "Run the task's evaluation on cached features and write the run record (results.json).",
    "predict_fit": "predict, then fit; with several models (config files or --model NAME), compare them in one table.",
    "report": "Tables (Markdown, CSV, HTML) and plots of models x tasks from results.json files.",
    "regress": "Compare results with a baseline (earlier run or published CSV); exit 1 on any regression.",
    "pretrain": "LeJEPA self-supervised pretraining on tiles and whole-slide images (`--config configs/pretrain/*.yaml`).",
    "sweep": "Evaluate every kept checkpoint of a pretraining run with predict_fit: one table of loss, RankMe, ODCorr "
             "and probe accuracy.",
    "models": "List the model adapters and presets (`evalkit models list [--format table|csv|markdown]`).",
    "evaluations": "List the evaluations and their option groups (`evalkit evaluations list`).",
    "data": "Check a task's dataset against the official layout and counts (`evalkit data check`).",
}


def build_parser(command: str, evaluation: type[Evaluation] | None = None) -> ArgumentParser:
    """The parser of one command; its ``--help`` documents every option.

    ``predict``, ``fit`` and ``predict_fit`` carry the option groups of ``evaluation`` only (the task's
    default evaluation unless ``--evaluation`` picks another, see :func:`chosen_evaluation`).
    """
    parser = ArgumentParser(prog=f"evalkit {command}", description=COMMANDS[command], exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file; repeat to merge several in order")
    parser.add_argument("--debug", action="store_true", help="print full tracebacks on errors")
    if command == "report":
        parser.add_argument("results", nargs="+", type=str, help="results folders or results.json files")
        parser.add_argument("--output_dir", type=str | None, default=None, help="where report.md/.csv go (default: the first results folder)")
        parser.add_argument("--metric", type=str | None, default=None,
                            help="metric shown in the table (default: the runs' primary metric)")
        parser.add_argument("--plots", type=bool, default=True, help="also write the PNG plots")
        parser.add_argument("--html", action="store_true",
                            help="also write report.html: one self-contained page with tables, plots and provenance")
        parser.add_class_arguments(StatsConfig, "stats", help="confidence intervals and significance tests")
        return parser
    if command == "regress":
        parser.add_argument("results", nargs="+", type=str, help="results folders or results.json files to check")
        parser.add_argument("--baseline", type=str, required=True, help="earlier results (folder/json) or a CSV")
        parser.add_argument("--metrics", type=list[str] | str, default=["balanced_accuracy"],
                            help="metrics compared: one name or a list, e.g. dice or '[balanced_accuracy, f1_macro]'")
        parser.add_argument("--tolerance", type=float, default=0.01, help="allowed drop in absolute points")
        parser.add_argument("--std_multiple", type=float, default=2.0, help="allowed drop in baseline stds")
        parser.add_argument("--allow_missing", type=bool, nargs="?", const=True, default=False,
                            help="a baseline entry without a result passes (bare flag: true)")
        parser.add_argument("--allow_other_model", type=bool, nargs="?", const=True, default=False,
                            help="compare with a baseline run of another model (other fingerprint) anyway (bare flag: true)")
        parser.add_class_arguments(StatsConfig, "stats", help="the paired test between two evalkit runs")
        return parser
    if command in ("models", "evaluations"):
        parser.add_argument("action", choices=["list"], help="what to do")
        if command == "models":
            parser.add_argument("--format", choices=["table", "csv", "markdown"], default="table",
                                help="table (120 columns), csv or markdown")
        return parser
    if command == "pretrain":
        from jsonargparse import lazy_instance

        from evalkit.pretrain.lejepa_loss import LeJEPALoss
        from evalkit.pretrain.module import ModelConfig, OptimConfig
        from evalkit.pretrain.objectives import Objective, objective_names
        from evalkit.pretrain.run import DataConfig, TrainerConfig
        from evalkit.pretrain.views import ViewsConfig

        for cls, key, text in ((ModelConfig, "model", "backbone and projector"), (ViewsConfig, "views", "multi-crop views"),
                               (DataConfig, "data", "tiles and whole-slide images"),
                               (OptimConfig, "optim", "AdamW and its schedule"),
                               (TrainerConfig, "trainer", "Lightning Trainer, checkpoints, logging")):
            parser.add_class_arguments(cls, key, help=text)
        parser.add_subclass_arguments(Objective, "objective", default=lazy_instance(LeJEPALoss), required=False,
                                      help=f"the pretraining objective (registered: {', '.join(objective_names())}; "
                                           "e.g. --objective SimCLRLoss --objective.temperature 0.2)")
        return parser
    if command == "sweep":
        from evalkit.pretrain.sweep import add_arguments

        add_arguments(parser)
        return parser
    from evalkit.embed.config import PRECISIONS, EmbedConfig
    from evalkit.models import ModelSpec
    from evalkit.task import Task

    # jsonargparse looks a class a config names (``class_path: ImageFolder``) up among the subclasses imported,
    # and lists them in --help: every dataset and model adapter must be.
    DATASETS.load()
    MODELS.load()
    if command == "data":
        parser.add_argument("action", choices=["check"], help="what to do")
        parser.add_argument("--data_root", type=str, default=env_str("DATA_ROOT"), help="where datasets live (DATA_ROOT)")
        parser.add_argument("--decode", type=bool, default=True, help="decode every image (and mask) to find unreadable files")
        parser.add_argument("--max_image_pixels", type=int, default=EmbedConfig.max_image_pixels,
                            help="largest image decoded, in pixels; a larger one is reported unreadable")
        parser.add_class_arguments(Task, "task", help="the task whose dataset is checked (configs/tasks/*.yaml)")
        return parser
    parser.add_argument("--data_root", type=str, default=env_str("DATA_ROOT"), help="where datasets live (DATA_ROOT)")
    parser.add_argument("--embeddings_root", type=str, default=env_str("EMBEDDINGS_ROOT"),
                        help="where the embedding cache lives (EMBEDDINGS_ROOT)")
    parser.add_class_arguments(Task, "task", help="the task: dataset and splits (configs/tasks/*.yaml)")
    parser.add_subclass_arguments(ModelSpec, "model", required=command != "fit",
                                  help="the model: a preset name (--model uni2-h), or an adapter and its arguments "
                                       "(configs/models/*.yaml); `evalkit models list` shows both")
    parser.add_argument("--evaluation", type=str | None, default=None,
                        help="which of the task's evaluations runs (default: the first of task.evaluations); "
                             "`evalkit evaluations list` shows them")
    evaluation = evaluation or get_evaluation("linear_probe")
    groups = evaluation.options if command != "predict" else {g: evaluation.options[g] for g in evaluation.predict_options}
    for group, (cls, text) in groups.items():
        parser.add_class_arguments(cls, group, help=f"{evaluation.name}: {text}")
    if command in ("predict", "predict_fit"):
        parser.add_class_arguments(EmbedConfig, "embed", help="how the embedding stage runs")
        batch_size = env_int("PREDICT_BATCH_SIZE")  # eva's name for the embedding batch size
        if batch_size is not None:
            parser.set_defaults({"embed.batch_size": batch_size})
    if command == "fit":
        parser.add_argument("--precision", choices=list(PRECISIONS), default="fp32",
                            help="fit the cache embedded with this --embed.precision (each precision has its own)")
    if command in ("fit", "predict_fit"):
        parser.add_argument("--results_root", type=str, default=env_str("RESULTS_ROOT"),
                            help="where results.json files go (RESULTS_ROOT)")
        parser.add_class_arguments(StatsConfig, "stats", help="confidence intervals and significance tests")
    return parser


def _resolved_config(parser: ArgumentParser, cfg: Namespace) -> dict[str, Any]:
    return yaml.safe_load(parser.dump(cfg, skip_none=False, skip_check=True)) or {}


def _init_options(class_path: str) -> list[str]:
    """The keyword options a config class accepts, for an error message."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        parameters = inspect.signature(cls).parameters.values()
    except (ImportError, AttributeError, TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _wrong_value(message: str) -> tuple[str, str, str] | None:
    """``(option, expected type, value given)`` when jsonargparse refused a value of an option of a config class
    (the innermost class of the message) for its type."""
    problems = list(re.finditer(r"Problem with given class_path '[\w.]+':\s*Parser key \"(\w+)\":", message))
    if not problems:
        return None
    segment = message[problems[-1].end():]
    types = [t for t in re.findall(r"Expected a (<class '[\w.]+'>|typing\.Literal\[[^\]]*\])", segment)
             if "NoneType" not in t]
    got = re.search(r"(?:Got value|Given value): (.*)", segment)
    if not types or got is None:
        return None
    shown = [re.sub(r"<class '(?:builtins\.)?([\w.]+)'>", r"\1", t) for t in types]
    shown = ["one of " + ", ".join(re.findall(r"'([^']*)'", t)) if t.startswith("typing.Literal") else t for t in shown]
    return problems[-1].group(1), " or ".join(shown), got.group(1).strip()


def _parse_error(command: str, message: str, evaluation: type[Evaluation] | None = None) -> EvalkitError:
    """jsonargparse's multi-line complaint as one line that says what to do."""
    ours = re.search(r"evalkit\.errors\.EvalkitError: (.+)", message)
    if ours:  # a config class refused a value while jsonargparse built it; its own message says it best
        return EvalkitError(ours.group(1).strip())
    unknown = re.findall(r"Option '(\w+)' is not accepted", message)
    owners = re.findall(r"Problem with given class_path '([\w.]+)'", message)
    if unknown and owners:  # a misspelt option of a model, dataset or preprocessing class: the innermost one
        options = _init_options(owners[-1])
        accepted = f"; its options: {', '.join(options)}" if options else ""
        return EvalkitError(f"{owners[-1]} has no option '{unknown[-1]}'{accepted} (see `evalkit {command} --help`)")
    foreign = re.search(r"unrecognized arguments: --(\w+)\.", message)
    if foreign and foreign.group(1) == "embed" and command == "fit":
        return EvalkitError("--embed.* is read by `evalkit predict`, not `evalkit fit`; fit the cache of another "
                            "precision with --precision (fp32, bf16, fp16)")
    own = evaluation.options if evaluation is not None else {}
    if foreign and foreign.group(1) in own and command == "predict":  # e.g. --head.* is fit's
        return EvalkitError(f"--{foreign.group(1)}.* is read by `evalkit fit`, not `evalkit predict`; pass it to fit "
                            "or predict_fit")
    if foreign and foreign.group(1) not in own:  # an option group of another evaluation
        owners = [name for name, cls in EVALUATIONS.items() if foreign.group(1) in cls.options]
        if owners:
            return EvalkitError(f"--{foreign.group(1)}.* belongs to the evaluation {' / '.join(owners)}, not to this "
                                f"run's; pick it with --evaluation {owners[0]} (if the task allows it)")
    key = re.search(r'Parser key "([\w.]+)"', message)  # the outermost: model, task.dataset
    required = re.search(r"the following arguments are required: ([\w., ]+)", message)
    if required and owners and key:  # a model or dataset class without one of its required arguments
        first = required.group(1).split(",")[0].strip()
        return EvalkitError(f"{owners[-1]} needs {required.group(1).strip()}: set it in the config or with "
                            f"--{key.group(1)}.{first} (see `evalkit {command} --help`)")
    wrong = _wrong_value(message)
    if wrong and owners and key:  # a value of the wrong type for an option of a model or dataset class
        inner, expected, got = wrong
        nested = re.findall(r"""NestedArg\(key=['"]([\w.]+)['"]""", message)  # the outermost, whole key comes last
        return EvalkitError(f"--{key.group(1)}.{nested[-1] if nested else inner}: expected {expected}, got '{got}' "
                            f"({owners[0]}; see `evalkit {command} --help`)")
    lines = [line.strip(" -") for line in message.splitlines() if line.strip()]
    given = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Given value:")), None)
    if given is not None and key and key.group(1) in ("model", "task.dataset"):
        registry = MODELS if key.group(1) == "model" else DATASETS
        named = re.search(r"""['"]class_path['"]: ['"]([^'"]+)['"]""", given)  # the value is a whole {class_path: ...}
        classes = ", ".join(f"{name} ({cls.__module__.rsplit('.', 1)[0]}.{cls.__name__})" for name, cls in registry.items())
        kind, expected = ("model", "a model preset (`evalkit models list`), or an adapter's") if registry is MODELS \
            else (registry.kind, "a")
        return EvalkitError(f"unknown {kind} '{named.group(1) if named else given}' for --{key.group(1)}; "
                            f"expected {expected} registry name or class_path: {classes}")
    return EvalkitError(f"{'; '.join(lines[:2])} (see `evalkit {command} --help`)")


RUN_COMMANDS = ("predict", "fit", "predict_fit")


def _parse(command: str, argv: list[str]) -> tuple[ArgumentParser, Namespace, type[Evaluation] | None]:
    """The parser of ``command`` and ``argv`` parsed by it; jsonargparse's complaint as one line."""
    # The evaluation is read from the config files themselves (registry names included), before
    # with_class_paths passes the ones that name a registry entry or preset on as YAML text.
    evaluation_cls = chosen_evaluation(argv) if command in RUN_COMMANDS else None
    parser = build_parser(command, evaluation_cls)
    try:
        cfg = parser.parse_args(with_class_paths(argv))
    except ArgumentError as exc:
        raise _parse_error(command, str(exc), evaluation_cls) from None
    return parser, cfg, evaluation_cls


@dataclass
class _Run:
    """A predict, fit or predict_fit run parsed and its config objects built: everything but the work."""

    command: str
    cfg: Namespace
    objects: Namespace
    evaluation: Evaluation
    config: dict[str, Any]  # the resolved config, saved beside results.json


def _prepare(command: str, argv: list[str]) -> _Run:
    parser, cfg, evaluation_cls = _parse(command, argv)
    assert evaluation_cls is not None
    config = _resolved_config(parser, cfg)
    objects = parser.instantiate_classes(cfg)
    evaluation = evaluation_cls(**{group: objects[group] for group in evaluation_cls.options if group in objects})
    return _Run(command, cfg, objects, evaluation, config)


def _execute(run: _Run, log: Callable[[str], None]) -> Path | None:
    """Do the work of a prepared run; returns the results.json it wrote, if any."""
    from evalkit import pipeline
    from evalkit.runtime import is_global_zero

    objects, cfg = run.objects, run.cfg
    timing: dict[str, Any] = {}
    try:
        if run.command in ("predict", "predict_fit"):
            _warn(eva_data_root_warning(cfg.data_root, objects.task.dataset, objects.task.train_split))
            start = time.perf_counter()
            caches = pipeline.predict(objects.task, objects.model, run.evaluation, cfg.data_root, cfg.embeddings_root,
                                      objects.embed, log)
            timing["embed_s"] = round(time.perf_counter() - start, 3)
            timing["embed_reused"] = all(c.reused for c in caches)
            if not is_global_zero():  # other DDP ranks only help embedding
                return None
        if run.command in ("fit", "predict_fit"):
            precision = objects.embed.precision if run.command == "predict_fit" else cfg.precision
            return pipeline.fit(objects.task, objects.model, run.evaluation, cfg.embeddings_root, cfg.results_root,
                                objects.stats, run.config, timing, log, precision)
        return None
    except KeyboardInterrupt:
        raise EvalkitError("interrupted; rerun the same command to resume from the cache") from None


def _run_single(command: str, argv: list[str], log: Callable[[str], None]) -> Path | None:
    """Run one command; returns the results.json it wrote, if any."""
    if command in RUN_COMMANDS:
        return _execute(_prepare(command, argv), log)
    parser, cfg, _ = _parse(command, argv)
    try:
        if command == "report":
            from evalkit.report import write_report

            output = cfg.output_dir or (cfg.results[0] if Path(cfg.results[0]).is_dir() else ".")
            stats = parser.instantiate_classes(cfg).stats
            print(write_report(cfg.results, output, cfg.metric, stats, plots=cfg.plots, html=cfg.html, log=log),
                  end="")
            return None
        if command == "regress":
            from evalkit.report.regress import regress

            metrics = [cfg.metrics] if isinstance(cfg.metrics, str) else cfg.metrics
            table, passed = regress(cfg.results, cfg.baseline, metrics, cfg.tolerance, cfg.std_multiple,
                                    parser.instantiate_classes(cfg).stats, cfg.allow_missing,
                                    cfg.allow_other_model)
            print(table, end="")
            if not passed:
                raise EvalkitError("results regressed against the baseline or could not be judged (table above)")
            return None
        if command == "pretrain":
            from evalkit.pretrain.run import run_pretraining

            objects = parser.instantiate_classes(cfg)
            checkpoints = run_pretraining(objects.model, objects.views, objects.data, objects.optim, objects.trainer,
                                          objects.objective, log)
            log(f"checkpoints in {checkpoints}; evaluate one with configs/models/lejepa_*.yaml")
            return None
        if command == "sweep":
            from evalkit.pretrain.sweep import run

            run(cfg, log)
            return None
        if command == "models":
            from evalkit.models.listing import models_listing

            print(models_listing(cfg.format), end="")
            return None
        if command == "evaluations":
            for name, cls in EVALUATIONS.items():
                doc = (cls.__doc__ or "").strip().splitlines()[0]
                groups = ", ".join(f"--{group}.*" for group in cls.options)
                print(f"{name:14s} {groups:28s} {doc}")
            return None
        # data check
        from evalkit.data.check import check_task

        task = parser.instantiate_classes(cfg).task
        _warn(eva_data_root_warning(cfg.data_root, task.dataset, task.train_split))
        counts, unreadable = check_task(task, cfg.data_root, cfg.decode, print, cfg.max_image_pixels)
        if unreadable:
            raise EvalkitError(f"{len(unreadable)} unreadable file(s) in {cfg.task.name}: {unreadable[0]}")
        if counts:
            raise EvalkitError(f"{len(counts)} count(s) in {cfg.task.name} differ from the official ones, first "
                               f"{counts[0]}; pass --task.dataset.allow_subset true if this is a subset on purpose")
        print("ok")
        return None
    except KeyboardInterrupt:
        raise EvalkitError("interrupted; rerun the same command to resume from the cache") from None


# ---- several models: predict_fit compares them ----

def _compare(argv: list[str], log: Callable[[str], None]) -> None:
    """predict_fit over several models (config files that set ``model``, ``--model NAME`` flags), in the order
    given, then one comparison table.

    A ``--model.KEY`` flag is refused: it would apply to every model. ``--models.NAME.KEY`` sets KEY of
    the model NAME (its config file's stem or its ``--model`` value). Every model's config is parsed and
    its objects built before the first embedding starts, so that a bad setting of the last model stops
    the command before any work, in one line that names the model.
    """
    from evalkit.report import write_report

    argv, loose, addressed = split_model_flags(argv)
    positions = model_positions(argv)
    addresses = [model_addresses(argv, position) for position in positions]
    if loose:
        key = loose[0][0].partition("=")[0][len("--model."):].removeprefix("init_args.")
        names = ", ".join(dict.fromkeys(names[-1] for names in addresses))
        raise EvalkitError(f"--model.{key}: this predict_fit compares {len(positions)} models; say which one with "
                           f"--models.<name>.{key} (<name>: {names}), or set it in that model's YAML file")
    routed = route_addressed(addressed, addresses)
    printing = [arg for arg in argv if arg == "--print_config" or arg.startswith("--print_config=")]
    argv = [arg for arg in argv if arg not in printing]
    argvs = [without_models(argv, [p for p in positions if p != keep]) + flags
             for keep, flags in zip(positions, routed)]
    runs = []
    for names, model_argv in zip(addresses, argvs):
        try:
            if printing:  # parsed only, as a single --print_config is
                _parse("predict_fit", model_argv)
                continue
            run = _prepare("predict_fit", model_argv)
            missing = run.objects.model.missing_weights()  # predict would stop there, after the models before it
            if missing:
                raise EvalkitError(f"weights not found: {missing[0]}; {run.objects.model.missing_weights_hint}")
            runs.append(run)
        except Exception as exc:
            cause = _user_error(exc)
            if cause is None:
                raise
            # its options are set as --models.NAME.KEY here, not --model.KEY
            raise EvalkitError(f"model {names[-1]}: " + one_line(cause).replace("--model.", f"--models.{names[-1]}."))\
                from None
    if printing:  # one YAML document per model
        for i, model_argv in enumerate(argvs):
            print("---" if i else "", end="\n" if i else "")
            try:
                _parse("predict_fit", model_argv + printing)
            except SystemExit as exc:  # jsonargparse exits after printing
                if exc.code not in (0, None):
                    raise
        return
    paths = [_execute(run, log) for run in runs]
    first = runs[0]
    output = Path(first.cfg.results_root) / first.objects.task.name
    print()
    written = [str(p) for p in paths if p]
    print(write_report(written, output, first.evaluation.primary_metric, stats=first.objects.stats, log=log), end="")


def _check_models(command: str, argv: list[str]) -> None:
    """Refuse, in one line, what addresses several models in a run that has one."""
    addressed = next((arg for arg in argv if arg.startswith("--models.")), None)
    if addressed is not None:
        raise EvalkitError(f"{addressed.partition('=')[0]}: --models.<name>.KEY addresses one model of a predict_fit "
                           "comparison; with one model, use --model.KEY")
    flags = [position for position in model_positions(argv)
             if argv[position].startswith("--model=") or argv[position - 1] == "--model"]
    if command in ("predict", "fit") and len(flags) > 1:
        named = " and ".join(f"--model {argv[p].partition('=')[2] or argv[p]}" for p in flags[:2])
        raise EvalkitError(f"`evalkit {command}` runs one model, got {named}; compare several with `evalkit "
                           f"predict_fit`, or run {command} once per model")


def _usage() -> str:
    lines = [f"evalkit {__version__}: evaluate pathology foundation models", "", "usage: evalkit COMMAND [options]", ""]
    lines += [f"  {name:12s} {text}" for name, text in COMMANDS.items()]
    lines += ["", "`evalkit COMMAND --help` documents every option of a command."]
    return "\n".join(lines)


def _progress(message: str) -> None:
    """A progress line on stderr, from the first process only: the extra ranks of multi-device
    embedding (started by Lightning with LOCAL_RANK/NODE_RANK set) would repeat every line."""
    if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
        print(message, file=sys.stderr, flush=True)


def _user_error(exc: BaseException) -> BaseException | None:
    """The EvalkitError behind ``exc``: in its chain of causes (jsonargparse building a config class), or
    in its message (a DataLoader worker's re-raised traceback)."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, EvalkitError):
            return link
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return exc if "EvalkitError" in str(exc) else None


_warned: set[str] | None = None  # the warnings this command has printed (sweep runs main inside main)


def _warn(line: str | None) -> None:
    """A warning on stderr, once per command."""
    if line and (_warned is None or line not in _warned):
        if _warned is not None:
            _warned.add(line)
        _progress(f"evalkit: warning: {line}")


def main(argv: list[str] | None = None) -> int:
    global _warned
    outer = _warned is None
    if outer:
        _warned = set()
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    finally:
        if outer:
            _warned = None


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(__version__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"evalkit: error: unknown command '{command}'; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    debug = "--debug" in rest
    log = _progress
    try:
        if command in (*RUN_COMMANDS, "data"):
            _warn(eva_warning())
        if command in RUN_COMMANDS and not model_positions(rest):
            named = model_from_env()  # eva's MODEL_NAME, when it names a preset
            rest = ["--model", named, *rest] if named else rest
        if command == "predict_fit" and len(model_positions(rest)) > 1:
            _compare(rest, log)
        else:
            if command in RUN_COMMANDS:
                _check_models(command, rest)
            _run_single(command, rest, log)
    except BrokenPipeError:  # the reader of a pipe (`| head`) left: nothing more to say
        sys.stderr.close()
        return 0
    except EvalkitError as exc:
        if debug:
            traceback.print_exc()
        print(f"evalkit: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # an error a user can hit arrives re-wrapped from a worker or from jsonargparse
        cause = _user_error(exc)
        if cause is not None and not debug:
            print(f"evalkit: error: {one_line(cause)}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
