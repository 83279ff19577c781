"""Environment-variable defaults, as in eva: each one is only a default that a config key overrides.

They are read when the command line parser is built (not at import), so that ``--help``
shows the value in force.
"""

from __future__ import annotations

import os

from evalkit.errors import EvalkitError

ENV_DEFAULTS: dict[str, str] = {
    "DATA_ROOT": "data",
    "EMBEDDINGS_ROOT": "data/embeddings",
    "RESULTS_ROOT": "results/runs",
    "N_RUNS": "5",
    "MAX_STEPS": "12500",
    "BATCH_SIZE": "",  # empty: the protocol's own batch size
    "NUM_WORKERS": "",  # empty: min(4, cores)
    "ACCELERATOR": "auto",
    "DEVICES": "1",
}


def env_str(name: str) -> str:
    return os.environ.get(name, ENV_DEFAULTS[name])


def env_int(name: str) -> int | None:
    """The integer value of ``name``, or ``None`` when it is empty."""
    value = env_str(name).strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise EvalkitError(f"environment variable {name} must be an integer, got '{value}'") from None
