"""A user-defined stochastic task family, plus range overrides for the built-in families.

Run:  python examples/custom_task_distribution.py [--steps 50] [--overrides examples/task_overrides.yaml]
Or use the family from the command line (the run records the import; every sampler worker,
``--resume``, ``evaluate`` and ``adapt`` load it again)::

    metacpo envs --import examples/custom_task_distribution.py --family goal
    metacpo train --algo meta-cpo --import examples/custom_task_distribution.py --env-id SafetyPointStgoal1-v0
    metacpo adapt runs/<that run> --level 2 --tasks 3

1. Defines a "goal" family on top of Safety-Gymnasium's Goal task: reach a goal of random size in
   an arena of random size with a random number of hazards. Three levels.
2. Registers it when the module is imported (not under ``if __name__ == "__main__"``: spawned
   sampler workers import this file and must find the family too):
   Safety{Point,Car,Doggo,Racecar}Stgoal{0,1,2}-v0 then work with ``safety_gymnasium.make`` and
   ``metacpo.tasks.make_env`` like the built-in ids.
3. Overrides the ranges of the built-in Circle/Button levels from a YAML (or TOML) file.
Nothing in the library is edited.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

import metacpo  # noqa: F401  (registers the built-in ids)
from metacpo import tasks
from metacpo.compat import import_safety_gymnasium

sg = import_safety_gymnasium()
from safety_gymnasium.tasks.safe_navigation.goal.goal_level1 import GoalLevel1  # noqa: E402


@dataclass(frozen=True)
class GoalTask(tasks.Task):
    """Reach a goal of radius ``goal_size`` in [-half_size, half_size]^2 with ``num_hazards`` hazards."""

    family: ClassVar[str] = "goal"

    half_size: float
    """Arena half-size (> 0)."""
    goal_size: float
    """Goal radius (> 0)."""
    num_hazards: int
    """Number of hazards (>= 1)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.half_size) and self.half_size > 0):
            raise ValueError(f"GoalTask: half_size={self.half_size!r} is not allowed; allowed: number > 0")
        if not (math.isfinite(self.goal_size) and self.goal_size > 0):
            raise ValueError(f"GoalTask: goal_size={self.goal_size!r} is not allowed; allowed: number > 0")
        if isinstance(self.num_hazards, bool) or not isinstance(self.num_hazards, int) or self.num_hazards < 1:
            raise ValueError(f"GoalTask: num_hazards={self.num_hazards!r} is not allowed; allowed: integer >= 1")


class StGoalLevel(GoalLevel1):
    """Safety-Gymnasium's Goal level 1, configured from a :class:`GoalTask`."""

    def __init__(self, config: dict, task: GoalTask) -> None:
        super().__init__(config=config)
        self.apply_task(task)

    def apply_task(self, task: GoalTask) -> None:
        """Reconfigure for ``task`` (the builder calls this; takes effect at the next reset)."""
        if not isinstance(task, GoalTask):
            raise ValueError(f"a goal env needs a GoalTask, got {type(task).__name__}")
        self.task_params = task
        h = task.half_size
        self.placements_conf.extents = [-h, -h, h, h]
        self.goal.size = task.goal_size  # pylint: disable=no-member
        self.hazards.num = task.num_hazards  # pylint: disable=no-member
        # Safety-Gymnasium caches one placement entry per object ("hazard0".."hazard3"); a task with
        # more hazards would then fail at reset with KeyError: 'hazard4'. None rebuilds the table.
        self.placements_conf.placements = None


def build_goal_task(p: Mapping[str, Any]) -> GoalTask:
    """Sampled parameters -> task (nothing derived here)."""
    return GoalTask(half_size=float(p["half_size"]), goal_size=float(p["goal_size"]),
                    num_hazards=int(p["num_hazards"]))


GOAL_FAMILY = tasks.TaskFamily(
    name="goal",
    task_type=GoalTask,
    params=(
        tasks.ParamDomain("half_size", "arena half-size", minimum=0.0, min_inclusive=False),
        tasks.ParamDomain("goal_size", "goal radius", minimum=0.0, min_inclusive=False),
        tasks.ParamDomain("num_hazards", "number of hazards", integer=True, minimum=1),
    ),
    build_task=build_goal_task,
    levels={
        0: {"half_size": 1.5, "goal_size": 0.3, "num_hazards": 4},
        1: {"half_size": tasks.Uniform(1.4, 1.7), "goal_size": tasks.Uniform(0.25, 0.4),
            "num_hazards": tasks.IntUniform(4, 8)},
        2: {"half_size": [2.0, 2.3], "goal_size": [0.15, 0.25], "num_hazards": [8, 12]},
    },
    task_class=StGoalLevel,
    max_episode_steps=1000,
    description="reach a goal of random size among hazards",
)

GOAL_IDS = tasks.register_family(GOAL_FAMILY)  # at import: the driver and every spawned worker register it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="random-action steps per env")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overrides", default=os.path.join(os.path.dirname(__file__), "task_overrides.yaml"),
                        help="YAML/TOML range overrides for the built-in families")
    args = parser.parse_args(argv)

    ids = GOAL_IDS
    print(f"registered {len(ids)} ids, e.g. {ids[4]}")

    rng = np.random.default_rng(args.seed)
    dist = tasks.get_distribution("goal", 1)
    print("goal level 1:", dist.describe_line())
    for task in dist.sample_n(rng, 3):
        print("  drew", task)

    # Plain Safety-Gymnasium make: draws a task of the level.
    env = sg.make("SafetyPointStgoal1-v0")
    obs, info = env.reset(seed=args.seed)
    total_r = total_c = 0.0
    for _ in range(args.steps):
        obs, r, c, terminated, truncated, _ = env.step(env.action_space.sample())
        total_r += r
        total_c += c
        if terminated or truncated:
            obs, info = env.reset()
    print(f"SafetyPointStgoal1-v0 task={env.unwrapped.task_params} obs={obs.shape} "
          f"return={total_r:.3f} cost={total_c:.1f}")

    # A given task, and switching a live env to another task of the family.
    env = tasks.make_env("SafetyCarStgoal2-v0", task=GoalTask(half_size=2.1, goal_size=0.2, num_hazards=9))
    env.reset(seed=1)
    env.unwrapped.set_task(GoalTask(half_size=2.2, goal_size=0.18, num_hazards=12))
    env.reset(seed=2)
    print("switched to", env.unwrapped.task_params)

    # Range overrides for the built-in families.
    for d in tasks.load_distribution_overrides(args.overrides):
        print(f"override {d.family.name} level {d.level}: {d.describe_line()}")
    task = tasks.get_distribution("SafetyPointStcircle1-v0").sample(rng)
    print("circle level 1 now draws", task)
    env = sg.make("SafetyPointStcircle1-v0")
    env.reset(seed=3)
    print("made SafetyPointStcircle1-v0 with", env.unwrapped.task_params)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
