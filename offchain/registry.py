"""A registry of implementations by name, with built-ins imported on first use.

The extension points of a round (:mod:`offchain.diffusion.backend`'s model backends,
:mod:`offchain.attribution.base`'s attributors) each keep one :class:`Registry`. A built-in is
registered as ``"<module>:<Class>"`` and imported when first asked for, so the registries can be
imported without torch (the CLI's start-up stays fast); a class defined elsewhere (a test, a
plug-in) is registered with ``@registry.register("<name>")``. Generic and dependency-free.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from offchain.errors import ConfigError

__all__ = ["Registry", "lazy_attributes"]

T = TypeVar("T")
_C = TypeVar("_C", bound=type)


class Registry(Generic[T]):
    """Named classes of one kind (``kind`` names it in errors, e.g. ``"model backend"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, type[T] | str] = {}

    def register(self, name: str, target: str | None = None) -> Callable[[_C], _C]:
        """Register under ``name``: ``register(name, "<module>:<Class>")`` a built-in imported
        on first :meth:`get`; ``@register(name)`` on a class, that class.

        Raises:
            ConfigError: ``name`` is already registered to something else.
        """

        def _add(entry: _C) -> _C:
            self._add(name, entry)
            return entry

        if target is not None:
            self._add(name, target)
        return _add

    def _add(self, name: str, entry: type[T] | str) -> None:
        known = self._entries.get(name)
        if known is not None and known != entry:
            raise ConfigError(f"{self.kind} {name!r} is already registered ({known!r})")
        self._entries[name] = entry

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``, importing a built-in's module on first use.

        Raises:
            ConfigError: nothing registered as ``name``; the message names the choices.
        """
        entry = self._entries.get(name)
        if entry is None:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of {self.names()}")
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry


def lazy_attributes(package: str, modules: Mapping[str, str]) -> Callable[[str], Any]:
    """A package's module ``__getattr__`` (PEP 562) that imports ``modules[name]`` when ``name``
    is first asked for and keeps the value in the package, so the package itself imports
    without torch (``__getattr__ = lazy_attributes(__name__, {"train_round": "<module>"})``).

    Raises (from the returned function):
        AttributeError: ``name`` is none of ``modules``' keys.
    """

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
