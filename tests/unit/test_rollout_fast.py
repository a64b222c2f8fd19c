"""The fast rollout loop builds exactly the batches of the step-by-step reference loop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from metacpo.data.normalizer import NormalizerState
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec
from metacpo.samplers.base import NumpyActor, StackedActors, make_env_for, rollout, row_dots
from tests.reference_rollout import reference_rollout


def _policy(env, seed: int, dtype=torch.float32) -> GaussianMLPPolicy:
    torch.manual_seed(seed)
    spec = PolicySpec(obs_dim=env.observation_space.shape[0], act_dim=env.action_space.shape[0], hidden=(24, 12))
    return GaussianMLPPolicy(spec).to(dtype)


def _norm(dim: int, seed: int) -> NormalizerState:
    rng = np.random.default_rng(seed)
    # small variances: many normalised coordinates hit the clip, so the clipping is exercised
    return NormalizerState(mean=rng.normal(size=dim), var=rng.uniform(1e-3, 2.0, size=dim), clip=3.0)


def _both(env_id, *, seed, num_steps, deterministic=False, max_episodes=None, dtype=torch.float32):
    out = []
    for fn in (rollout, reference_rollout):
        env = make_env_for(env_id, seed=seed)
        pol = _policy(env, seed, dtype)
        norm = _norm(env.observation_space.shape[0], seed)
        out.append(fn(env, pol, norm, num_steps, np.random.default_rng([seed, 7]), deterministic=deterministic,
                      max_episodes=max_episodes))
        env.close()
    return out


@pytest.mark.parametrize("env_id,seed,num_steps", [
    ("SafetyPointStcircle1-v0", 0, 1300),      # two full episodes and a cut third
    ("SafetyCarStcircle2-v0", 1, 1000),        # whole episodes only
    ("SafetyPointStbutton1-v0", 2, 1500),
    ("SafetyPointCircle1-v0", 3, 700),         # a standard id (fast path)
])
def test_fast_rollout_bit_identical(same_batch, env_id, seed, num_steps):
    new, ref = _both(env_id, seed=seed, num_steps=num_steps)
    same_batch(new, ref)
    np.testing.assert_array_equal(new.cut, ref.cut)
    assert new.info["cut"] == ref.info["cut"]
    assert len(new) == num_steps


def test_fast_rollout_deterministic_and_episode_mode(same_batch):
    new, ref = _both("SafetyPointStcircle1-v0", seed=4, num_steps=10**6, deterministic=True, max_episodes=3)
    same_batch(new, ref)
    np.testing.assert_array_equal(new.cut, ref.cut)
    assert len(new.episode_lengths) == 3 and len(new) == 1500  # grows past its first 1024 rows
    new, ref = _both("SafetyPointStcircle1-v0", seed=5, num_steps=10**6, max_episodes=2, dtype=torch.float64)
    same_batch(new, ref)


def test_stepper_equals_normalize_then_act():
    env = make_env_for("SafetyPointStcircle1-v0", seed=0)
    actor = NumpyActor(_policy(env, 0))
    norm = _norm(env.observation_space.shape[0], 0)
    step = actor.stepper(norm)
    rng = np.random.default_rng(0)
    for _ in range(50):
        obs = rng.normal(scale=3.0, size=env.observation_space.shape[0])
        noise = rng.standard_normal(actor.act_dim)
        a1, lp1 = step(obs, noise)
        a2, lp2 = actor.act(norm.normalize(obs), noise)
        np.testing.assert_array_equal(a1, a2)
        assert lp1 == lp2
    env.close()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dim", [1, 2, 3, 8])
def test_row_dots_equal_np_dot_per_row(dtype, dim):
    """The log-prob's square norms of a noise block, in one call, are np.dot's per row."""
    x = np.random.default_rng(dim).standard_normal((3000, dim)).astype(dtype)
    assert row_dots(x) == [float(np.dot(r, r)) for r in x]


def test_stacked_actors_rows_equal_single_steppers():
    """One stacked pass over rows with different weights, normalisers, noise or none: each row is
    the row's own stepper bit for bit."""
    env = make_env_for("SafetyPointStcircle1-v0", seed=0)
    dim = env.observation_space.shape[0]
    rows = [(NumpyActor(_policy(env, k)), _norm(dim, k)) for k in range(4)]
    rows.append(rows[0])  # a pair shared by two rows
    rows.append((rows[1][0], dataclasses.replace(rows[1][1], clip=0.5)))  # another clip range
    stacked = StackedActors(rows)
    rng = np.random.default_rng(1)
    for trial in range(200):
        obs = rng.normal(scale=3.0, size=(len(rows), dim))
        noise = [rng.standard_normal(2) for _ in rows]
        if trial % 2:
            noise[1] = None  # a deterministic row among sampled ones
        for (actor, norm), (a, lp), o, e in zip(rows, stacked(obs, noise), obs, noise, strict=True):
            a1, lp1 = actor.stepper(norm)(o, e)
            np.testing.assert_array_equal(a, a1)
            assert lp == lp1
    with pytest.raises(ValueError, match="one architecture"):
        StackedActors([rows[0], (NumpyActor(_policy(env, 0, torch.float64)), rows[0][1])])
    env.close()


