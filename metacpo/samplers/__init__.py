"""Samplers: one interface (:class:`Sampler`), local, multiprocess and Ray backends (:func:`make_sampler`)."""

from metacpo.samplers.base import (
    EnvInfo,
    Job,
    PolicySnapshot,
    Sampler,
    Task,
    env_dims,
    env_info,
    make_env_for,
    merge_parts,
    plan_jobs,
    rollout,
    set_task,
    worker_rng,
)
from typing import TYPE_CHECKING

from metacpo import choices

from metacpo.samplers.current_task import CurrentTaskSampler
from metacpo.samplers.local import LocalSampler

if TYPE_CHECKING:
    from metacpo.tasks.setup import TaskSetup

__all__ = [
    "CurrentTaskSampler",
    "EnvInfo",
    "Job",
    "LocalSampler",
    "PolicySnapshot",
    "Sampler",
    "Task",
    "env_dims",
    "env_info",
    "make_env_for",
    "merge_parts",
    "plan_jobs",
    "rollout",
    "set_task",
    "make_sampler",
    "worker_rng",
]

SAMPLER_KINDS = choices.SAMPLER_KINDS


def make_sampler(
    kind: str,
    env_id: str,
    *,
    seed: int,
    num_workers: int | None = None,
    ray_address: str | None = None,
    task_setup: "TaskSetup | None" = None,
    ray_connect_timeout: float = 30.0,
    envs_per_worker: int = 1,
    spread_episodes: bool = True,
) -> Sampler:
    """The ``kind`` backend (local, process or ray) for ``env_id``.

    ``num_workers=None``: one worker per CPU core (process) or per CPU of the Ray cluster (ray);
    the local sampler always runs one worker. ``ray_address`` (ray only): None starts Ray on
    this machine, ``"auto"``/an address joins an existing cluster (one-line ValueError if nothing
    answers within ``ray_connect_timeout`` seconds). ``task_setup``: custom families and range
    overrides every worker process applies before building its env (the local sampler runs in
    this process, which must have applied it already). ``envs_per_worker``: shares per worker
    (see :class:`~metacpo.samplers.process.ProcessSampler`; local: ``num_virtual_workers``; not
    supported by ray). ``spread_episodes``: process sampler only (the others run every share's
    work as planned; the batches are the same either way).
    """
    if ray_address and kind != "ray":
        raise ValueError(f"--ray-address {ray_address} needs --sampler ray (got sampler {kind!r}); "
                         "drop --ray-address or pass --sampler ray")
    if kind == "local":
        return LocalSampler(env_id, seed=seed, num_virtual_workers=envs_per_worker)
    if kind == "process":
        from metacpo.samplers.process import ProcessSampler

        return ProcessSampler(env_id, seed=seed, num_workers=num_workers, task_setup=task_setup,
                              envs_per_worker=envs_per_worker, spread_episodes=spread_episodes)
    if envs_per_worker != 1:
        raise ValueError(f"envs_per_worker={envs_per_worker} is not supported by the {kind!r} sampler")
    if kind == "ray":
        from metacpo.samplers.ray import RaySampler

        return RaySampler(env_id, seed=seed, num_workers=num_workers, ray_address=ray_address or None,
                          task_setup=task_setup, connect_timeout=ray_connect_timeout)
    raise ValueError(f"unknown sampler kind {kind!r}; allowed: {list(SAMPLER_KINDS)}")


def __getattr__(name: str):  # ProcessSampler/RaySampler imported lazily (RaySampler imports ray only when built)
    if name == "ProcessSampler":
        from metacpo.samplers.process import ProcessSampler

        return ProcessSampler
    if name == "RaySampler":
        from metacpo.samplers.ray import RaySampler

        return RaySampler
    raise AttributeError(name)
