"""In-process sampler: one environment, tasks sampled one after another (worker index 0...)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from metacpo.data.batch import Batch
from metacpo.models.policy import GaussianMLPPolicy
from metacpo.samplers.base import (
    Job,
    PolicySnapshot,
    Sampler,
    Task,
    assemble,
    check_rng_states,
    make_env_for,
    episode_limit,
    note_last_resets,
    plan_call,
    repeat_reset,
    resets_from_state,
    resets_to_state,
    run_jobs,
    worker_rng,
)


class LocalSampler(Sampler):
    """Runs :func:`rollout` in this process.

    ``num_virtual_workers`` (default 1) reproduces the work split and per-worker generators of a
    :class:`ProcessSampler` with that many workers, so both give bit-identical batches; with 1 it
    is the plain sequential sampler.
    """

    def __init__(self, env_id: str, *, seed: int, num_virtual_workers: int = 1) -> None:
        if num_virtual_workers <= 0:
            raise ValueError(f"num_virtual_workers must be positive, got {num_virtual_workers}")
        self.env_id = env_id
        self.episode_steps = episode_limit(env_id)  # work is split in whole episodes (plan_jobs)
        self._n = num_virtual_workers
        self._env = make_env_for(env_id, seed=seed)  # our stochastic ids: the default task follows the seed
        self._rngs = [worker_rng(seed, i) for i in range(num_virtual_workers)]
        self._policy: GaussianMLPPolicy | None = None
        self._last_resets: list[tuple[Task, int] | None] = [None] * num_virtual_workers  # each share's last reset

    @property
    def num_workers(self) -> int:
        return self._n

    @property
    def env(self) -> Any:
        return self._env

    def sample(
        self,
        *,
        snapshot: PolicySnapshot | Sequence[PolicySnapshot],
        num_steps: int,
        tasks: Sequence[Task] | None = None,
    ) -> list[Batch]:
        task_list, snapshots, jobs = plan_call(snapshot, tasks=tasks, num_steps=num_steps, num_workers=self._n,
                                               episode_steps=self.episode_steps)
        outputs: list[tuple[Job, Batch]] = []
        # Worker order then job order: the same per-worker generator sequence as ProcessSampler.
        for w in range(self._n):
            work = [(j, task_list[j.task_index]) for j in jobs if j.worker == w]
            self._policy, out = run_jobs(self._env, self._policy, snapshots, work, self._rngs[w], worker=w)
            note_last_resets(self._last_resets, work, out)
            outputs.extend(out)
        return assemble(task_list, outputs)

    def state_dict(self) -> dict[str, Any]:
        # The same format as ProcessSampler's (the states are interchangeable).
        return {"worker_rngs": [r.bit_generator.state for r in self._rngs],
                "last_resets": resets_to_state(self._last_resets)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        rngs = check_rng_states(state, self._n)
        last = resets_from_state(self.env_id, state, self._n)
        for r, s in zip(self._rngs, rngs, strict=True):
            r.bit_generator.state = s
        self._last_resets = last
        known = [x for x in last if x is not None]
        if known:  # the one env's last reset was the last share's: a fresh env repeats it (Piece.prev)
            repeat_reset(self._env, 0, {}, known[-1])

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
