"""Compatibility shims for third-party packages, applied narrowly and undone at once.

safety-gymnasium 1.0.0 declares dataclass fields with ``numpy.ndarray`` defaults
(e.g. ``color: np.ndarray = np.array([...])``). Python 3.11 rejects unhashable dataclass
defaults ("mutable default <class 'numpy.ndarray'> for field color is not allowed"), so a plain
``import safety_gymnasium`` fails. :func:`import_safety_gymnasium` imports it with a temporary
hook that turns each such default into ``field(default_factory=<copy of the array>)`` -- which
is what the authors meant, and gives every instance its own array -- and removes the hook as
soon as the import returns. Files under site-packages are never edited.

gymnasium-robotics 1.2.2 prints a notice about its AdroitHand environments' rewards to stderr
whenever it is imported (through ``farama_notifications``). metacpo never uses those environments,
so during the import that one notice is held back (the notifications table is restored after).

:func:`install_import_hook` (run by ``import metacpo``) makes every later ``import
safety_gymnasium`` -- ours or the user's -- go through that shim, and calls back once the module is
loaded (metacpo registers its env ids then). So ``import metacpo`` itself never imports
Safety-Gymnasium, MuJoCo or Gymnasium.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import numpy as np

_LOCK = threading.Lock()


def _array_factory(value: np.ndarray) -> Any:
    frozen = value.copy()
    return lambda: frozen.copy()


@contextlib.contextmanager
def ndarray_defaults_as_factories() -> Iterator[None]:
    """While active, dataclass fields whose default is an ndarray get a ``default_factory``.

    Hooks ``dataclasses._get_field`` (CPython 3.11 looks it up at class-creation time), and
    restores the original on exit, even when the body raises.
    """
    original = getattr(dataclasses, "_get_field", None)
    if original is None:  # pragma: no cover - guards against a different CPython
        raise RuntimeError(
            "dataclasses._get_field not found; this compatibility hook supports CPython 3.11 only "
            f"(running {sys.version.split()[0]})"
        )

    def _get_field(cls: type, a_name: str, a_type: Any, *args: Any, **kwargs: Any) -> Any:
        default = cls.__dict__.get(a_name, dataclasses.MISSING)
        if isinstance(default, np.ndarray):
            setattr(cls, a_name, dataclasses.field(default_factory=_array_factory(default)))
        elif isinstance(default, dataclasses.Field) and isinstance(default.default, np.ndarray):
            default.default_factory = _array_factory(default.default)
            default.default = dataclasses.MISSING
        return original(cls, a_name, a_type, *args, **kwargs)

    with _LOCK:
        dataclasses._get_field = _get_field  # type: ignore[attr-defined]
        try:
            yield
        finally:
            dataclasses._get_field = original  # type: ignore[attr-defined]


@contextlib.contextmanager
def _quiet_robotics_notice() -> Iterator[None]:
    try:
        from farama_notifications import notifications  # type: ignore[import-not-found]
    except Exception:  # not installed: nothing to hold back
        yield
        return
    held = notifications.pop("gymnasium_robotics", None)
    try:
        yield
    finally:
        if held is not None:
            notifications["gymnasium_robotics"] = held


def import_safety_gymnasium() -> ModuleType:
    """Import and return ``safety_gymnasium`` on Python 3.11 (see the module docstring).

    Idempotent: once imported, the cached module is returned without touching ``dataclasses``.
    """
    if "safety_gymnasium" in sys.modules:
        return sys.modules["safety_gymnasium"]
    if _FINDER in sys.meta_path:  # the hook's loader applies the shim (and runs the callbacks)
        return importlib.import_module("safety_gymnasium")
    with ndarray_defaults_as_factories(), _quiet_robotics_notice():
        return importlib.import_module("safety_gymnasium")


_CALLBACKS: list[Callable[[], None]] = []


class _ShimLoader(importlib.abc.Loader):
    """Runs the real loader of ``safety_gymnasium`` inside the shim, then the callbacks."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with ndarray_defaults_as_factories(), _quiet_robotics_notice():
            self._loader.exec_module(module)
        for callback in list(_CALLBACKS):
            callback()

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, get_data, ...
        return getattr(self._loader, name)


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of ``gymnasium`` with the robotics notice held back: gymnasium loads
    its env plugins (gymnasium-robotics among them) at import, wherever it is first imported."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with _quiet_robotics_notice():
            self._loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _SafetyGymnasiumFinder(importlib.abc.MetaPathFinder):
    """Finds ``safety_gymnasium`` (and ``gymnasium``) with the other finders and wraps their
    loaders: :class:`_ShimLoader` for safety_gymnasium, :class:`_QuietLoader` for gymnasium."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in ("safety_gymnasium", "gymnasium"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _ShimLoader(spec.loader) if fullname == "safety_gymnasium" else _QuietLoader(spec.loader)
        return spec


_FINDER = _SafetyGymnasiumFinder()


def install_import_hook(on_import: Callable[[], None]) -> None:
    """Apply the shim to any later ``import safety_gymnasium`` and call ``on_import()`` right after
    it is loaded (at once if it already is). Idempotent per callback."""
    if on_import not in _CALLBACKS:
        _CALLBACKS.append(on_import)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    if "safety_gymnasium" in sys.modules:
        on_import()
