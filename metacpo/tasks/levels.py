"""The Safety-Gymnasium task classes of the built-in families (they import Safety-Gymnasium)."""

from __future__ import annotations

from metacpo.compat import import_safety_gymnasium
from metacpo.tasks.families import (
    CIRCLE_LIDAR_RANGE,
    CIRCLE_START_HALF_WIDTH,
    REF_CIRCLE_HAZARD_COST,
    REF_CIRCLE_HAZARD_SIZE,
    ButtonTask,
    CircleTask,
    RefCircleTask,
)

import_safety_gymnasium()

from safety_gymnasium.assets.geoms import Hazards  # noqa: E402
from safety_gymnasium.tasks.safe_navigation.button.button_level1 import ButtonLevel1  # noqa: E402
from safety_gymnasium.tasks.safe_navigation.circle.circle_level1 import CircleLevel1  # noqa: E402


class StCircleLevel(CircleLevel1):
    """Safety-Gymnasium Circle with the task's radius and wall distance (2 walls, x = +-d)."""

    def __init__(self, config: dict, task: CircleTask) -> None:
        super().__init__(config=config)
        half = CIRCLE_START_HALF_WIDTH
        self.agent.placements = [(-half, -half, half, half)]
        self.lidar_conf.max_dist = CIRCLE_LIDAR_RANGE
        self.task_params: CircleTask
        self.apply_task(task)

    def apply_task(self, task: CircleTask) -> None:
        """Configure the geometry for ``task``; takes effect at the next reset."""
        if not isinstance(task, CircleTask):
            raise ValueError(f"a circle env needs a CircleTask, got {type(task).__name__}")
        self.task_params = task
        self.circle.radius = float(task.radius)  # pylint: disable=no-member
        walls = self.sigwalls  # pylint: disable=no-member
        walls.locate_factor = float(task.wall_distance)
        walls.__post_init__()  # recompute the wall locations from locate_factor
        self.placements_conf.placements = None  # rebuilt from the new locations at reset


class StRefCircleLevel(StCircleLevel):
    """The reference's Car-Circle variant: :class:`StCircleLevel` plus the task's hazard discs
    (Safety-Gymnasium ``Hazards``, radius 0.12, cost 3 per unit of depth, default keepout)."""

    def apply_task(self, task: CircleTask) -> None:
        """Circle and walls as :class:`StCircleLevel`, then the hazards; takes effect at the next reset."""
        if not isinstance(task, RefCircleTask):
            raise ValueError(f"a circleref env needs a RefCircleTask, got {type(task).__name__}")
        if "hazards" not in self._geoms:  # first call, from StCircleLevel.__init__
            self._add_geoms(Hazards(num=task.num_hazards, size=REF_CIRCLE_HAZARD_SIZE, cost=REF_CIRCLE_HAZARD_COST,
                                    is_constrained=True))
        super().apply_task(task)
        hazards = self.hazards  # pylint: disable=no-member
        hazards.num = int(task.num_hazards)
        e = float(task.hazard_extent)
        hazards.placements = [(-e, -e, e, e)]



class StButtonLevel(ButtonLevel1):
    """Safety-Gymnasium Button with the task's arena size and object counts (no gremlins).

    Safety-Gymnasium's level-1 Button also adds moving gremlins; Table 1 has none, and an
    object kind with zero instances breaks Safety-Gymnasium's lidar, so they are removed.
    """

    def __init__(self, config: dict, task: ButtonTask) -> None:
        super().__init__(config=config)
        del self._mocaps["gremlins"]
        del self.gremlins
        self.task_params: ButtonTask
        self.apply_task(task)

    def apply_task(self, task: ButtonTask) -> None:
        """Configure arena and objects for ``task``; takes effect at the next reset."""
        if not isinstance(task, ButtonTask):
            raise ValueError(f"a button env needs a ButtonTask, got {type(task).__name__}")
        self.task_params = task
        h = float(task.half_size)
        self.placements_conf.extents = [-h, -h, h, h]
        # pylint: disable=no-member
        self.buttons.num = int(task.num_buttons)
        self.hazards.num = int(task.num_hazards)
        self.buttons.is_constrained = task.wrong_button_cost > 0
        self.buttons.cost = float(task.wrong_button_cost)
        self.placements_conf.placements = None  # rebuilt for the new counts at reset
