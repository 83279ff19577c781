"""Start-up time of the command line: what a user waits for before any work starts.

Each command runs in a fresh process, ``--repeats`` times, timed from outside (wall clock);
the table gives the minimum and the median. ``python -c "import torch"`` is the floor of every
command that touches tensors. The warm-cache ``predict_fit`` (the demo task, one model, the
default 5-run linear probe) is run once first to fill its cache; its line also gives the
``fit_s`` that results.json records (the probe fit itself), and the rest: start-up, parsing,
the cache checks and writing the run.

    .venv/bin/python benchmarks/startup.py                # about 1 minute on 2 cores
    .venv/bin/python benchmarks/startup.py --repeats 3 --no-predict-fit
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = ["--config", "configs/tasks/crc_demo.yaml", "--config", "configs/models/vit_small_patch16_224_random.yaml"]
EVALKIT_ENV = ("DATA_ROOT", "EMBEDDINGS_ROOT", "RESULTS_ROOT", "N_RUNS", "MAX_STEPS", "BATCH_SIZE", "NUM_WORKERS",
               "ACCELERATOR", "DEVICES")


def _evalkit() -> list[str]:
    """The installed ``evalkit`` script beside this interpreter (what users run), else ``python -m evalkit``."""
    script = Path(sys.executable).with_name("evalkit")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "evalkit"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in EVALKIT_ENV}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def _run(argv: list[str]) -> tuple[float, str]:
    """Wall seconds of one run of ``argv`` from the repository root, and its stderr; a failure stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, done.stderr


def _timing(stderr: str) -> dict[str, float]:
    """The ``timing`` block of the results.json whose path the run's last line names."""
    found = re.findall(r"-> (\S+results\.json)", stderr)
    if not found:
        raise SystemExit(f"no results.json in the output of predict_fit:\n{stderr[-2000:]}")
    return json.loads(Path(found[-1]).read_text())["timing"]


def _row(name: str, seconds: list[float], note: str = "") -> str:
    return f"| {name} | {min(seconds):.2f} | {statistics.median(seconds):.2f} | {note} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command")
    parser.add_argument("--no-predict-fit", dest="predict_fit", action="store_false",
                        help="leave out the warm-cache demo predict_fit")
    args = parser.parse_args()

    evalkit = _evalkit()
    commands = {
        "`evalkit --version`": [*evalkit, "--version"],
        "`evalkit --help`": [*evalkit, "--help"],
        "`evalkit fit --help`": [*evalkit, "fit", "--help"],
        '`python -c "import torch"` (floor)': [sys.executable, "-c", "import torch"],
    }
    load_before = os.getloadavg()
    rows = []
    for name, argv in commands.items():
        rows.append(_row(name, [_run(argv)[0] for _ in range(args.repeats)]))

    if args.predict_fit:
        with tempfile.TemporaryDirectory(prefix="evalkit-startup-") as tmp:
            argv = [*evalkit, "predict_fit", *DEMO, "--embeddings_root", f"{tmp}/emb", "--results_root", f"{tmp}/runs"]
            _run(argv)  # fills the cache
            totals, fits, embeds = [], [], []
            for _ in range(args.repeats):
                seconds, stderr = _run(argv)
                timing = _timing(stderr)
                if not timing.get("embed_reused"):
                    raise SystemExit("the warm-cache predict_fit embedded again: its cache was not reused")
                totals.append(seconds)
                fits.append(timing["fit_s"])
                embeds.append(timing["embed_s"])
            rest = [total - fit for total, fit in zip(totals, fits)]
            rows.append(_row("warm `predict_fit`, demo task (end to end)", totals))
            rows.append(_row("  of which the probe fit (`fit_s`)", fits))
            rows.append(_row("  of which the cache check (`embed_s`)", embeds))
            rows.append(_row("  start-up and stages' overhead (total - `fit_s`)", rest))

    load_after = os.getloadavg()
    source = subprocess.run([sys.executable, "-c", "import evalkit; print(evalkit.__file__)"], cwd=REPO, env=_env(),
                            capture_output=True, text=True).stdout.strip()
    print(f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}; "
          f"{args.repeats} runs each, fresh processes; evalkit from {Path(source).parent}")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}\n")
    print("| command | min (s) | median (s) | |")
    print("|---|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
