"""The stochastic Safety-Gymnasium task suite: ``Safety{Agent}St{circle,button}{0,1,2}-v0``.

Importing this package defines the built-in families and their distributions without importing
Safety-Gymnasium. ``import metacpo`` arranges (:func:`metacpo.compat.install_import_hook`) that
our ids are registered with Safety-Gymnasium as soon as it is imported -- by
:func:`make_env`, by a sampler, or by the user's own ``import safety_gymnasium`` -- after which
``safety_gymnasium.make(id)`` works for our ids like for any built-in id (each make draws a task
from that level's distribution). :func:`make_env` makes an env for a given task or task seed,
and runs the standard navigation ids on the fast path. See ``docs/tasks.md``.

The env-making names (``make_env``, ``StochasticBuilder``, ``StandardBuilder``,
``registered_ids``, ``register_ids``, the task classes) import
Safety-Gymnasium on first use.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from metacpo.tasks.families import (
    BUTTON,
    BUTTON_REF,
    CIRCLE,
    CIRCLE_REF,
    ButtonTask,
    CircleTask,
    RefButtonTask,
    RefCircleTask,
)
from metacpo.tasks.spec import (
    AGENTS,
    Fixed,
    IntUniform,
    ParamDomain,
    Task,
    TaskDistribution,
    TaskFamily,
    Uniform,
    add_family,
    clear_overrides,
    env_id,
    families,
    get_distribution,
    get_family,
    load_distribution_overrides,
    parse_env_id,
    parse_overrides,
    set_distribution,
)

LEVELS: tuple[int, ...] = (0, 1, 2)
"""Levels of the built-in families."""

_LAZY = {
    "StochasticBuilder": "metacpo.tasks.builder",
    "StandardBuilder": "metacpo.tasks.builder", "make_env": "metacpo.tasks.builder",
    "register_ids": "metacpo.tasks.registration", "registered_ids": "metacpo.tasks.registration",
    "fast_envs": "metacpo.tasks.builder", "fast_default": "metacpo.tasks.builder",
    "FastStButtonLevel": "metacpo.tasks.fast", "FastStCircleLevel": "metacpo.tasks.fast",
    "FastStRefCircleLevel": "metacpo.tasks.fast", "StRefCircleLevel": "metacpo.tasks.levels",
    "StButtonLevel": "metacpo.tasks.levels", "StCircleLevel": "metacpo.tasks.levels",
}


def __getattr__(name: str) -> Any:
    """The Safety-Gymnasium-dependent names, imported on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def _add_builtin_families() -> None:
    for fam in (CIRCLE, BUTTON, BUTTON_REF, CIRCLE_REF):
        if families().get(fam.name) is not fam:
            add_family(fam, replace=True)


def _safety_gymnasium_loaded() -> bool:
    return "safety_gymnasium" in sys.modules


def register_family(family: TaskFamily, *, replace: bool = False) -> list[str]:
    """Add a (user-defined) family and register its env ids for every agent and level.

    Returns the env ids. Idempotent for the same family object. The ids are registered with
    Safety-Gymnasium now if it is imported, otherwise when it is (see the module docstring).
    """
    add_family(family, replace=replace)
    if _safety_gymnasium_loaded():
        from metacpo.tasks.registration import register_ids

        return register_ids(family)
    return [env_id(agent, family.name, level) for level in sorted(family.levels) for agent in AGENTS]


def register_all() -> list[str]:
    """Register every family's ids (the built-ins first) with Safety-Gymnasium (idempotent).

    Imports Safety-Gymnasium (``import metacpo`` does not call this; it runs when
    Safety-Gymnasium is first imported).
    """
    _add_builtin_families()
    from metacpo.compat import import_safety_gymnasium
    from metacpo.tasks.registration import register_ids

    import_safety_gymnasium()  # a no-op when called from the import hook (already loaded)

    ids = []
    for fam in list(families().values()):
        ids += register_ids(fam)
    return ids


_add_builtin_families()

__all__ = [
    "AGENTS", "BUTTON", "BUTTON_REF", "CIRCLE", "CIRCLE_REF", "LEVELS", "ButtonTask", "CircleTask",
    "FastStButtonLevel", "FastStCircleLevel", "FastStRefCircleLevel", "Fixed", "IntUniform", "ParamDomain",
    "RefButtonTask", "RefCircleTask", "StButtonLevel", "StCircleLevel", "StRefCircleLevel", "StandardBuilder",
    "StochasticBuilder", "Task", "TaskDistribution", "TaskFamily", "Uniform", "add_family", "clear_overrides", "env_id",
    "fast_default", "fast_envs", "families", "get_distribution", "get_family",
    "load_distribution_overrides", "make_env", "parse_env_id", "parse_overrides", "register_all",
    "register_family", "registered_ids", "set_distribution",
]
