"""A custom task family for the CLI tests: "ring", Circle geometry with larger radii.

Registers itself on import (so ``metacpo ... --import tests/integration/data/ring_family.py``
works in the driver and in every spawned sampler worker).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from metacpo import tasks


@dataclass(frozen=True)
class RingTask(tasks.CircleTask):
    """A Circle task of the "ring" family."""

    family: ClassVar[str] = "ring"


def build_ring_task(p: Mapping[str, Any]) -> RingTask:
    return RingTask(radius=float(p["radius"]), wall_distance=float(p["wall_distance"]))


RING = tasks.TaskFamily(
    name="ring",
    task_type=RingTask,
    params=(tasks.ParamDomain("radius", "circle radius", minimum=0.0, min_inclusive=False),
            tasks.ParamDomain("wall_distance", "walls at x = +-wall_distance", minimum=0.2, min_inclusive=False)),
    build_task=build_ring_task,
    levels={0: {"radius": 3.0, "wall_distance": 2.0},
            1: {"radius": [3.0, 3.5], "wall_distance": [2.0, 2.4]},
            2: {"radius": [4.0, 4.5], "wall_distance": [2.5, 3.0]}},
    task_class=tasks.StCircleLevel,
    fast_task_class=tasks.FastStCircleLevel,
    max_episode_steps=500,
    description="run along a large circle",
)

tasks.register_family(RING)
