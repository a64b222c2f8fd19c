"""Multi-task CPO: single-task CPO trained sequentially on tasks drawn from a level's distribution.

Multi-task TRPO-Lagrangian (``multitask-trpo-lag``) is the same walk with TRPO-Lagrangian steps
(:mod:`metacpo.algorithms.lagrange`): the Lagrangian baseline pre-trained multi-task.

The baseline that sees the same task distribution as Meta-CPO but learns one policy for all
of it, without an adaptation-aware objective. Each iteration is a plain CPO iteration
(:class:`metacpo.algorithms.cpo.TrustRegionAlgorithm`) on the current task; every
``iters_per_task`` iterations a new task is drawn from the level-``task_level`` distribution
with a generator seeded from the run seed. At meta-test time it is adapted like the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from metacpo.algorithms.cpo import IterationStats, TrustRegionAlgorithm
from metacpo.algorithms.meta_cpo import task_distributions
from metacpo.config.schema import TrainConfig
from metacpo.samplers.base import Sampler
from metacpo.samplers.current_task import CurrentTaskSampler


@dataclass(frozen=True)
class MultitaskConfig:
    """How multi-task CPO walks through the task distribution."""

    task_level: int = 1
    """Level of the task distribution tasks are drawn from."""
    iters_per_task: int = 1
    """CPO iterations on each drawn task before the next one is drawn."""

    def __post_init__(self) -> None:
        if self.task_level < 0:
            raise ValueError(f"multitask.task_level must be >= 0, got {self.task_level}")
        if self.iters_per_task < 1:
            raise ValueError(f"multitask.iters_per_task must be >= 1, got {self.iters_per_task}")


class MultitaskCPO(TrustRegionAlgorithm):
    """CPO (or, ``constrained=False`` with a ``lagrange`` section, TRPO-Lagrangian) whose iterations
    cycle through tasks drawn from one level of the task family."""

    def __init__(self, config: TrainConfig, *, sampler: Sampler, obs_dim: int, act_dim: int,
                 constrained: bool = True) -> None:
        self.task_sampler = CurrentTaskSampler(sampler)
        super().__init__(config, sampler=self.task_sampler, constrained=constrained, obs_dim=obs_dim,
                         act_dim=act_dim)
        self.settings: MultitaskConfig = config.section("multitask")
        self.distribution, _ = task_distributions(config.env.env_id, self.settings.task_level)
        self.task_rng = np.random.default_rng([config.run.seed, 31337])

    def iterate(self, iteration: int) -> IterationStats:
        if iteration % self.settings.iters_per_task == 0 or self.task_sampler.current is None:
            self.task_sampler.current = self.distribution.sample(self.task_rng)
        return super().iterate(iteration)

    def state_dict(self) -> dict[str, Any]:
        cur = self.task_sampler.current
        return {**super().state_dict(), "task_rng": self.task_rng.bit_generator.state,
                "current_task": dict(cur.as_dict()) if cur is not None else {}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = {"task_rng", "current_task"} - set(state)
        if missing:
            raise ValueError(f"multi-task CPO state lacks {sorted(missing)}")
        super().load_state_dict(state)
        self.task_rng.bit_generator.state = state["task_rng"]
        if state["current_task"]:
            cls = type(self.distribution.sample(np.random.default_rng(0)))
            self.task_sampler.current = cls(**state["current_task"])


def build_multitask_cpo(config: TrainConfig, *, sampler: Sampler, obs_dim: int, act_dim: int) -> MultitaskCPO:
    return MultitaskCPO(config, sampler=sampler, obs_dim=obs_dim, act_dim=act_dim)


def build_multitask_trpo_lag(config: TrainConfig, *, sampler: Sampler, obs_dim: int, act_dim: int) -> MultitaskCPO:
    if config.extra.get("lagrange") is None:
        raise ValueError("multitask-trpo-lag needs its 'lagrange' config section")
    return MultitaskCPO(config, sampler=sampler, obs_dim=obs_dim, act_dim=act_dim, constrained=False)
