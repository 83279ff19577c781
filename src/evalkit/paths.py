"""Names that become path components (task, model, split names) and the folders they may name.

A name from a config or the command line is used as one folder or file name under
``EMBEDDINGS_ROOT`` or ``RESULTS_ROOT``. It is checked, never trusted: ``../x``, ``/abs`` or a name
with a path separator would write outside the configured roots. Names a user typed are refused in
one line; names evalkit derives from a file or model id (``hf-hub:org/model``) are encoded.
"""

from __future__ import annotations

import re
from pathlib import Path

from evalkit.errors import EvalkitError

ALLOWED = "letters, digits and . _ - + = @ (not starting with . or -, at most 128 characters)"
_SAFE = re.compile(r"[A-Za-z0-9_+=@][A-Za-z0-9._+=@-]{0,127}")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._+=@-]+")


def is_safe_name(name: str) -> bool:
    return isinstance(name, str) and _SAFE.fullmatch(name) is not None


def checked_name(name: str, what: str) -> str:
    """``name`` itself when it is one safe path component; else a one-line error naming it."""
    if not is_safe_name(name):
        raise EvalkitError(f"{what} {name!r} cannot be used as a folder name; use only {ALLOWED}")
    return name


def safe_name(name: str) -> str:
    """A derived name made into one safe path component: runs of other characters become ``_``."""
    encoded = _UNSAFE_CHARS.sub("_", name).lstrip(".-")[:128]
    return encoded or "_"


def inside(root: str | Path, *names: str) -> Path:
    """``root/names...``, each name checked to be one safe component, so the path cannot leave ``root``."""
    return Path(root).joinpath(*(checked_name(name, "name") for name in names))
