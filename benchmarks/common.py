"""What every benchmark script prints beside its figures: the machine's load, and a wall-clock timer."""

from __future__ import annotations

import os
import time
from typing import Any, Callable


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages (``a / b / c``): these machines are shared, and a figure is read
    with the load it was taken under."""
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and its wall time in seconds."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
