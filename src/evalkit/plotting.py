"""matplotlib for files, never a window: evalkit runs on headless CI machines and servers.

Every figure evalkit writes gets ``pyplot`` from here, so the backend is chosen in one place and
matplotlib is imported only by the commands that draw.
"""

from __future__ import annotations

from types import ModuleType


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend (PNG output, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
