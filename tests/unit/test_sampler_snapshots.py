"""One sample call with a policy per task (meta-learning's post-update rounds), and the numpy actor."""

import numpy as np
import pytest
import torch

from metacpo.data.normalizer import NormalizerState
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec
from metacpo.samplers import LocalSampler, PolicySnapshot
from metacpo.samplers.base import NumpyActor, per_task_snapshots
from metacpo.samplers.process import ProcessSampler
from metacpo.tasks import CircleTask

ENV = "SafetyPointStcircle1-v0"
TASKS = [CircleTask(radius=1.1, wall_distance=0.7), CircleTask(radius=1.4, wall_distance=0.9)]


def _policy(seed, log_std, activation="tanh"):
    torch.manual_seed(seed)
    p = GaussianMLPPolicy(PolicySpec(obs_dim=28, act_dim=2, hidden=(16, 8), activation=activation,
                                     log_std_init=log_std))
    with torch.no_grad():  # a non-trivial mean network
        for m in p.mu:
            if isinstance(m, torch.nn.Linear):
                m.weight.normal_(0.0, 0.5)
    return p


NORM = NormalizerState(mean=np.full(28, 0.05), var=np.full(28, 1.5), clip=5.0)


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
def test_numpy_actor_matches_the_torch_policy(activation):
    policy = _policy(1, -0.3, activation)
    actor = NumpyActor(policy)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(50, 28))
    mean_t = policy.distribution(torch.as_tensor(obs, dtype=torch.float32)).mean.detach().numpy()
    np.testing.assert_allclose(np.stack([actor.mean(o) for o in obs]), mean_t, rtol=1e-5, atol=1e-6)
    for o in obs[:10]:
        a, lp = actor.act(o, rng.standard_normal(2))
        lp_t = policy.log_prob(torch.as_tensor(o[None], dtype=torch.float32),
                               torch.as_tensor(a[None], dtype=torch.float32)).item()
        assert lp == pytest.approx(lp_t, abs=1e-4)
        a_det, lp_det = actor.act(o, None)
        np.testing.assert_allclose(a_det, actor.mean(o), rtol=0, atol=0)
        assert lp_det == pytest.approx(float(torch.distributions.Normal(0.0, np.exp(-0.3)).log_prob(torch.tensor(0.0))) * 2, abs=1e-5)


def test_per_task_snapshots_in_one_call_use_each_tasks_policy():
    pa, pb = _policy(2, -1.0), _policy(3, 0.3)
    snaps = [PolicySnapshot.from_policy(pa, NORM), PolicySnapshot.from_policy(pb, NORM)]
    with LocalSampler(ENV, seed=4, num_virtual_workers=2) as s:
        a, b = s.sample(snapshot=snaps, num_steps=200, tasks=TASKS)
    assert a.task == TASKS[0] and b.task == TASKS[1]
    assert a.info["workers"] == [0] and b.info["workers"] == [1]  # both tasks in one round
    for batch, policy in ((a, pa), (b, pb)):
        obs = torch.as_tensor(NORM.normalize(batch.obs), dtype=torch.float32)
        lp = policy.log_prob(obs, torch.as_tensor(batch.actions, dtype=torch.float32)).detach().double().numpy()
        np.testing.assert_allclose(lp, batch.log_probs, atol=1e-4)
    # action noise scale follows each task's own policy
    assert np.std(a.actions - np.stack([NumpyActor(pa).mean(o) for o in NORM.normalize(a.obs)])) < 0.6
    assert np.std(b.actions - np.stack([NumpyActor(pb).mean(o) for o in NORM.normalize(b.obs)])) > 1.0


def test_per_task_snapshots_process_equals_local():
    snaps = [PolicySnapshot.from_policy(_policy(5, -0.5), NORM), PolicySnapshot.from_policy(_policy(6, -0.2), NORM)]
    with LocalSampler(ENV, seed=9, num_virtual_workers=2) as loc:
        expected = loc.sample(snapshot=snaps, num_steps=150, tasks=TASKS)
    with ProcessSampler(ENV, seed=9, num_workers=2) as proc:
        got = proc.sample(snapshot=snaps, num_steps=150, tasks=TASKS)
    for x, y in zip(expected, got, strict=True):
        for k in ("obs", "actions", "rewards", "costs", "log_probs", "truncated"):
            np.testing.assert_array_equal(getattr(x, k), getattr(y, k), err_msg=k)


def test_snapshot_count_must_match_tasks():
    snap = PolicySnapshot.from_policy(_policy(0, -0.5), NORM)
    assert per_task_snapshots(snap, 3) == [snap] * 3
    with pytest.raises(ValueError, match="2 policy snapshots for 3 tasks"):
        per_task_snapshots([snap, snap], 3)
