"""The plain Safety-Gymnasium ``Builder`` running one task of a family: what the fast path is checked
against (tests/integration/test_envs_equivalence.py, test_render.py)."""

from __future__ import annotations

from metacpo.tasks.builder import BaseTask, Builder, StochasticBuilder
from metacpo.tasks.spec import Task, get_family
from metacpo.tasks.spec import env_id as make_env_id


class ReferenceBuilder(Builder):
    """The plain Safety-Gymnasium ``Builder`` running one task of a family, without speed-ups.

    Only task construction differs from ``safety_gymnasium.builder.Builder``; reset, step,
    observations, rewards and costs are Safety-Gymnasium's own. Used to check the fast path.
    """

    def __init__(self, agent: str, family: str, task: Task, render_mode: str | None = None) -> None:
        fam = get_family(family)
        StochasticBuilder._check_task(fam, task)
        self._family = fam
        self._task = task
        super().__init__(task_id=make_env_id(agent, family, 0), config={"agent_name": agent},
                         render_mode=render_mode)

    def _get_task(self) -> BaseTask:
        task = self._family.load_task_class()(config=self.config, task=self._task)
        task.build_observation_space()
        return task