def test_lockstep_jobs_equal_jobs_run_one_by_one(same_batch):
    """run_jobs_lockstep == run_jobs share by share: several jobs per share (a task switch, a cut
    job, jobs of unequal length so shares finish at different steps), per-task snapshots with
    different weights and normalisers, one deterministic."""
    from metacpo.samplers.base import Job, PolicySnapshot, run_jobs, run_jobs_lockstep
    from metacpo.tasks import get_distribution

    env_id = "SafetyPointStcircle1-v0"
    tasks = get_distribution(env_id).sample_n(np.random.default_rng(0), 3)
    probe = make_env_for(env_id, seed=0)
    dim = probe.observation_space.shape[0]
    snaps = [PolicySnapshot.from_policy(_policy(probe, k), _norm(dim, k), deterministic=(k == 2)) for k in range(3)]
    probe.close()
    work = [(Job(task_index=0, part=0, num_steps=1000, worker=0), tasks[0]),
            (Job(task_index=1, part=0, num_steps=730, worker=0), tasks[1]),   # cut mid-episode
            (Job(task_index=1, part=1, num_steps=500, worker=1), tasks[1]),
            (Job(task_index=2, part=0, num_steps=1500, worker=1), tasks[2]),
            (Job(task_index=0, part=1, num_steps=500, worker=2), tasks[0])]
    shares = [0, 1, 2]
    envs = {v: make_env_for(env_id, seed=1) for v in shares}
    rngs = {v: np.random.default_rng([9, v]) for v in shares}
    _, got = run_jobs_lockstep(envs, None, snaps, work, rngs)
    expected = []
    for v in shares:
        env = make_env_for(env_id, seed=1)
        _, out = run_jobs(env, None, snaps, [w for w in work if w[0].worker == v], np.random.default_rng([9, v]),
                          worker=v)
        expected.extend(out)
        env.close()
    assert [j for j, _ in got] == [j for j, _ in expected]
    for (_, b), (_, e) in zip(got, expected, strict=True):
        same_batch(b, e)
        np.testing.assert_array_equal(b.cut, e.cut)
        assert b.info["worker"] == e.info["worker"] and b.task == e.task
    assert got[1][1].info["cut"] and len(got[1][1]) == 730
    assert {v: r.bit_generator.state for v, r in rngs.items()} == {
        v: _advanced(v, work) for v in shares}
    for env in envs.values():
        env.close()


def _advanced(v, work):
    """Share v's generator state after its jobs, replayed without envs: one noise seed per job and
    one reset seed per episode, as the rollout draws them."""
    import math

    rng = np.random.default_rng([9, v])
    for job, _ in work:
        if job.worker != v:
            continue
        rng.integers(2**62)
        for _ in range(math.ceil(job.num_steps / 500)):
            rng.integers(2**31 - 1)
    return rng.bit_generator.state
