"""The built-in families, Circle and Button (Table 1 of the Meta-CPO paper), and the reference
implementation's variants of them (``buttonref``, ``circleref``).

Each family has a frozen task dataclass, the Safety-Gymnasium task class that realises one task
(:mod:`metacpo.tasks.levels`: subclasses of Safety-Gymnasium's own Circle/Button level classes,
configured from the task), and its level table. The simulation-speed variants of the task
classes live in :mod:`metacpo.tasks.fast`; both give the same physics, observations, rewards and
costs. This module does not import Safety-Gymnasium (the families name their task classes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from metacpo.tasks.spec import IntUniform, ParamDomain, Task, TaskFamily, Uniform

CIRCLE_START_HALF_WIDTH = 0.2
"""The agent starts uniformly in [-0.2, 0.2]^2 on Circle tasks."""
CIRCLE_LIDAR_RANGE = 6.0
"""Lidar range (max_dist) on Circle tasks."""


# --------------------------------------------------------------------------------------------
# Circle
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CircleTask(Task):
    """Run along a circle of ``radius`` without crossing the side walls at x = +-wall_distance."""

    family: ClassVar[str] = "circle"

    radius: float
    """Radius of the circle the reward asks the agent to run along (> 0)."""
    wall_distance: float
    """The two constraining walls stand at x = +-wall_distance; crossing one costs (> 0.2)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.radius, (int, float)) and math.isfinite(self.radius) and self.radius > 0):
            raise ValueError(f"CircleTask: radius={self.radius!r} is not allowed; allowed: number > 0")
        wd = self.wall_distance
        if not (isinstance(wd, (int, float)) and math.isfinite(wd) and wd > CIRCLE_START_HALF_WIDTH):
            raise ValueError(
                f"CircleTask: wall_distance={wd!r} is not allowed; allowed: number > "
                f"{CIRCLE_START_HALF_WIDTH} (the agent starts in [-0.2, 0.2]^2 and must start safe)")


def _build_circle(p: Mapping[str, Any]) -> CircleTask:
    return CircleTask(radius=float(p["radius"]), wall_distance=float(p["radius"]) * float(p["wall_ratio"]))


REF_CIRCLE_HAZARD_SIZE = 0.12
"""Hazard radius on the reference's Car-Circle variant (family ``circleref``)."""
REF_CIRCLE_HAZARD_COST = 3.0
"""Hazard cost unit there (Safety-Gymnasium's ``Hazards.cost``: ``3 * (size - distance)`` inside a
hazard). Safety-Gymnasium's cost indicator (``cost_conf.constrain_indicator``, on by default) then
makes every step with any cost cost exactly 1, so the unit does not change the cost signal."""


@dataclass(frozen=True)
class RefCircleTask(CircleTask):
    """A Circle task of the reference implementation's Car-Circle variant (family ``circleref``):
    the same circle and walls plus hazard discs (radius 0.12) placed in [-hazard_extent, hazard_extent]^2."""

    family: ClassVar[str] = "circleref"

    num_hazards: int
    """Number of hazard discs (>= 1); standing in one costs."""
    hazard_extent: float
    """Hazards are placed in the square [-hazard_extent, hazard_extent]^2 (> 0)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        n = self.num_hazards
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"RefCircleTask: num_hazards={n!r} is not allowed; allowed: integer >= 1")
        e = self.hazard_extent
        if not (isinstance(e, (int, float)) and math.isfinite(e) and e > 0):
            raise ValueError(f"RefCircleTask: hazard_extent={e!r} is not allowed; allowed: number > 0")


def _build_ref_circle(p: Mapping[str, Any]) -> RefCircleTask:
    c = _build_circle(p)
    return RefCircleTask(radius=c.radius, wall_distance=c.wall_distance, num_hazards=int(p["num_hazards"]),
                         hazard_extent=float(p["hazard_extent"]))


# --------------------------------------------------------------------------------------------
# Button
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ButtonTask(Task):
    """Press the goal button in a square arena with hazards (and, if costed, wrong buttons)."""

    family: ClassVar[str] = "button"

    half_size: float
    """Objects are placed in the square [-half_size, half_size]^2 (> 0)."""
    num_buttons: int
    """Number of buttons (>= 1); one of them is the goal."""
    num_hazards: int
    """Number of hazard areas (>= 1); standing in one costs."""
    wrong_button_cost: float = 0.0
    """Cost of touching a button other than the goal (0 = no cost)."""

    def __post_init__(self) -> None:
        def _int(name: str, v: Any, minimum: int) -> None:
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"ButtonTask: {name}={v!r} is not allowed; allowed: integer >= {minimum}")

        hs = self.half_size
        if not (isinstance(hs, (int, float)) and math.isfinite(hs) and hs > 0):
            raise ValueError(f"ButtonTask: half_size={hs!r} is not allowed; allowed: number > 0")
        _int("num_buttons", self.num_buttons, 1)
        _int("num_hazards", self.num_hazards, 1)
        c = self.wrong_button_cost
        if not (isinstance(c, (int, float)) and math.isfinite(c) and c >= 0):
            raise ValueError(f"ButtonTask: wrong_button_cost={c!r} is not allowed; allowed: number >= 0")


@dataclass(frozen=True)
class RefButtonTask(ButtonTask):
    """A Button task of the reference implementation's variant (family ``buttonref``): the same
    task, but its level table charges wrong-button presses at every level, not only at level 2."""

    family: ClassVar[str] = "buttonref"


def _build_button(p: Mapping[str, Any]) -> ButtonTask:
    return ButtonTask(
        half_size=float(p["half_size"]),
        num_buttons=int(p["num_buttons"]),
        num_hazards=int(p["num_buttons"]) + int(p["extra_hazards"]),
        wrong_button_cost=float(p["wrong_button_cost"]),
    )


def _build_ref_button(p: Mapping[str, Any]) -> RefButtonTask:
    return RefButtonTask(**_build_button(p).as_dict())


# --------------------------------------------------------------------------------------------
# Family definitions
# --------------------------------------------------------------------------------------------

CIRCLE_PARAMS = (
    ParamDomain("radius", "circle radius", minimum=0.0, min_inclusive=False),
    ParamDomain("wall_ratio", "wall_distance / radius", minimum=0.0, min_inclusive=False),
)
CIRCLE_LEVELS: dict[int, dict[str, Any]] = {
    0: {"radius": 1.25, "wall_ratio": 0.75},
    1: {"radius": Uniform(1.0, 1.5), "wall_ratio": Uniform(0.55, 0.75)},
    2: {"radius": Uniform(2.0, 2.5), "wall_ratio": Uniform(0.55, 0.65)},
}

CIRCLE_REF_PARAMS = (
    *CIRCLE_PARAMS,
    ParamDomain("num_hazards", "number of hazards", integer=True, minimum=1),
    ParamDomain("hazard_extent", "hazards placed in [-e, e]^2", minimum=0.0, min_inclusive=False),
)
CIRCLE_REF_LEVELS: dict[int, dict[str, Any]] = {
    0: {"radius": 1.25, "wall_ratio": 0.65, "num_hazards": 5, "hazard_extent": 1.4},
    1: {"radius": Uniform(1.0, 1.5), "wall_ratio": Uniform(0.55, 0.75), "num_hazards": IntUniform(4, 6),
        "hazard_extent": 1.4},
    2: {"radius": Uniform(1.5, 2.0), "wall_ratio": Uniform(0.55, 0.65), "num_hazards": IntUniform(10, 12),
        "hazard_extent": 1.8},
}
"""The reference implementation's Car-Circle levels (docs/tasks.md says where they differ from ours)."""

