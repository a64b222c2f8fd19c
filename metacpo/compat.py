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
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import sys
import threading
from collections.abc import Iterator
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
    with ndarray_defaults_as_factories(), _quiet_robotics_notice():
        return importlib.import_module("safety_gymnasium")
