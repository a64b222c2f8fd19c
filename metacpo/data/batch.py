"""Typed rollout batches returned by every sampler backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Batch:
    """``N`` environment steps, possibly spanning several episodes, in time order.

    Episode boundaries: step ``t`` ends an episode when ``terminated[t] or truncated[t]``.
    ``truncated`` is set both for time limits and for the cut at the end of a worker's share;
    ``cut[t]`` is True only for the latter: the last step of an episode *fragment* (the episode
    went on, but this batch stops sampling it). A task's batch may be merged from several
    workers' parts, so fragments can sit anywhere in it, not only at the end: an episode is
    complete exactly when its last step is not ``cut``.
    Observations are *raw* (un-normalised); ``log_probs`` were computed by the behaviour policy
    with the normaliser statistics it was given.
    """

    obs: np.ndarray  # [N, obs_dim] float64
    actions: np.ndarray  # [N, act_dim] float64 (the sampled, unclipped actions)
    rewards: np.ndarray  # [N]
    costs: np.ndarray  # [N]
    terminated: np.ndarray  # [N] bool
    truncated: np.ndarray  # [N] bool
    cut: np.ndarray  # [N] bool: last step of a fragment cut off by the end of a worker's share
    next_obs: np.ndarray  # [N, obs_dim]: observation after step t (the final one at episode ends)
    log_probs: np.ndarray  # [N] behaviour log pi(a_t|s_t)
    episode_returns: np.ndarray  # [E] undiscounted returns of the *completed* episodes
    episode_costs: np.ndarray  # [E] undiscounted costs of the completed episodes
    episode_lengths: np.ndarray  # [E]
    task: Any = None  # the task these steps were collected on (None: a plain env)
    info: dict[str, Any] = field(default_factory=dict)  # e.g. worker ids, sampling seconds

    def __post_init__(self) -> None:
        n = len(self.obs)
        for name in ("actions", "rewards", "costs", "terminated", "truncated", "cut", "next_obs", "log_probs"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Batch.{name} has {len(getattr(self, name))} rows; obs has {n}")
        if np.any(np.asarray(self.cut, bool) & ~np.asarray(self.truncated, bool)):
            raise ValueError("Batch.cut marks a step that is not truncated (a cut always truncates)")

    def __len__(self) -> int:
        return len(self.obs)

    @staticmethod
    def concat(batches: list["Batch"]) -> "Batch":
        """Join batches in order (each must end on an episode boundary, which samplers guarantee)."""
        if not batches:
            raise ValueError("cannot concatenate an empty list of batches")
        tasks = {id(b.task) for b in batches}
        return Batch(
            **{
                k: np.concatenate([getattr(b, k) for b in batches])
                for k in (
                    "obs", "actions", "rewards", "costs", "terminated", "truncated", "cut", "next_obs",
                    "log_probs", "episode_returns", "episode_costs", "episode_lengths",
                )
            },
            task=batches[0].task if len(tasks) == 1 else None,
            info={"parts": [b.info for b in batches]},
        )
