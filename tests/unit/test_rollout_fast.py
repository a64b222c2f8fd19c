"""The fast rollout loop builds exactly the batches of the step-by-step reference loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metacpo.data.normalizer import NormalizerState
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec
from metacpo.samplers.base import NumpyActor, make_env_for, rollout
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
