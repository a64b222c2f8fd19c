"""The rollout loop as it was before the per-step overhead was cut (issue 15), kept verbatim as
the reference the fast :func:`metacpo.samplers.base.rollout` must match bit for bit
(tests/unit/test_rollout_fast.py; bench/sampling.py times both)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from metacpo.data.batch import Batch
from metacpo.data.normalizer import NormalizerState
from metacpo.models.policy import GaussianMLPPolicy
from metacpo.samplers.base import NumpyActor, Task


def reference_rollout(
    env: Any,
    policy: GaussianMLPPolicy,
    obs_norm: NormalizerState,
    num_steps: int,
    rng: np.random.Generator,
    *,
    deterministic: bool = False,
    task: Task = None,
    max_episodes: int | None = None,
) -> Batch:
    """Run ``policy`` for ``num_steps`` steps (or ``max_episodes`` episodes) from fresh episodes.

    Every episode is reset with its own seed drawn from ``rng``. Actions are sampled from the
    policy (or its mean when ``deterministic``), stored unclipped and clipped to the action box
    for the env. The batch always ends on an episode boundary: if ``num_steps`` runs out
    mid-episode the last step is marked ``truncated`` (its next state is bootstrapped) and ``cut``,
    and ``info['cut']`` is True. Only episodes that ended by termination or the env's time limit count
    in ``episode_returns/costs/lengths``.
    """
    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    t0 = time.perf_counter()
    actor = NumpyActor(policy)
    noise_rng = np.random.default_rng(int(rng.integers(2**62)))
    low, high = env.action_space.low, env.action_space.high
    obs_l, act_l, rew_l, cost_l, term_l, trunc_l, next_l, lp_l = ([] for _ in range(8))
    cut_l: list[bool] = []
    ep_ret, ep_cost, ep_len = [], [], []
    seeds: list[int] = []
    steps = 0
    cut = False
    while True:
        seed = int(rng.integers(2**31 - 1))
        seeds.append(seed)
        obs, _ = env.reset(seed=seed)
        ret = cst = 0.0
        length = 0
        while True:
            noise = None if deterministic else noise_rng.standard_normal(actor.act_dim)
            action, lp = actor.act(obs_norm.normalize(obs), noise)
            nxt, r, c, term, trunc, _ = env.step(np.clip(action, low, high))
            steps += 1
            length += 1
            ret += float(r)
            cst += float(c)
            last = max_episodes is None and steps >= num_steps
            obs_l.append(np.asarray(obs, dtype=np.float64))
            act_l.append(action)
            rew_l.append(float(r))
            cost_l.append(float(c))
            term_l.append(bool(term))
            trunc_l.append(bool(trunc) or (last and not term))
            cut_l.append(bool(last and not (term or trunc)))
            next_l.append(np.asarray(nxt, dtype=np.float64))
            lp_l.append(lp)
            obs = nxt
            if term or trunc:
                ep_ret.append(ret)
                ep_cost.append(cst)
                ep_len.append(length)
                break
            if last:
                cut = True
                break
        if max_episodes is not None and len(ep_ret) >= max_episodes:
            break
        if max_episodes is None and steps >= num_steps:
            break
    return Batch(
        obs=np.stack(obs_l),
        actions=np.stack(act_l),
        rewards=np.asarray(rew_l),
        costs=np.asarray(cost_l),
        terminated=np.asarray(term_l),
        truncated=np.asarray(trunc_l),
        cut=np.asarray(cut_l, dtype=bool),
        next_obs=np.stack(next_l),
        log_probs=np.asarray(lp_l),
        episode_returns=np.asarray(ep_ret, dtype=np.float64),
        episode_costs=np.asarray(ep_cost, dtype=np.float64),
        episode_lengths=np.asarray(ep_len, dtype=np.int64),
        task=task,
        info={"cut": cut, "episode_seeds": seeds, "sample_seconds": time.perf_counter() - t0},
    )


