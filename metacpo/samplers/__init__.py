"""Samplers: one interface (:class:`Sampler`), local and multiprocess backends."""

from metacpo.samplers.base import (
    Job,
    PolicySnapshot,
    Sampler,
    Task,
    env_dims,
    make_env_for,
    merge_parts,
    plan_jobs,
    rollout,
    set_task,
    worker_rng,
)
from metacpo.samplers.local import LocalSampler

__all__ = [
    "Job",
    "LocalSampler",
    "PolicySnapshot",
    "Sampler",
    "Task",
    "env_dims",
    "make_env_for",
    "merge_parts",
    "plan_jobs",
    "rollout",
    "set_task",
    "worker_rng",
]


def __getattr__(name: str):  # ProcessSampler imported lazily (multiprocessing set-up)
    if name == "ProcessSampler":
        from metacpo.samplers.process import ProcessSampler

        return ProcessSampler
    raise AttributeError(name)
