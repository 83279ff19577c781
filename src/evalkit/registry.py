"""A tiny typed registry: one per extension point (model adapters, datasets, protocols).

Entries register themselves when the module that defines them is imported. A registry that
names its ``package`` imports those modules on its first lookup, not when it is imported:
the command line imports every registry, and ``evalkit --version`` must not wait for torch.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, Iterator, Sequence, TypeVar

from evalkit.errors import EvalkitError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps short names to objects; raises on duplicates and on unknown names with the known ones.

    Args:
        kind: what an entry is, for messages (``dataset``, ``model adapter``).
        package: the package whose modules register the entries; ``None``: entries are added by hand.
        modules: which modules of ``package`` register entries (default: every one of them).
    """

    def __init__(self, kind: str, package: str | None = None, modules: Sequence[str] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._package = package
        self._modules = modules
        self._loaded = package is None

    def load(self, name: object = None) -> None:
        """Import the modules that register entries, once: the module called ``name`` alone when there is
        one and it registers ``name`` (``evaluations/knn.py`` registers ``knn``), else all of them."""
        if self._loaded:
            return
        modules = self._module_names()
        if name in modules:
            importlib.import_module(f"{self._package}.{name}")
            if name in self._items:
                return
        self._loaded = True  # first: a module that looks an entry up while it is imported must not recurse
        try:
            for module in modules:
                importlib.import_module(f"{self._package}.{module}")
        except BaseException:
            self._loaded = False
            raise

    def _module_names(self) -> list[str]:
        if self._modules is not None:
            return list(self._modules)
        return [m.name for m in pkgutil.iter_modules(importlib.import_module(str(self._package)).__path__)]

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = obj

    def get(self, name: str) -> T:
        self.load(name)
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise EvalkitError(f"unknown {self.kind} '{name}'; known: {known}") from None

    def names(self) -> list[str]:
        self.load()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        self.load()
        return iter(sorted(self._items.items()))

    def __contains__(self, name: object) -> bool:
        self.load(name)
        return name in self._items

    def __len__(self) -> int:
        self.load()
        return len(self._items)