BUTTON_PARAMS = (
    ParamDomain("half_size", "arena half-size", minimum=0.0, min_inclusive=False),
    ParamDomain("num_buttons", "number of buttons", integer=True, minimum=1),
    ParamDomain("extra_hazards", "num_hazards - num_buttons", integer=True, minimum=0),
    ParamDomain("wrong_button_cost", "cost of pressing a wrong button", minimum=0.0),
)
BUTTON_LEVELS: dict[int, dict[str, Any]] = {
    0: {"half_size": 1.9, "num_buttons": 4, "extra_hazards": 3, "wrong_button_cost": 0.0},
    1: {"half_size": Uniform(1.75, 2.0), "num_buttons": IntUniform(3, 6), "extra_hazards": 3,
        "wrong_button_cost": 0.0},
    2: {"half_size": Uniform(2.6, 2.9), "num_buttons": IntUniform(6, 10), "extra_hazards": 6,
        "wrong_button_cost": 1.0},
}


BUTTON_REF_LEVELS: dict[int, dict[str, Any]] = {
    level: {**ranges, "wrong_button_cost": 1.0} for level, ranges in BUTTON_LEVELS.items()
}
"""The reference implementation's Button levels: ours with wrong buttons costing 1 at every level."""


CIRCLE = TaskFamily(
    name="circle", task_type=CircleTask, params=CIRCLE_PARAMS, build_task=_build_circle, levels=CIRCLE_LEVELS,
    task_class="metacpo.tasks.levels:StCircleLevel", fast_task_class="metacpo.tasks.fast:FastStCircleLevel",
    max_episode_steps=500, derived={"wall_distance": "radius * wall_ratio"},
    description="run along a circle; walls at x = +-wall_distance cost when crossed")
"""The Circle family (500 steps)."""

CIRCLE_REF = dataclasses.replace(
    CIRCLE, name="circleref", task_type=RefCircleTask, params=CIRCLE_REF_PARAMS, build_task=_build_ref_circle,
    levels=CIRCLE_REF_LEVELS, task_class="metacpo.tasks.levels:StRefCircleLevel",
    fast_task_class="metacpo.tasks.fast:FastStRefCircleLevel",
    description="run along a circle; walls at x = +-wall_distance and hazards cost (reference Car-Circle variant)")
"""The reference implementation's Car-Circle variant (500 steps): Circle with hazards."""

BUTTON = TaskFamily(
    name="button", task_type=ButtonTask, params=BUTTON_PARAMS, build_task=_build_button, levels=BUTTON_LEVELS,
    task_class="metacpo.tasks.levels:StButtonLevel", fast_task_class="metacpo.tasks.fast:FastStButtonLevel",
    max_episode_steps=1000, derived={"num_hazards": "num_buttons + extra_hazards"},
    description="press the goal button; hazards (and wrong buttons at level 2) cost")
"""The Button family (1000 steps)."""

BUTTON_REF = dataclasses.replace(
    BUTTON, name="buttonref", task_type=RefButtonTask, build_task=_build_ref_button, levels=BUTTON_REF_LEVELS,
    description="press the goal button; hazards and wrong buttons cost at every level (reference variant)")
"""The reference implementation's Button variant (1000 steps): wrong buttons cost at every level."""
