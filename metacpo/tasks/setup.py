"""Custom task families and range overrides that every process of a run must load.

A run can use task families defined outside metacpo (a module or a Python file that calls
:func:`metacpo.tasks.register_family` when imported, or an installed package advertising the
``metacpo.tasks`` entry-point group) and range overrides read from a YAML/TOML file. The driver
and every sampler worker (process or Ray) must see the same families and ranges before they
build an environment or unpickle a task, so a run records them as a :class:`TaskSetup`
(``env.imports`` and ``env.task_overrides`` in its config) and each process calls
:meth:`TaskSetup.apply` first.

Entry points: a package declares, e.g. in its ``pyproject.toml``::

    [project.entry-points."metacpo.tasks"]
    goal = "my_package.goal_family"            # a module: imported (it registers on import)
    maze = "my_package.maze:register"          # a callable: called with no arguments

Every process loads the installed entry points once, before the explicit imports.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENTRY_POINT_GROUP = "metacpo.tasks"
"""The entry-point group installed packages use to provide task families."""

_LOADED_ENTRY_POINTS = False


@dataclass(frozen=True)
class TaskSetup:
    """What a process loads before building environments (picklable; sent to every worker)."""

    imports: tuple[str, ...] = ()
    """Modules (dotted names) or Python files (absolute paths) imported for their side effect of
    registering task families."""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Range overrides ``{family: {level: {parameter: range}}}`` (the content of an override file)."""

    def apply(self) -> None:
        """Load entry points and imports, then make ``overrides`` the only installed overrides.

        Overrides installed earlier in this process (e.g. by ``load_distribution_overrides``) are
        dropped, so this process samples exactly the ranges the run records, as its workers do.
        """
        from metacpo.tasks.spec import clear_overrides, parse_overrides, set_distribution

        load_entry_points()
        for spec in self.imports:
            import_task_module(spec)
        dists = parse_overrides(self.overrides, source="env.task_overrides") if self.overrides else []
        clear_overrides()
        for d in dists:
            set_distribution(d)

    @property
    def empty(self) -> bool:
        return not self.imports and not self.overrides


def load_entry_points() -> list[str]:
    """Load every installed ``metacpo.tasks`` entry point once per process; returns their names."""
    global _LOADED_ENTRY_POINTS
    from importlib.metadata import entry_points

    eps = list(entry_points(group=ENTRY_POINT_GROUP))
    if _LOADED_ENTRY_POINTS:
        return [ep.name for ep in eps]
    _LOADED_ENTRY_POINTS = True
    for ep in eps:
        try:
            obj = ep.load()
        except Exception as exc:
            raise ValueError(f"entry point {ep.name!r} ({ep.value}) in group {ENTRY_POINT_GROUP!r} failed to "
                             f"load: {type(exc).__name__}: {' '.join(str(exc).split())}") from None
        if callable(obj) and not isinstance(obj, type(sys)):
            obj()
    return [ep.name for ep in eps]


def is_file_spec(spec: str) -> bool:
    """Whether an ``--import`` value names a Python file (else a dotted module name)."""
    return spec.endswith(".py") or os.sep in spec or "/" in spec


def normalize_import(spec: str) -> str:
    """The form a run records: an absolute path for a file (checked to exist), the name for a module."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"--import needs a module name or a .py file, got {spec!r}")
    spec = spec.strip()
    if is_file_spec(spec):
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"--import {spec}: no such file (give a module name or an existing .py file)")
        if path.suffix != ".py":
            raise ValueError(f"--import {spec}: not a .py file (give a module name or a .py file)")
        return str(path)
    return spec


def _module_name_for(path: Path) -> str:
    return "metacpo_user_" + "".join(c if c.isalnum() else "_" for c in path.stem)


def import_task_module(spec: str) -> Any:
    """Import a module by dotted name, or a ``.py`` file (once per process); returns the module.

    A file is imported as module ``metacpo_user_<stem>``, the same name in every process, so task
    objects defined there pickle between the driver and the workers. A dotted name is looked up
    on ``sys.path`` with the current directory added (as ``python -m`` does).
    """
    spec = normalize_import(spec)
    if is_file_spec(spec):
        path = Path(spec)
        name = _module_name_for(path)
        mod = sys.modules.get(name)
        if mod is not None:
            if Path(getattr(mod, "__file__", "")).resolve() != path:
                raise ValueError(f"--import {spec}: a different file is already imported as {name} "
                                 f"({getattr(mod, '__file__', '?')}); rename one of them")
            return mod
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ValueError(f"--import {spec}: cannot load it as a Python module")
        mod = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = mod
        try:
            loader_spec.loader.exec_module(mod)
        except Exception as exc:
            del sys.modules[name]
            raise ValueError(f"--import {spec}: importing it failed: {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())}") from None
        return mod
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name and spec.startswith(exc.name):
            raise ValueError(f"--import {spec}: no module named {exc.name!r} (give an importable module "
                             "name or a .py file)") from None
        raise ValueError(f"--import {spec}: importing it failed: {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        raise ValueError(f"--import {spec}: importing it failed: {type(exc).__name__}: "
                         f"{' '.join(str(exc).split())}") from None


def plain_overrides(data: Any, *, source: str) -> dict[str, Any]:
    """Override data as plain, YAML/checkpoint-safe dicts: ``{family: {level(int): {param: range}}}``.

    Validates it against the registered families first (ValueError naming the bad value).
    """
    from metacpo.tasks.spec import parse_overrides

    dists = parse_overrides(data, source=source)
    out: dict[str, Any] = {}
    for d in dists:
        level_specs = data[d.family.name]
        raw = next(v for k, v in level_specs.items() if _level_of(k) == d.level)
        out.setdefault(d.family.name, {})[d.level] = {str(k): _plain(v) for k, v in raw.items()}
    return out


def _level_of(key: Any) -> int:
    text = str(key)
    return int(text[len("level"):] if text.startswith("level") else text)


def _plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def read_overrides_file(path: str) -> dict[str, Any]:
    """Read and validate a YAML/TOML override file; returns its plain content (see :func:`plain_overrides`)."""
    from metacpo.tasks.spec import read_config_file

    return plain_overrides(read_config_file(path), source=str(path))

