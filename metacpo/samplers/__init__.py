"""Samplers: one interface (:class:`Sampler`), local, multiprocess and Ray backends (:func:`make_sampler`)."""

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
    "make_sampler",
    "worker_rng",
]

SAMPLER_KINDS = ("local", "process", "ray")


def make_sampler(
    kind: str, env_id: str, *, seed: int, num_workers: int | None = None, ray_address: str | None = None
) -> Sampler:
    """The ``kind`` backend (local, process or ray) for ``env_id``.

    ``num_workers=None``: one worker per CPU core (process) or per CPU of the Ray cluster (ray);
    the local sampler always runs one worker. ``ray_address`` (ray only): None starts Ray on
    this machine, ``"auto"``/an address joins an existing cluster.
    """
    if kind == "local":
        return LocalSampler(env_id, seed=seed)
    if kind == "process":
        from metacpo.samplers.process import ProcessSampler

        return ProcessSampler(env_id, seed=seed, num_workers=num_workers)
    if kind == "ray":
        from metacpo.samplers.ray import RaySampler

        return RaySampler(env_id, seed=seed, num_workers=num_workers, ray_address=ray_address or None)
    raise ValueError(f"unknown sampler kind {kind!r}; allowed: {list(SAMPLER_KINDS)}")


def __getattr__(name: str):  # ProcessSampler/RaySampler imported lazily (RaySampler imports ray only when built)
    if name == "ProcessSampler":
        from metacpo.samplers.process import ProcessSampler

        return ProcessSampler
    if name == "RaySampler":
        from metacpo.samplers.ray import RaySampler

        return RaySampler
    raise AttributeError(name)
