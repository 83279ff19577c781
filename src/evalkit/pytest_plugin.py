"""A pytest plugin so that a project's own test suite fails when its model's results regress.

Installed with evalkit (entry point ``pytest11``), it gives every pytest session the fixture
``evalkit_regress`` and the marker ``evalkit``. A test calls the fixture with new results and
an accepted baseline; the test fails with the pass/fail table of :mod:`evalkit.report.regress`
as its message (no traceback), exactly as ``evalkit regress`` would have exited 1::

    @pytest.mark.evalkit
    def test_crc_probe_did_not_regress(evalkit_regress):
        evalkit_regress("results/runs/crc", baseline="baselines/crc", tolerance=0.01)

``allow_other_model=True`` compares results with a baseline run of other weights (another
model fingerprint), as after a deliberate model update; otherwise that is refused.

The marker lets CI select these tests (``pytest -m evalkit``) after the step that produced
the results, and leave them out of the quick unit-test run (``pytest -m "not evalkit"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pytest

from evalkit.errors import EvalkitError
from evalkit.stats.config import StatsConfig


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "evalkit: checks evalkit results against a baseline (select with -m evalkit)")


@pytest.fixture
def evalkit_regress() -> Callable[..., str]:
    """``check(results, baseline, ...)``: returns the table when nothing regressed, else fails the test."""

    def check(results: str | Path | Sequence[str | Path], baseline: str | Path,
              metrics: Sequence[str] = ("balanced_accuracy",), tolerance: float = 0.01, std_multiple: float = 2.0,
              allow_missing: bool = False, stats: StatsConfig | None = None, allow_other_model: bool = False) -> str:
        from evalkit.report.regress import regress

        paths = [str(results)] if isinstance(results, (str, Path)) else [str(p) for p in results]
        try:
            table, passed = regress(paths, str(baseline), list(metrics), tolerance, std_multiple,
                                    stats or StatsConfig(), allow_missing, allow_other_model)
        except EvalkitError as exc:
            pytest.fail(f"evalkit regress: {exc}", pytrace=False)
        if not passed:
            pytest.fail(f"results regressed against {baseline}:\n{table}", pytrace=False)
        return table

    return check
