"""A sampler pinned to one task: what single-task algorithms sample through when the task changes.

Multi-task CPO points it at a newly drawn task every few iterations; meta-testing points it at
the held-out task being adapted to. Single-task CPO itself never passes ``tasks``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from metacpo.data.batch import Batch
from metacpo.samplers.base import PolicySnapshot, Sampler, Task


class CurrentTaskSampler(Sampler):
    """Forwards to another sampler, filling in ``tasks=[current]`` when a caller passes none."""

    def __init__(self, inner: Sampler, *, task: Task = None) -> None:
        self.inner = inner
        self.current: Task = task
        """The task sampled when a caller passes no ``tasks`` (None: the env's own task)."""

    def sample(
        self,
        *,
        snapshot: PolicySnapshot | Sequence[PolicySnapshot],
        num_steps: int,
        tasks: Sequence[Task] | None = None,
    ) -> list[Batch]:
        if tasks is None and self.current is not None:
            tasks = [self.current]
        return self.inner.sample(snapshot=snapshot, num_steps=num_steps, tasks=tasks)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(state)

    @property
    def num_workers(self) -> int:
        return self.inner.num_workers

    @property
    def episode_steps(self) -> int | None:
        """The env's time limit (the wrapped sampler's)."""
        return getattr(self.inner, "episode_steps", None)

    def close(self) -> None:
        self.inner.close()
