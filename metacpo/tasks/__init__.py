"""The stochastic Safety-Gymnasium task suite: ``Safety{Agent}St{circle,button}{0,1,2}-v0``.

``import metacpo`` calls :func:`register_all`, after which ``safety_gymnasium.make(id)`` works for
our ids like for any built-in id (each make draws a task from that level's distribution).
:func:`make_env` makes an env for a given task or task seed. See ``docs/tasks.md``.
"""

from __future__ import annotations

from metacpo.tasks.builder import (
    ReferenceBuilder,
    StochasticBuilder,
    make_env,
    register_ids,
    registered_ids,
)
from metacpo.tasks.fast import FastStButtonLevel, FastStCircleLevel
from metacpo.tasks.families import ButtonTask, CircleTask, StButtonLevel, StCircleLevel, button_family, circle_family
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

CIRCLE = circle_family(StCircleLevel, FastStCircleLevel)
"""The built-in Circle family."""
BUTTON = button_family(StButtonLevel, FastStButtonLevel)
"""The built-in Button family."""


def register_family(family: TaskFamily, *, replace: bool = False) -> list[str]:
    """Add a (user-defined) family and register its env ids for every agent and level.

    Returns the registered ids. Idempotent for the same family object.
    """
    add_family(family, replace=replace)
    return register_ids(family)


def register_all() -> list[str]:
    """Register the built-in families' ids with Safety-Gymnasium (idempotent)."""
    ids = []
    for fam in (CIRCLE, BUTTON):
        if families().get(fam.name) is not fam:
            add_family(fam, replace=True)
        ids += register_ids(fam)
    return ids


register_all()

__all__ = [
    "AGENTS", "BUTTON", "CIRCLE", "LEVELS", "ButtonTask", "CircleTask", "FastStButtonLevel",
    "FastStCircleLevel", "Fixed", "IntUniform", "ParamDomain", "ReferenceBuilder",
    "StButtonLevel", "StCircleLevel", "StochasticBuilder", "Task", "TaskDistribution",
    "TaskFamily", "Uniform", "add_family", "clear_overrides", "env_id", "families",
    "get_distribution", "get_family", "load_distribution_overrides", "make_env",
    "parse_env_id", "parse_overrides", "register_all", "register_family", "registered_ids",
    "set_distribution",
]
