"""A worker whose own code fails: the call raises that error, and the sampler stays usable."""

import numpy as np
import pytest
import torch

from metacpo.data.normalizer import NormalizerState
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec
from metacpo.samplers import LocalSampler, PolicySnapshot
from metacpo.samplers.process import ProcessSampler
from metacpo.tasks import CircleTask

ENV = "SafetyPointCircle1-v0"  # a plain Safety-Gymnasium env: it has no tasks to switch to


def test_worker_error_is_raised_and_no_stale_reply_is_left():
    torch.manual_seed(0)
    snap = PolicySnapshot.from_policy(GaussianMLPPolicy(PolicySpec(obs_dim=28, act_dim=2, hidden=(8,))),
                                      NormalizerState.identity(28))
    with ProcessSampler(ENV, seed=2, num_workers=2) as proc:
        # task 0 cannot be set on worker 0 (read first); task 1 (the env's own) on worker 1 succeeds
        with pytest.raises(ValueError, match="does not support tasks"):
            proc.sample(snapshot=snap, num_steps=50, tasks=[CircleTask(radius=1.2, wall_distance=0.8), None])
        state = proc.state_dict()
        (got,) = proc.sample(snapshot=snap, num_steps=60)  # worker 1's earlier reply was consumed
    with LocalSampler(ENV, seed=2, num_virtual_workers=2) as loc:
        loc.load_state_dict(state)
        (expected,) = loc.sample(snapshot=snap, num_steps=60)
    np.testing.assert_array_equal(got.obs, expected.obs)
    np.testing.assert_array_equal(got.actions, expected.actions)
