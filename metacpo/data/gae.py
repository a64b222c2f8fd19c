"""Generalised advantage estimation for reward and cost, and the per-episode cost estimate J_C.

Conventions (shared by every algorithm):

* ``values[t] = V(s_t)`` and ``next_values[t] = V(s_{t+1})`` where ``s_{t+1}`` is ``next_obs[t]``
  (the *final* observation of the episode when step ``t`` ends one).
* TD error ``delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)``: the value of the
  next state is bootstrapped at truncation (time limit, or the cut at the end of a batch) and is
  0 at termination.
* ``A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}`` with ``done = terminated | truncated``:
  the recursion never runs across an episode boundary.
* Critic targets are ``A_t + V(s_t)`` (TD(lambda) returns).
"""

from __future__ import annotations

import numpy as np


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


def gae(
    *,
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """GAE(gamma, lam) advantages and TD(lambda) value targets for one time-ordered batch.

    All inputs have shape ``[N]``. ``rewards`` may be rewards (for ``A_r``) or costs (for
    ``A_c``). Returns ``(advantages, targets)``, both float64 ``[N]``. The last step of the batch
    must be an episode end (``terminated`` or ``truncated``), which every sampler guarantees.
    """
    _check_rate("gamma", gamma)
    _check_rate("lam", lam)
    r = np.asarray(rewards, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    nv = np.asarray(next_values, dtype=np.float64)
    term = np.asarray(terminated, dtype=bool)
    done = np.logical_or(term, np.asarray(truncated, dtype=bool))
    n = len(r)
    if not (len(v) == len(nv) == len(term) == len(done) == n):
        raise ValueError(
            f"gae inputs differ in length: rewards {n}, values {len(v)}, next_values {len(nv)}, "
            f"terminated {len(term)}, truncated {len(done)}"
        )
    if n and not done[-1]:
        raise ValueError("the last step of a batch must end an episode (terminated or truncated)")
    deltas = r + gamma * np.where(term, 0.0, nv) - v
    adv = np.zeros(n, dtype=np.float64)
    running = 0.0
    for t in range(n - 1, -1, -1):
        if done[t]:
            running = 0.0
        running = deltas[t] + gamma * lam * running
        adv[t] = running
    return adv, adv + v


def episode_slices(terminated: np.ndarray, truncated: np.ndarray) -> list[slice]:
    """The episodes (or episode fragments) of a batch as slices, in order."""
    done = np.logical_or(np.asarray(terminated, bool), np.asarray(truncated, bool))
    ends = np.flatnonzero(done)
    out: list[slice] = []
    start = 0
    for e in ends:
        out.append(slice(start, int(e) + 1))
        start = int(e) + 1
    if start < len(done):
        out.append(slice(start, len(done)))
    return out


def discounted_episode_costs(
    *, costs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, cost_gamma: float
) -> np.ndarray:
    """``sum_t cost_gamma^t c_t`` for every episode (or fragment) of the batch, in order.

    With ``cost_gamma = 1`` this is the undiscounted episode cost -- the quantity the cost limit
    ``d`` of a Safety-Gymnasium task is stated in (e.g. 25 per 500-step episode).
    """
    _check_rate("cost_gamma", cost_gamma)
    c = np.asarray(costs, dtype=np.float64)
    out = []
    for sl in episode_slices(terminated, truncated):
        seg = c[sl]
        out.append(float(np.sum(seg * cost_gamma ** np.arange(len(seg)))))
    return np.asarray(out, dtype=np.float64)


def complete_episodes(terminated: np.ndarray, truncated: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """For every episode segment of :func:`episode_slices`, whether it is a complete episode.

    A segment is complete when it ends by termination or by the env's time limit, i.e. when its
    last step is not ``cut`` (cut off by the end of a worker's share). Fragments can sit
    anywhere in a batch merged from several workers' parts.
    """
    cut = np.asarray(cut, dtype=bool)
    return np.asarray([not cut[sl.stop - 1] for sl in episode_slices(terminated, truncated)], dtype=bool)


class NoCompleteEpisodeError(ValueError):
    """A batch holds no complete episode, so J_C (a per-episode cost) cannot be estimated."""


def cost_estimate(
    *,
    costs: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    cut: np.ndarray,
    cost_gamma: float,
) -> float:
    """J_C: the mean (``cost_gamma``-discounted) cost of the complete episodes of a batch.

    Complete episodes are found by their ends (:func:`complete_episodes`), wherever they sit in
    the batch; fragments (cut off by the end of a worker's share) are never averaged in: their
    cost covers only part of an episode. A batch without a complete episode raises
    :class:`NoCompleteEpisodeError` (samplers size each worker's share in whole episodes, so
    this means fewer steps per task than one episode).
    """
    per_ep = discounted_episode_costs(
        costs=costs, terminated=terminated, truncated=truncated, cost_gamma=cost_gamma
    )
    complete = complete_episodes(terminated, truncated, cut)
    if not complete.any():
        raise NoCompleteEpisodeError(
            f"the batch of {len(np.asarray(costs))} steps holds no complete episode, so the episode cost "
            "J_C cannot be estimated: sample at least one full episode per task (sampler.steps_per_iter "
            ">= the env's episode length)"
        )
    return float(np.mean(per_ep[complete]))
